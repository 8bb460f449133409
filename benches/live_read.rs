//! Reading live state: `reconcile status --format json` against `pm2 jlist` on the
//! same private daemon with 100 processes; and the two ways to start one app
//! (PM2's own resolution + `prepare` over the socket, or `pm2 start --only`).
//!
//! `cargo bench --bench live_read` (needs `npm ci` first). Set `RUNS` to change the
//! number of timed runs (default 20). The daemon and its apps are killed at the end,
//! also on panic.

#[path = "../tests/cli/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use reconcile::live::rpc::{Call, RpcConnection};
use reconcile::live::model::{RawList, normalize_raw};
use reconcile::live::{Pm2Client, Resolver, runtime};
use serde_json::json;
use support::Pm2Home;

const APPS: usize = 100;

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(samples[0]), ms(samples[samples.len() - 1]))
}

fn time(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    f(); // warm-up (page cache, pidusage's first getconf)
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let home = Pm2Home::start();
    let apps: Vec<_> = (0..APPS)
        .map(|i| {
            json!({"name": format!("bench-{i:03}"), "script": "/bin/sleep", "args": "3600",
                "interpreter": "none", "exec_mode": "fork", "namespace": "bench", "cwd": home.path(),
                "min_uptime": 5000, "max_restarts": 5, "restart_delay": 2000, "kill_timeout": 3000})
        })
        .collect();
    home.start_ecosystem("eco.json", &json!({ "apps": apps }));
    home.wait_for(
        || home.jlist().as_array().is_some_and(|l| l.len() == APPS && l.iter().all(|p| p["pm2_env"]["status"] == "online")),
        "100 apps online",
    );
    if let Some(secs) = std::env::var("SETTLE").ok().and_then(|s| s.parse().ok()) {
        std::thread::sleep(Duration::from_secs(secs));
    }

    // Planning the same 100 apps (JSON ecosystem, so no node start-up) against this daemon.
    let project = home.project(&["bench"], 10_000);
    std::fs::write(project.join("eco.json"), serde_json::to_vec(&json!({ "apps": apps })).expect("json")).expect("eco.json");
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).expect("reconcile.toml");
    let toml = toml.replacen("[project]\n", "[project]\necosystem = [\"eco.json\"]\n", 1);
    std::fs::write(project.join("reconcile.toml"), format!("{toml}\n[policies.rules.log-files]\nseverity = \"off\"\n")).expect("toml");

    // Each command is timed with plain `output()` (no polling), the same way. The runs
    // are interleaved (status, jlist, plan, status, ...) so that a host that gets
    // busier or quieter during the bench (a 2-core machine shared with builds) weighs
    // on the three alike, instead of on whichever ran first.
    let status_run = || {
        let out = home.reconcile().args(["status", "--format", "json"]).output().expect("reconcile");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.len() > 10_000);
    };
    let jlist_run = || {
        let out = home.pm2_command(&["jlist"]).output().expect("pm2 jlist");
        assert!(out.status.success() && out.stdout.len() > 10_000);
    };
    let plan_run = || {
        let out = home.reconcile().args(["plan", "--format", "json"]).output().expect("reconcile plan");
        assert_eq!(out.status.code(), Some(0), "plan must be empty: {}", String::from_utf8_lossy(&out.stderr));
    };
    let timed = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    status_run(); // warm-up (page cache, pidusage's first getconf)
    jlist_run();
    plan_run();
    let (mut reconcile, mut jlist, mut plan) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        reconcile.push(timed(&status_run));
        jlist.push(timed(&jlist_run));
        plan.push(timed(&plan_run));
    }
    let list_bytes = home.pm2_ok(&["jlist"]).stdout.len();
    let (r_med, r_min, r_max) = stats(reconcile);
    let (j_med, j_min, j_max) = stats(jlist);
    let (p_med, p_min, p_max) = stats(plan);
    println!("reading {APPS} processes ({} KB of jlist), {runs} runs each, interleaved (median, min..max):", list_bytes / 1024);
    println!("  reconcile status --format json  {r_med:7.1} ms  ({r_min:.1}..{r_max:.1})");
    println!("  pm2 jlist                       {j_med:7.1} ms  ({j_min:.1}..{j_max:.1})");
    println!("  ratio (pm2 jlist / reconcile)   {:7.1}x", j_med / r_med);
    println!("planning {APPS} desired apps against the same daemon:");
    println!("  reconcile plan                  {p_med:7.1} ms  ({p_min:.1}..{p_max:.1})");
    println!("  ratio (pm2 jlist / plan)        {:7.1}x", j_med / p_med);

    // The floor: the daemon's own getMonitorData (pidusage + JSON.stringify + the
    // transfer), replies received but not parsed; then our parse of the list alone.
    let rt = runtime().expect("runtime");
    let (rpc, parse) = rt.block_on(async {
        let mut conn = RpcConnection::connect(&home.live_home(), Duration::from_secs(10)).await.expect("connect");
        let (mut rpc, mut parse) = (Vec::new(), Vec::new());
        for _ in 0..=runs {
            let start = Instant::now();
            let mut replies = conn.pipeline(&[Call::get_monitor_data()], Duration::from_secs(10)).await.expect("getMonitorData");
            rpc.push(start.elapsed());
            let start = Instant::now();
            let list = replies.pop().expect("a reply").first_arg::<RawList>().expect("a list").expect("non-empty");
            assert_eq!(normalize_raw(list, None).expect("normalized").len(), APPS);
            parse.push(start.elapsed());
        }
        rpc.remove(0);
        parse.remove(0);
        (rpc, parse)
    });
    let (d_med, d_min, d_max) = stats(rpc);
    let (n_med, n_min, n_max) = stats(parse);
    println!("  of which getMonitorData alone   {d_med:7.1} ms  ({d_min:.1}..{d_max:.1})  (daemon time and transfer)");
    println!("  and reading its list (in-process, warm) {n_med:.1} ms  ({n_min:.1}..{n_max:.1})");

    // Starting one app: resolver + prepare, against `pm2 start FILE --only NAME`.
    let start_runs = runs.clamp(3, 10);
    let resolver = Resolver::with_pm2_dir(support::pm2_package(), Duration::from_secs(10)).expect("pm2 package");
    let owned = vec!["bench".to_string()];
    let mut n = 0;
    let via_prepare = time(start_runs, || {
        n += 1;
        let name = format!("prep-{n}");
        rt.block_on(async {
            let mut c = Pm2Client::connect(&home.live_home(), Duration::from_secs(10)).await.expect("connect");
            let spec = json!({"name": name, "script": "/bin/sleep", "args": "3600", "interpreter": "none",
                "exec_mode": "fork", "namespace": "bench"});
            let app = resolver.resolve(&spec, home.path(), None, &home.live_home()).await.expect("resolve");
            c.start(&app, &owned).await.expect("start");
        });
    });
    let mut m = 0;
    let via_cli = time(start_runs, || {
        m += 1;
        let name = format!("cli-{m}");
        let file = home.path().join(format!("one-{m}.json"));
        let eco = json!({"apps": [{"name": name, "script": "/bin/sleep", "args": "3600", "interpreter": "none",
            "exec_mode": "fork", "namespace": "bench"}]});
        std::fs::write(&file, eco.to_string()).expect("write");
        let out = home.pm2_command(&["start", file.to_str().expect("utf-8"), "--only", &name]).output().expect("pm2");
        assert!(out.status.success());
    });
    let (p_med, p_min, p_max) = stats(via_prepare);
    let (c_med, c_min, c_max) = stats(via_cli);
    println!("starting one app beside {APPS}, {start_runs} runs each (median, min..max):");
    println!("  resolve (node + PM2's Common.js) + prepare   {p_med:7.1} ms  ({p_min:.1}..{p_max:.1})");
    println!("  pm2 start FILE --only NAME                   {c_med:7.1} ms  ({c_min:.1}..{c_max:.1})");
}
