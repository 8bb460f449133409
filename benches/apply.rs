//! Applying one change among 100 apps: `reconcile apply` against
//! `pm2 startOrReload ecosystem --update-env`, on the same private daemon. Counts
//! the processes each restarted (pid changed) and the wall time. Also times the
//! first apply of the 100 new apps (all health-gated at once: about one
//! `min_uptime`, not a hundred).
//!
//! `cargo bench --bench apply` (needs `npm ci` first). `APPS` changes the count.

#[path = "../tests/cli/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};
use support::Pm2Home;

const MIN_UPTIME_MS: u64 = 1000;

fn apps(n: usize, changed: Option<(usize, &str)>) -> Value {
    let list: Vec<Value> = (0..n)
        .map(|i| {
            let version = match changed {
                Some((at, v)) if at == i => v,
                _ => "1",
            };
            json!({"name": format!("app-{i:03}"), "namespace": "bench", "script": "/bin/sleep", "args": "3600",
                "interpreter": "none", "exec_mode": "fork", "min_uptime": MIN_UPTIME_MS, "max_restarts": 5,
                "restart_delay": 2000, "kill_timeout": 1600, "env": {"VERSION": version}})
        })
        .collect();
    json!({ "apps": list })
}

/// name → pid of every process in `bench`.
fn pids(home: &Pm2Home) -> BTreeMap<String, Value> {
    home.jlist()
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pm2_env"]["namespace"] == "bench")
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["pid"].clone()))
        .collect()
}

fn restarted(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> usize {
    before.iter().filter(|(name, pid)| after.get(*name) != Some(*pid)).count()
}

fn main() {
    let n: usize = std::env::var("APPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let home = Pm2Home::start();
    let project = home.project(&["bench"], 30_000);
    let eco = project.join("eco.json");
    let write = |v: &Value| std::fs::write(&eco, serde_json::to_vec_pretty(v).expect("json")).expect("eco.json");
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).expect("reconcile.toml");
    let toml = toml.replacen("[project]\n", "[project]\necosystem = [\"eco.json\"]\n", 1);
    std::fs::write(
        project.join("reconcile.toml"),
        format!("{toml}\n[safety]\nmax_changed_fraction = 1.0\n\n[policies.rules.min-uptime]\nmin = {MIN_UPTIME_MS}\n\n[policies.rules.log-files]\nseverity = \"off\"\n"),
    )
    .expect("reconcile.toml");
    let apply = || {
        let start = Instant::now();
        let out = home.reconcile().args(["apply", "--auto-approve"]).output().expect("reconcile apply");
        assert!(out.status.success(), "apply failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        start.elapsed()
    };

    write(&apps(n, None));
    let create = apply();
    assert_eq!(pids(&home).len(), n);

    // One env change: reconcile.
    write(&apps(n, Some((n / 2, "2"))));
    let before = pids(&home);
    let ours = apply();
    let ours_restarted = restarted(&before, &pids(&home));

    // The same kind of change: PM2's own way, on the same daemon and file.
    write(&apps(n, Some((n / 2, "3"))));
    let before = pids(&home);
    let start = Instant::now();
    home.pm2_ok(&["startOrReload", eco.to_str().expect("utf-8"), "--update-env"]);
    let theirs = start.elapsed();
    home.wait_for(|| home.jlist().as_array().is_some_and(|l| l.iter().all(|p| p["pm2_env"]["status"] == "online")), "all online");
    let theirs_restarted = restarted(&before, &pids(&home));

    println!("apply: {n} apps (fork, min_uptime {MIN_UPTIME_MS} ms), PM2 7.0.4");
    println!("  first apply, {n} new apps, health-gated together   {:8.0} ms", create.as_secs_f64() * 1000.0);
    println!("  one env changed: reconcile apply                  {:8.0} ms, {ours_restarted} process(es) restarted", ours.as_secs_f64() * 1000.0);
    println!("  one env changed: pm2 startOrReload --update-env   {:8.0} ms, {theirs_restarted} process(es) restarted", theirs.as_secs_f64() * 1000.0);
    println!("  (reconcile's time includes its health gate: the changed app must stay online {MIN_UPTIME_MS} ms; pm2 waits for nothing)");
}
