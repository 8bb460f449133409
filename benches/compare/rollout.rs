//! Deploys (issue 13), side by side with the pm2 CLI on the same daemon:
//!
//! - rolling out new code to one app among N: a monorepo in git, one directory per
//!   app (`[revision.apps.<name>] paths`), one commit changing one app's code;
//!   `reconcile apply` (wall time, processes restarted) vs `pm2 startOrReload FILE`
//!   (what incident 000's deploy job ran: it restarts every app it names);
//! - failed requests during a cluster rollout: a graceful HTTP server in cluster mode
//!   under steady load on loopback, rolled out by `reconcile apply` (new code) vs
//!   `pm2 reload NAME` and `pm2 startOrReload FILE`.
//!
//! Environment: `BENCH_ROLLOUT_N` (comma list, default `10,100`; `0` skips),
//! `BENCH_ROLLOUT_RUNS` (rollouts of each tool, default 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{self, Pm2Home};
use super::{LONG, MIN_UPTIME_MS, Runner, SHORT, Stats, env_or, ratio, write_json};

const OWNED: &str = "deploy";

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A project in a fresh git repository owning `deploy`, beside a foreign app.
struct Repo {
    home: Pm2Home,
    project: PathBuf,
}

impl Repo {
    fn new(extra_toml: &str) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("foreign", "other");
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        let toml = format!(
            "[project]\nname = \"bench\"\necosystem = [\"eco.json\"]\nnamespaces = [\"{OWNED}\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 30000\n\n\
             [policies.rules.min-uptime]\nmin = {MIN_UPTIME_MS}\n\n[policies.rules.log-files]\nseverity = \"off\"\n\n{extra_toml}",
            home.path().display().to_string()
        );
        std::fs::write(project.join("reconcile.toml"), toml).expect("reconcile.toml");
        git(&project, &["init", "-q"]);
        Self { home, project }
    }

    fn commit(&self, message: &str) {
        git(&self.project, &["add", "-A"]);
        git(&self.project, &["commit", "-qm", message]);
    }

    fn apply(&self, runner: &Runner) -> f64 {
        let mut cmd = self.home.reconcile();
        cmd.args(["apply", "--auto-approve"]);
        runner.expect(cmd, 0, LONG).1
    }

    fn pids(&self, runner: &Runner) -> BTreeMap<String, i64> {
        let (out, _) = runner.expect(self.home.pm2_command(&["jlist"]), 0, SHORT);
        let list: Value = serde_json::from_slice(&out.stdout).expect("jlist");
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["pm2_env"]["namespace"] == OWNED)
            .map(|p| (format!("{}#{}", p["name"].as_str().unwrap_or_default(), p["pm_id"]), p["pid"].as_i64().unwrap_or(0)))
            .collect()
    }
}

fn restarted(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> usize {
    before.iter().filter(|(k, pid)| after.get(*k) != Some(*pid)).count()
}

/// One code rollout among N, `runs` times per tool.
struct OneAmongN {
    n: usize,
    apply: Stats,
    apply_restarted: Vec<usize>,
    reload: Stats,
    reload_restarted: Vec<usize>,
}

fn one_among_n(runner: &Runner, n: usize, runs: usize) -> (OneAmongN, PathBuf) {
    let names: Vec<String> = (0..n).map(|i| format!("app-{i:03}")).collect();
    let narrow: String = names.iter().map(|a| format!("[revision.apps.{a}]\npaths = [\"apps/{a}\"]\n")).collect();
    let repo = Repo::new(&format!("[safety]\nmax_changed_fraction = 1.0\n\n{narrow}"));
    let apps: Vec<Value> = names
        .iter()
        .map(|a| {
            let dir = repo.project.join("apps").join(a);
            std::fs::create_dir_all(&dir).expect("app dir");
            std::fs::write(dir.join("code.txt"), "v0\n").expect("code");
            json!({"name": a, "namespace": OWNED, "script": "/bin/sleep", "args": "3600", "interpreter": "none",
                "exec_mode": "fork", "cwd": dir, "min_uptime": MIN_UPTIME_MS, "max_restarts": 5, "restart_delay": 2000,
                "kill_timeout": 1600})
        })
        .collect();
    let eco = repo.project.join("eco.json");
    write_json(&eco, &json!({ "apps": apps }));
    repo.commit("v0");
    repo.apply(runner);
    let (mut apply, mut apply_restarted, mut reload, mut reload_restarted) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        // reconcile: one app's code changes in a commit; apply rolls out that app.
        std::fs::write(repo.project.join("apps/app-000/code.txt"), format!("v{run}\n")).expect("code");
        repo.commit(&format!("app-000 v{run}"));
        let before = repo.pids(runner);
        apply.push(repo.apply(runner));
        apply_restarted.push(restarted(&before, &repo.pids(runner)));
        // pm2: the deploy job's startOrReload of the same file.
        let before = repo.pids(runner);
        let mut cmd = repo.home.pm2_command(&["startOrReload", eco.to_str().expect("utf-8")]);
        cmd.current_dir(&repo.project);
        reload.push(runner.expect(cmd, 0, LONG).1);
        reload_restarted.push(restarted(&before, &repo.pids(runner)));
        // Back to what reconcile started (startOrReload left its own stamps alone), so
        // the next round starts from the same state.
        repo.apply(runner);
    }
    (OneAmongN { n, apply: Stats::of(apply), apply_restarted, reload: Stats::of(reload), reload_restarted }, repo.home.path().to_path_buf())
}

const SERVER: &str = "const http = require('http');\n\
const server = http.createServer((req, res) => { res.setHeader('Connection', 'close'); res.end(require('./version.json').v); });\n\
server.listen(process.env.PORT);\n\
const stop = () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1500).unref(); };\n\
process.on('SIGINT', stop);\n\
process.on('message', (m) => { if (m === 'shutdown') stop(); });\n";

/// Failed requests (failed, total) during each tool's cluster rollouts.
struct UnderLoad {
    instances: u64,
    reconcile: Vec<(usize, usize)>,
    pm2_reload: Vec<(usize, usize)>,
    start_or_reload: Vec<(usize, usize)>,
}

fn under_load(runner: &Runner, runs: usize) -> (UnderLoad, PathBuf) {
    let instances = 2;
    let repo = Repo::new("");
    let port = support::free_port();
    std::fs::write(repo.project.join("server.js"), SERVER).expect("server.js");
    std::fs::write(repo.project.join("version.json"), "{\"v\": \"0\"}\n").expect("version");
    let app = json!({"name": "web", "namespace": OWNED, "script": "server.js", "exec_mode": "cluster", "instances": instances,
        "min_uptime": MIN_UPTIME_MS.max(1000), "max_restarts": 5, "restart_delay": 2000, "kill_timeout": 1600,
        "env": {"PORT": port.to_string()}});
    let eco = repo.project.join("eco.json");
    write_json(&eco, &json!({ "apps": [app] }));
    repo.commit("v0");
    repo.apply(runner);
    let start = Instant::now();
    while support::get(port).is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut result = UnderLoad { instances, reconcile: Vec::new(), pm2_reload: Vec::new(), start_or_reload: Vec::new() };
    for run in 1..=runs {
        std::fs::write(repo.project.join("version.json"), format!("{{\"v\": \"{run}\"}}\n")).expect("version");
        repo.commit(&format!("v{run}"));
        let (ok, failed, _) = support::under_load(port, || repo.apply(runner));
        result.reconcile.push((failed, ok + failed));
        let (ok, failed, _) = support::under_load(port, || runner.expect(repo.home.pm2_command(&["reload", "web"]), 0, LONG));
        result.pm2_reload.push((failed, ok + failed));
        let mut cmd = repo.home.pm2_command(&["startOrReload", eco.to_str().expect("utf-8")]);
        cmd.current_dir(&repo.project);
        let (ok, failed, _) = support::under_load(port, || runner.expect(cmd, 0, LONG));
        result.start_or_reload.push((failed, ok + failed));
    }
    (result, repo.home.path().to_path_buf())
}

/// Runs both, prints a table, writes `target/bench/rollout.json`; the PM2 homes used.
pub fn run(runner: &Runner, target: &Path) -> Vec<PathBuf> {
    let ns: Vec<usize> = std::env::var("BENCH_ROLLOUT_N")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100]);
    let ns: Vec<usize> = ns.into_iter().filter(|&n| n > 0).collect();
    if ns.is_empty() {
        return Vec::new();
    }
    let runs: usize = env_or("BENCH_ROLLOUT_RUNS", 3).max(1);
    eprintln!("  rollouts: one app's new code among N = {ns:?}; a cluster rollout under load; {runs} runs each");
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(String::new());
    line(format!("rolling out new code to one app among N (one commit in apps/app-000; reconcile's time includes its {MIN_UPTIME_MS} ms health gate)"));
    line(format!("  {:>5}  {:<24} {:<24} {:>11}  {:>9} {:>9}", "N", "reconcile apply", "pm2 startOrReload", "ours/theirs", "restarted", "(pm2)"));
    let mut rows = Vec::new();
    let mut homes = Vec::new();
    for &n in &ns {
        let (r, home) = one_among_n(runner, n, runs);
        homes.push(home);
        line(format!(
            "  {:>5}  {:<24} {:<24} {:>11.3}  {:>9} {:>9}",
            r.n,
            r.apply.show(),
            r.reload.show(),
            ratio(r.apply.median, r.reload.median),
            format!("{:?}", r.apply_restarted),
            format!("{:?}", r.reload_restarted)
        ));
        rows.push(json!({"n": r.n, "ours": r.apply.json(), "theirs": r.reload.json(),
            "restarted": {"ours": r.apply_restarted, "theirs": r.reload_restarted}}));
    }
    let (load, home) = under_load(runner, runs);
    homes.push(home);
    let show = |v: &[(usize, usize)]| v.iter().map(|(f, t)| format!("{f}/{t}")).collect::<Vec<_>>().join(", ");
    line(String::new());
    line(format!("failed requests during a cluster rollout ({} instances, graceful server, 2 clients on loopback): failed/total per run", load.instances));
    line(format!("  reconcile apply (new code)  {}", show(&load.reconcile)));
    line(format!("  pm2 reload NAME             {}", show(&load.pm2_reload)));
    line(format!("  pm2 startOrReload FILE      {}", show(&load.start_or_reload)));
    print!("{out}");
    let pairs = |v: &[(usize, usize)]| v.iter().map(|(f, t)| json!({"failed": f, "total": t})).collect::<Vec<_>>();
    let json = json!({
        "one_among_n": rows,
        "cluster_rollout_under_load": {"instances": load.instances, "reconcile_apply": pairs(&load.reconcile),
            "pm2_reload": pairs(&load.pm2_reload), "pm2_start_or_reload": pairs(&load.start_or_reload)},
        "runs": runs, "min_uptime_ms": MIN_UPTIME_MS
    });
    let path = target.join("bench").join("rollout.json");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("target/bench");
    write_json(&path, &json);
    println!("JSON: {}", path.display());
    homes
}
