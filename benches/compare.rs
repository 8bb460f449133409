//! `cargo bench --bench compare`: `reconcile` side by side with the pm2 CLI, on the
//! same private PM2 daemon, for N = 10, 100 and 500 `sleep` processes
//! (`interpreter: none`) in an owned namespace beside one foreign app.
//!
//! Measured through the built release binaries, as an operator runs them, each
//! several times (median and min..max):
//! - reading live state: `reconcile status --format json` vs `pm2 jlist`;
//! - planning N desired apps (JSON ecosystem, empty plan): `reconcile plan` vs
//!   `pm2 jlist` alone;
//! - applying one changed env among N: wall time and processes restarted (pid
//!   changed), `reconcile apply --auto-approve` vs `pm2 startOrReload FILE
//!   --update-env`;
//! - `reconcile lint` of a 1,000-app file (once);
//! - `reconcile watch` idle resident memory and CPU next to the PM2 daemon's
//!   (at one N);
//! - rolling out new code to one app among N, and failed requests during a cluster
//!   rollout under HTTP load (`compare/rollout.rs`; `BENCH_ROLLOUT_N`, `BENCH_ROLLOUT_RUNS`).
//!
//! It prints a table of ratios and how each figure grows with N, and writes the same
//! as JSON to `target/bench/compare.json`. Every daemon lives in a private
//! temporary `PM2_HOME` that is killed on drop (also on panic); the end of the run
//! checks that no process of those homes and no home directory is left.
//!
//! Environment (for quick runs): `BENCH_N` (comma list, default `10,100,500`),
//! `BENCH_RUNS` (timed runs of each read, plan and lint, default 20),
//! `BENCH_APPLY_RUNS` (timed applies of each tool per N, default 3),
//! `BENCH_WATCH_SECS` (idle window, default 60; 0 skips), `BENCH_WATCH_N` (default 100),
//! `BENCH_PM2` (`5`, `6` or `7`, default 7: which installed PM2 major to measure
//! against; its JSON goes to `target/bench/compare-pm2-<major>.json`).
//! Needs `npm ci` (the repository's pinned pm2 versions) and `node`.

#[path = "../tests/cli/support/mod.rs"]
mod support;
// Code rollouts (issue 13): one app's new code among N, and a cluster rollout under load.
#[path = "compare/rollout.rs"]
mod rollout;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Pm2Home, Spawned};

/// The apps' `min_uptime`, and the `[policies.rules.min-uptime] min` that makes it
/// legal: `reconcile apply` waits this long for every process it restarts.
const MIN_UPTIME_MS: u64 = 500;
/// Apps in the lint file.
const LINT_APPS: usize = 1000;
/// The namespace the project owns, and the foreign app's.
const OWNED: &str = "bench";
const FOREIGN: &str = "other";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Median, min and max of a set of samples (ms).
#[derive(Clone, Debug)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 };
        Self { median, min: samples[0], max: samples[n - 1], samples }
    }

    fn json(&self) -> Value {
        json!({"median": round(self.median), "min": round(self.min), "max": round(self.max),
            "runs": self.samples.len(), "samples": self.samples.iter().map(|s| round(*s)).collect::<Vec<_>>()})
    }

    /// `19.3 (16.3..26.0)`, in ms, or in s past 10 s.
    fn show(&self) -> String {
        if self.median >= 10_000.0 {
            format!("{:.1} s ({:.1}..{:.1})", self.median / 1000.0, self.min / 1000.0, self.max / 1000.0)
        } else {
            format!("{} ({}..{})", ms(self.median), ms(self.min), ms(self.max))
        }
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Runs commands to completion with a deadline (a hung command is killed, by its own
/// pid, and fails the bench), timing each one from spawn to exit.
struct Runner {
    rt: tokio::runtime::Runtime,
}

impl Runner {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        Self { rt }
    }

    fn run(&self, cmd: Command, limit: Duration) -> (Output, f64) {
        let what = format!("{cmd:?}");
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        self.rt.block_on(async {
            let start = Instant::now();
            let out = tokio::time::timeout(limit, cmd.output())
                .await
                .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            (out, start.elapsed().as_secs_f64() * 1000.0)
        })
    }

    /// Runs and requires exit code `code`; returns the wall time in ms.
    fn expect(&self, cmd: Command, code: i32, limit: Duration) -> (Output, f64) {
        let what = format!("{cmd:?}");
        let (out, t) = self.run(cmd, limit);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what} exited {:?}:\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, t)
    }
}

const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(300);

/// One owned `sleep` app.
fn app(name: &str, cwd: &Path, version: u32) -> Value {
    json!({"name": name, "namespace": OWNED, "script": "/bin/sleep", "args": "3600",
        "interpreter": "none", "exec_mode": "fork", "cwd": cwd, "min_uptime": MIN_UPTIME_MS,
        "max_restarts": 5, "restart_delay": 2000, "kill_timeout": 1600,
        "env": {"VERSION": version.to_string()}})
}

/// The owned apps: N `sleep`s (app `changed.0` with `VERSION = changed.1`), then
/// the `extra` ones.
fn ecosystem(n: usize, cwd: &Path, changed: Option<(usize, u32)>, extra: &[String]) -> Value {
    let version = |i| match changed {
        Some((at, v)) if at == i => v,
        _ => 1,
    };
    let apps: Vec<Value> =
        (0..n).map(|i| app(&format!("app-{i:03}"), cwd, version(i))).chain(extra.iter().map(|name| app(name, cwd, 1))).collect();
    json!({ "apps": apps })
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("writing JSON");
}

/// name → pid of every process in the owned namespace, from `pm2 jlist` (the
/// neutral referee for "restarted"), and whether all of them are online.
fn owned_pids(list: &Value) -> (BTreeMap<String, i64>, bool) {
    let mut all_online = true;
    let pids = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pm2_env"]["namespace"] == OWNED)
        .map(|p| {
            all_online &= p["pm2_env"]["status"] == "online";
            (p["name"].as_str().unwrap_or_default().to_string(), p["pid"].as_i64().unwrap_or(0))
        })
        .collect();
    (pids, all_online)
}

fn foreign_pid(list: &Value) -> Option<i64> {
    list.as_array()?.iter().find(|p| p["pm2_env"]["namespace"] == FOREIGN)?["pid"].as_i64()
}

fn restarted(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> usize {
    before.iter().filter(|(name, pid)| after.get(*name) != Some(*pid)).count()
}

/// utime + stime of `pid`, in seconds (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) may contain spaces: count from its closing paren.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).expect("stat format");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The machine, the tools and the load the figures were taken under.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let pm2: Value = std::fs::read_to_string(support::pm2_package().join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not found".into());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    json!({
        "cpus": cpus, "cpu_model": model, "memory_gb": round(mem_kb as f64 / 1024.0 / 1024.0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "pm2": pm2["version"], "node": node, "reconcile": env!("CARGO_PKG_VERSION"),
        "load_at_start": loadavg(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Figures for one N.
struct AtN {
    n: usize,
    first_apply_ms: f64,
    status: Stats,
    plan: Stats,
    jlist: Stats,
    /// Client-side floors: process start, and status/plan from a jlist snapshot file
    /// (no daemon), so "reconcile minus floor" is the daemon's part.
    version: Stats,
    status_snapshot: Stats,
    plan_snapshot: Stats,
    /// `reconcile lint` of the N-app project (plan's desired half, no daemon).
    lint: Stats,
    jlist_kb: usize,
    apply: Stats,
    apply_restarted: Vec<usize>,
    reload: Stats,
    reload_restarted: Vec<usize>,
    /// One app added: `reconcile apply` vs `pm2 start FILE --only NAME`.
    add: Stats,
    add_restarted: Vec<usize>,
    pm2_add: Stats,
    pm2_add_restarted: Vec<usize>,
    foreign_untouched: bool,
    daemon_rss_mb: f64,
}

struct Watch {
    n: usize,
    secs: f64,
    rss_mb: f64,
    hwm_mb: f64,
    cpu_pct: f64,
    cpu_s: f64,
    daemon_rss_mb: f64,
    daemon_hwm_mb: f64,
    daemon_cpu_pct: f64,
    daemon_cpu_s: f64,
    lines_while_idle: usize,
}

/// A private daemon with N owned apps (created by `reconcile apply`) and a foreign
/// one; its project directory owns `bench`.
struct Fixture {
    home: Pm2Home,
    project: PathBuf,
    eco: PathBuf,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("foreign", FOREIGN);
        let project = home.project(&[OWNED], 30_000);
        let eco = project.join("eco.json");
        let toml = std::fs::read_to_string(project.join("reconcile.toml")).expect("reconcile.toml");
        let toml = toml.replacen("[project]\n", "[project]\necosystem = [\"eco.json\"]\n", 1);
        std::fs::write(
            project.join("reconcile.toml"),
            format!(
                "{toml}\n[safety]\nmax_changed_fraction = 1.0\n\n[policies.rules.min-uptime]\nmin = {MIN_UPTIME_MS}\n\n[policies.rules.log-files]\nseverity = \"off\"\n"
            ),
        )
        .expect("reconcile.toml");
        write_json(&eco, &ecosystem(n, &project, None, &[]));
        Self { home, project, eco }
    }

    fn jlist(&self, runner: &Runner) -> Value {
        let (out, _) = runner.expect(self.home.pm2_command(&["jlist"]), 0, SHORT);
        serde_json::from_slice(&out.stdout).expect("jlist is JSON")
    }

    /// `reconcile apply --auto-approve`; its wall time.
    fn apply(&self, runner: &Runner) -> f64 {
        let mut cmd = self.home.reconcile();
        cmd.args(["apply", "--auto-approve"]);
        runner.expect(cmd, 0, LONG).1
    }

    /// Polls `pm2 jlist` until `n` owned apps run, all online (up to `limit`).
    fn settle(&self, runner: &Runner, n: usize, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let list = self.jlist(runner);
            let (pids, online) = owned_pids(&list);
            if pids.len() == n && online {
                return list;
            }
            assert!(start.elapsed() < limit, "{n} apps not all online after {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A command to time: its name, how to make it, the exit codes that count as success.
type Timed<'a> = (&'a str, &'a dyn Fn() -> Command, &'a [i32]);

/// Times `runs` rounds of several commands, interleaved (the order rotates each
/// round, so a burst of load elsewhere on the machine is shared), after one warm-up
/// round.
fn interleaved(runner: &Runner, runs: usize, cmds: &[Timed]) -> Vec<Stats> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cmds.len()];
    for round in 0..=runs {
        for k in 0..cmds.len() {
            let i = (k + round) % cmds.len();
            let (what, make, codes) = &cmds[i];
            let (out, t) = runner.run(make(), SHORT);
            assert!(
                out.status.code().is_some_and(|c| codes.contains(&c)),
                "{what} exited {:?}:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if round > 0 {
                samples[i].push(t);
            }
        }
    }
    samples.into_iter().map(Stats::of).collect()
}

/// Everything at one N; also the PM2 home it used (gone when this returns).
fn bench_n(runner: &Runner, n: usize, runs: usize, apply_runs: usize, watch: Option<u64>) -> (AtN, Option<Watch>, PathBuf) {
    let progress = |what: &str| eprintln!("  [N={n}] {what}");
    let fx = Fixture::new(n);
    let home = &fx.home;
    let home_dir = home.path().to_path_buf();
    let foreign_before = foreign_pid(&fx.jlist(runner)).expect("the foreign app runs");

    progress("first apply (creates the apps)");
    let first_apply_ms = fx.apply(runner);
    let list = fx.settle(runner, n, Duration::from_secs(60));
    let snapshot = home.path().join("snapshot.json");
    write_json(&snapshot, &list);
    let jlist_kb = serde_json::to_vec(&list).map(|v| v.len() / 1024).unwrap_or(0);

    progress("status, plan, pm2 jlist");
    let status = || {
        let mut c = home.reconcile();
        c.args(["status", "--format", "json"]);
        c
    };
    let plan = || {
        let mut c = home.reconcile();
        c.args(["plan", "--format", "json"]);
        c
    };
    let jlist = || home.pm2_command(&["jlist"]);
    let reads = interleaved(runner, runs, &[("reconcile status", &status, &[0]), ("reconcile plan", &plan, &[0]), ("pm2 jlist", &jlist, &[0])]);
    let [status, plan, jlist]: [Stats; 3] = reads.try_into().expect("three");

    progress("floors (process start, status/plan from a snapshot)");
    let snap = snapshot.to_str().expect("utf-8").to_string();
    let version = || {
        let mut c = home.reconcile();
        c.arg("--version");
        c
    };
    let status_snapshot = || {
        let mut c = home.reconcile();
        c.args(["status", "--format", "json", "--live", &snap]);
        c
    };
    // From a snapshot the daemon's own environment is unknown, so inherited env may
    // show as a change: exit 2 is fine, only the time matters.
    let plan_snapshot = || {
        let mut c = home.reconcile();
        c.args(["plan", "--format", "json", "--live", &snap]);
        c
    };
    let lint = || {
        let mut c = home.reconcile();
        c.args(["lint", "--format", "json"]);
        c
    };
    let floors = interleaved(
        runner,
        runs,
        &[
            ("reconcile --version", &version, &[0]),
            ("status --live", &status_snapshot, &[0]),
            ("plan --live", &plan_snapshot, &[0, 2]),
            ("lint", &lint, &[0]),
        ],
    );
    let [version, status_snapshot, plan_snapshot, lint]: [Stats; 4] = floors.try_into().expect("four");
    let daemon = u32::try_from(home.daemon_pid().expect("pm2.pid")).expect("pid");
    let daemon_rss_mb = mb(status_kb(daemon, "VmRSS"));

    let watched = watch.map(|secs| {
        progress(&format!("reconcile watch idle for {secs} s"));
        watch_idle(&fx, n, secs)
    });

    // Each tool in turn; `before` is the pids after the previous step, so every
    // count is "pid changed by this command". reconcile first: after pm2's
    // `--update-env` the apps carry the CLI's whole shell env, which is drift.
    let changed = n / 2;
    let mut version_no = 1;
    let mut count = n;
    let (mut before, _) = owned_pids(&fx.jlist(runner));
    let step = |before: &mut BTreeMap<String, i64>, count: usize, limit: Duration| {
        let (after, _) = owned_pids(&fx.settle(runner, count, limit));
        let n = restarted(before, &after);
        *before = after;
        n
    };

    progress("reconcile apply, one env changed");
    let (mut apply, mut apply_restarted) = (Vec::new(), Vec::new());
    for _ in 0..apply_runs {
        version_no += 1;
        write_json(&fx.eco, &ecosystem(n, &fx.project, Some((changed, version_no)), &[]));
        apply.push(fx.apply(runner));
        apply_restarted.push(step(&mut before, count, SHORT));
    }

    progress("reconcile apply, one app added");
    let (mut add, mut add_restarted) = (Vec::new(), Vec::new());
    let mut ours_new = Vec::new();
    for k in 0..apply_runs {
        ours_new.push(format!("new-{k}"));
        write_json(&fx.eco, &ecosystem(n, &fx.project, Some((changed, version_no)), &ours_new));
        add.push(fx.apply(runner));
        count += 1;
        add_restarted.push(step(&mut before, count, SHORT));
    }

    progress("pm2 startOrReload --update-env, one env changed");
    let eco = fx.eco.to_str().expect("utf-8").to_string();
    let (mut reload, mut reload_restarted) = (Vec::new(), Vec::new());
    for _ in 0..apply_runs {
        version_no += 1;
        // The N apps only: the added ones are not touched by either tool.
        write_json(&fx.eco, &ecosystem(n, &fx.project, Some((changed, version_no)), &[]));
        let (_, t) = runner.expect(home.pm2_command(&["startOrReload", &eco, "--update-env"]), 0, LONG);
        reload.push(t);
        reload_restarted.push(step(&mut before, count, Duration::from_secs(120)));
    }

    progress("pm2 start FILE --only NAME, one app added");
    let (mut pm2_add, mut pm2_add_restarted) = (Vec::new(), Vec::new());
    let mut theirs_new = Vec::new();
    for k in 0..apply_runs {
        let name = format!("pm2-new-{k}");
        theirs_new.push(name.clone());
        write_json(&fx.eco, &ecosystem(n, &fx.project, Some((changed, version_no)), &theirs_new));
        let (_, t) = runner.expect(home.pm2_command(&["start", &eco, "--only", &name]), 0, SHORT);
        pm2_add.push(t);
        count += 1;
        pm2_add_restarted.push(step(&mut before, count, SHORT));
    }
    let foreign_untouched = foreign_pid(&fx.jlist(runner)) == Some(foreign_before);

    let at = AtN {
        n,
        first_apply_ms,
        status,
        plan,
        jlist,
        version,
        status_snapshot,
        plan_snapshot,
        lint,
        jlist_kb,
        apply: Stats::of(apply),
        apply_restarted,
        reload: Stats::of(reload),
        reload_restarted,
        add: Stats::of(add),
        add_restarted,
        pm2_add: Stats::of(pm2_add),
        pm2_add_restarted,
        foreign_untouched,
        daemon_rss_mb,
    };
    (at, watched, home_dir)
}

/// `reconcile watch --heal --metrics` idle over `secs` beside N processes (all
/// desired, so the plan is empty), next to the PM2 daemon over the same window.
fn watch_idle(fx: &Fixture, n: usize, secs: u64) -> Watch {
    let mut cmd = fx.home.reconcile();
    cmd.args(["--format", "json", "watch", "--heal", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watcher = Spawned(cmd.spawn().expect("spawn reconcile watch"));
    let pid = watcher.0.id();
    let stdout = watcher.0.stdout.take().expect("stdout");
    let (tx, rx) = channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::Null));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the watcher's first plan");
        if line["kind"] == "plan" {
            assert_eq!(line["changes"], json!([]), "the idle watch needs an empty plan: {line}");
            break;
        }
    }
    // Let the start-up settle (the first read, the bus subscription).
    std::thread::sleep(Duration::from_secs(2));
    let daemon = u32::try_from(fx.home.daemon_pid().expect("pm2.pid")).expect("pid");
    let (w0, d0, t0) = (cpu_seconds(pid), cpu_seconds(daemon), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (w1, d1, elapsed) = (cpu_seconds(pid), cpu_seconds(daemon), t0.elapsed().as_secs_f64());
    let lines_while_idle = rx.try_iter().count();
    let watch = Watch {
        n,
        secs: elapsed,
        rss_mb: mb(status_kb(pid, "VmRSS")),
        hwm_mb: mb(status_kb(pid, "VmHWM")),
        cpu_pct: (w1 - w0) / elapsed * 100.0,
        cpu_s: w1 - w0,
        daemon_rss_mb: mb(status_kb(daemon, "VmRSS")),
        daemon_hwm_mb: mb(status_kb(daemon, "VmHWM")),
        daemon_cpu_pct: (d1 - d0) / elapsed * 100.0,
        daemon_cpu_s: d1 - d0,
        lines_while_idle,
    };
    support::kill(i32::try_from(pid).expect("pid"), libc::SIGTERM);
    let _ = watcher.0.wait();
    watch
}

/// `reconcile lint` of a generated 1,000-app JSON ecosystem; (stats, file size in
/// KB, the temporary directory, gone when this returns).
fn lint(runner: &Runner, runs: usize) -> (Stats, u64, PathBuf) {
    let dir = support::short_tempdir();
    let apps: Vec<Value> = (0..LINT_APPS)
        .map(|i| {
            json!({
                "name": format!("app-{i:04}"), "namespace": OWNED, "script": "server.js", "cwd": "/srv/app",
                "exec_mode": "fork", "instances": 1, "min_uptime": 5000, "max_restarts": 10, "restart_delay": 2000,
                "kill_timeout": 5000, "out_file": format!("logs/app-{i}-out.log"), "error_file": format!("logs/app-{i}-err.log"),
                "log_date_format": "YYYY-MM-DD HH:mm:ss", "args": ["--queue", format!("q{i}")],
                "env": { "PORT": 10_000 + i, "NODE_ENV": "development" }, "env_production": { "NODE_ENV": "production" }
            })
        })
        .collect();
    let file = dir.path().join("ecosystem.json");
    write_json(&file, &json!({ "apps": apps }));
    std::fs::write(
        dir.path().join("reconcile.toml"),
        format!("[project]\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"{OWNED}\"]\nenv = \"production\"\n"),
    )
    .expect("reconcile.toml");
    let lint = || {
        let mut c = support::reconcile(dir.path());
        c.args(["lint", "--format", "json"]);
        c
    };
    let [stats]: [Stats; 1] = interleaved(runner, runs, &[("reconcile lint", &lint, &[0])]).try_into().expect("one");
    let kb = std::fs::metadata(&file).map(|m| m.len() / 1024).unwrap_or(0);
    (stats, kb, dir.path().to_path_buf())
}

/// `a / b`, for ratios.
fn ratio(ours: f64, theirs: f64) -> f64 {
    if theirs > 0.0 { ours / theirs } else { f64::NAN }
}

/// How a figure grows from the first N to the last: (factor, ms per app).
fn growth(ns: &[usize], figures: &[f64]) -> Option<(f64, f64)> {
    let (first, last) = (*figures.first()?, *figures.last()?);
    let (n0, n1) = (*ns.first()?, *ns.last()?);
    (n1 > n0).then(|| (last / first, (last - first) / (n1 - n0) as f64))
}

fn growth_json(ns: &[usize], figures: &[f64]) -> Value {
    growth(ns, figures).map_or(Value::Null, |(f, per)| json!({"factor": round(f), "ms_per_app": (per * 1000.0).round() / 1000.0}))
}

/// `  growth N=a→b: ours ...; theirs ...` for a pair of series; none with one N.
fn growth_pair(ns: &[usize], (ours_label, theirs_label): (&str, &str), ours: &[f64], theirs: &[f64]) -> Option<String> {
    (ns.len() > 1).then(|| {
        format!("  growth N={}→{}: {}; {}", ns[0], ns[ns.len() - 1], growth_line(ours_label, ns, ours), growth_line(theirs_label, ns, theirs))
    })
}

fn growth_line(label: &str, ns: &[usize], figures: &[f64]) -> String {
    match growth(ns, figures) {
        Some((f, per)) => format!("{label} x{f:.1} ({per:+.2} ms per app)"),
        None => format!("{label} -"),
    }
}

/// Checks that nothing of the bench's homes is left: no directory, no process whose
/// environment names one of them.
fn leftovers(homes: &[PathBuf]) -> Vec<String> {
    let mut left: Vec<String> = homes.iter().filter(|h| h.exists()).map(|h| format!("directory {}", h.display())).collect();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            for home in homes {
                let needle = format!("PM2_HOME={}", home.display());
                if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                    left.push(format!("process {pid} of {}", home.display()));
                }
            }
        }
    }
    left
}

fn main() {
    // `BENCH_PM2=5|6|7` (default 7): the PM2 major to measure against, the daemon and
    // CLI the harness runs and the package `reconcile` resolves with (all picked by
    // the test harness's `RECONCILE_TEST_PM2`).
    if let Some(major) = std::env::var_os("BENCH_PM2") {
        // SAFETY: the first statement of `main`, before any thread exists.
        unsafe { std::env::set_var("RECONCILE_TEST_PM2", major) };
    }
    let started = Instant::now();
    let ns: Vec<usize> = std::env::var("BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).filter(|&n| n > 0).collect())
        .unwrap_or_else(|| vec![10, 100, 500]);
    assert!(!ns.is_empty(), "BENCH_N has no N > 0");
    let runs: usize = env_or("BENCH_RUNS", 20).max(1);
    let apply_runs: usize = env_or("BENCH_APPLY_RUNS", 3).max(1);
    let watch_secs: u64 = env_or("BENCH_WATCH_SECS", 60);
    let watch_n: usize = env_or("BENCH_WATCH_N", 100);
    let machine = machine();
    let runner = Runner::new();
    eprintln!(
        "reconcile vs pm2: N = {ns:?}, {runs} runs per read, {apply_runs} applies per tool; watch {watch_secs} s at N = {watch_n}"
    );

    eprintln!("  lint of {LINT_APPS} apps");
    let (lint, lint_kb, lint_dir) = lint(&runner, runs);

    let mut results = Vec::new();
    let mut watch = None;
    let mut homes = vec![lint_dir];
    for &n in &ns {
        let w = (n == watch_n && watch_secs > 0).then_some(watch_secs);
        let (at, watched, home) = bench_n(&runner, n, runs, apply_runs, w);
        homes.push(home);
        results.push(at);
        watch = watch.or(watched);
    }
    let target = Path::new(env!("CARGO_BIN_EXE_reconcile")).parent().and_then(Path::parent).map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    homes.extend(rollout::run(&runner, &target));
    let total_s = started.elapsed().as_secs_f64();
    let left = leftovers(&homes);

    report(&machine, &ns, runs, apply_runs, &lint, lint_kb, &results, watch.as_ref(), total_s, &left);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[allow(clippy::too_many_arguments)]
fn report(
    machine: &Value,
    ns: &[usize],
    runs: usize,
    apply_runs: usize,
    lint: &Stats,
    lint_kb: u64,
    results: &[AtN],
    watch: Option<&Watch>,
    total_s: f64,
    left: &[String],
) {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "reconcile vs pm2 — {} x {}, {} GB; PM2 {}, node {}; load {} at start, {} at end",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_gb"],
        machine["pm2"].as_str().unwrap_or("?"),
        machine["node"].as_str().unwrap_or("?"),
        machine["load_at_start"].as_str().unwrap_or("?"),
        loadavg()
    ));
    line(format!("wall times in ms: median (min..max) of {runs} runs per read, {apply_runs} per apply; N fork `sleep` apps + 1 foreign app"));

    let comparison = |line: &mut dyn FnMut(String), title: &str, ours_label: &str, theirs_label: &str, pick: &dyn Fn(&AtN) -> (&Stats, &Stats)| {
        line(String::new());
        line(title.to_string());
        line(format!("  {:>5}  {:<24} {:<24} {:>11} {:>9}", "N", ours_label, theirs_label, "ours/theirs", "x faster"));
        for r in results {
            let (o, t) = pick(r);
            line(format!(
                "  {:>5}  {:<24} {:<24} {:>11.3} {:>8.1}x",
                r.n,
                o.show(),
                t.show(),
                ratio(o.median, t.median),
                ratio(t.median, o.median)
            ));
        }
        let o: Vec<f64> = results.iter().map(|r| pick(r).0.median).collect();
        let t: Vec<f64> = results.iter().map(|r| pick(r).1.median).collect();
        if let Some(growth) = growth_pair(ns, (ours_label, theirs_label), &o, &t) {
            line(growth);
        }
    };
    comparison(&mut line, "reading live state (reconcile status --format json)", "reconcile status", "pm2 jlist", &|r| (&r.status, &r.jlist));
    comparison(&mut line, "planning N desired apps (JSON ecosystem, empty plan)", "reconcile plan", "pm2 jlist", &|r| (&r.plan, &r.jlist));

    line(String::new());
    line("where reconcile's read time goes: the same commands without the daemon (the live state from a jlist file)".into());
    line(format!(
        "  {:>5}  {:<18} {:<18} {:<18} {:<18} {:>8} {:>9}",
        "N", "process start", "lint (N apps)", "status --live FILE", "plan --live FILE", "jlist KB", "daemon MB"
    ));
    for r in results {
        line(format!(
            "  {:>5}  {:<18} {:<18} {:<18} {:<18} {:>8} {:>9.1}",
            r.n,
            r.version.show(),
            r.lint.show(),
            r.status_snapshot.show(),
            r.plan_snapshot.show(),
            r.jlist_kb,
            r.daemon_rss_mb
        ));
    }
    line("  (status minus status --live FILE ≈ the daemon's answer: getMonitorData samples every process first)".into());

    type Pick<'a> = &'a dyn Fn(&AtN) -> (&Stats, &Stats, &[usize], &[usize]);
    let writes = |line: &mut dyn FnMut(String), title: &str, ours_label: &str, theirs_label: &str, pick: Pick| {
        line(String::new());
        line(title.to_string());
        line(format!(
            "  {:>5}  {:<24} {:<24} {:>11} {:>9}  {:>9} {:>9}",
            "N", ours_label, theirs_label, "ours/theirs", "x faster", "restarted", "(pm2)"
        ));
        let same = |v: &[usize]| {
            let (lo, hi) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
            if lo == hi { lo.to_string() } else { format!("{lo}..{hi}") }
        };
        for r in results {
            let (o, t, o_restarted, t_restarted) = pick(r);
            line(format!(
                "  {:>5}  {:<24} {:<24} {:>11.3} {:>8.1}x  {:>9} {:>9}",
                r.n,
                o.show(),
                t.show(),
                ratio(o.median, t.median),
                ratio(t.median, o.median),
                same(o_restarted),
                same(t_restarted)
            ));
        }
        let o: Vec<f64> = results.iter().map(|r| pick(r).0.median).collect();
        let t: Vec<f64> = results.iter().map(|r| pick(r).1.median).collect();
        if let Some(growth) = growth_pair(ns, (ours_label, theirs_label), &o, &t) {
            line(growth);
        }
    };
    writes(
        &mut line,
        &format!("applying one env change among N (reconcile's time includes its health gate: the restarted process must stay online {MIN_UPTIME_MS} ms; pm2 waits for nothing)"),
        "reconcile apply",
        "pm2 startOrReload",
        &|r| (&r.apply, &r.reload, &r.apply_restarted, &r.reload_restarted),
    );
    writes(
        &mut line,
        &format!("adding one app beside N (reconcile apply: plan, PM2's own resolution in node, prepare, {MIN_UPTIME_MS} ms health gate)"),
        "reconcile apply",
        "pm2 start FILE --only",
        &|r| (&r.add, &r.pm2_add, &r.add_restarted, &r.pm2_add_restarted),
    );
    line(String::new());
    line(format!(
        "first reconcile apply of the N new apps (health-gated together): {}",
        results.iter().map(|r| format!("N={}: {} ms", r.n, ms(r.first_apply_ms))).collect::<Vec<_>>().join(", ")
    ));
    line(format!(
        "foreign app untouched by every command: {}",
        if results.iter().all(|r| r.foreign_untouched) { "yes" } else { "NO" }
    ));

    line(String::new());
    line(format!("lint of a {LINT_APPS}-app JSON ecosystem ({lint_kb} KB): {} ms (goal < 100 ms)", lint.show()));

    if let Some(w) = watch {
        line(String::new());
        line(format!("reconcile watch idle for {:.0} s beside N={} processes (--interval 30 --heal --metrics):", w.secs, w.n));
        line(format!("  {:<18} {:>20} {:>24}", "", "resident (peak)", "CPU (of one core)"));
        line(format!("  {:<18} {:>8.1} MB ({:>5.1} MB) {:>10.3} % ({:.2} s)", "reconcile watch", w.rss_mb, w.hwm_mb, w.cpu_pct, w.cpu_s));
        line(format!(
            "  {:<18} {:>8.1} MB ({:>5.1} MB) {:>10.3} % ({:.2} s)",
            "PM2 daemon", w.daemon_rss_mb, w.daemon_hwm_mb, w.daemon_cpu_pct, w.daemon_cpu_s
        ));
        let cpu = if w.daemon_cpu_s > 0.0 { format!("{:.2}", ratio(w.cpu_s, w.daemon_cpu_s)) } else { "-".into() };
        line(format!(
            "  ours/daemon: memory {:.2}, CPU {cpu}; lines written while idle: {}",
            ratio(w.rss_mb, w.daemon_rss_mb),
            w.lines_while_idle
        ));
    }

    // Goals (issue #8 and the command sections of the README).
    let mut goals = Vec::new();
    if let Some(r) = results.iter().find(|r| r.n == 100) {
        let x = ratio(r.jlist.median, r.status.median);
        goals.push(("N=100: live read >= 10x faster than pm2 jlist".to_string(), x >= 10.0, format!("{x:.1}x")));
        let x = ratio(r.jlist.median, r.plan.median);
        goals.push(("N=100: plan >= 10x faster than pm2 jlist".to_string(), x >= 10.0, format!("{x:.1}x")));
        let ok = r.apply_restarted.iter().all(|&c| c == 1) && r.reload_restarted.iter().all(|&c| c == r.n);
        goals.push((
            "N=100: apply restarts exactly 1 where startOrReload restarts N".to_string(),
            ok,
            format!("{:?} vs {:?}", r.apply_restarted, r.reload_restarted),
        ));
    }
    goals.push(("lint of 1,000 apps < 100 ms".to_string(), lint.median < 100.0, format!("{} ms", ms(lint.median))));
    if let Some(w) = watch {
        goals.push(("watch idle < 20 MB resident, < 1% of a core".to_string(), w.rss_mb < 20.0 && w.cpu_pct < 1.0, format!("{:.1} MB, {:.3} %", w.rss_mb, w.cpu_pct)));
    }
    line(String::new());
    line("goals:".into());
    for (what, met, figure) in &goals {
        line(format!("  {:<8} {what}: {figure}", if *met { "met" } else { "NOT met" }));
    }
    line(String::new());
    line(format!(
        "total {:.0} s ({:.1} min); left behind: {}",
        total_s,
        total_s / 60.0,
        if left.is_empty() { "nothing".to_string() } else { left.join(", ") }
    ));

    let pair = |o: &Stats, t: &Stats| json!({"ours": o.json(), "theirs": t.json(), "ours_over_theirs": round(ratio(o.median, t.median)), "x_faster": round(ratio(t.median, o.median))});
    let medians = |f: &dyn Fn(&AtN) -> f64| results.iter().map(f).collect::<Vec<_>>();
    let json = json!({
        "machine": machine,
        "load_at_end": loadavg(),
        "settings": {"n": ns, "runs": runs, "apply_runs": apply_runs, "min_uptime_ms": MIN_UPTIME_MS,
            "watch_secs": watch.map(|w| w.secs), "watch_n": watch.map(|w| w.n)},
        "lint": {"apps": LINT_APPS, "kb": lint_kb, "ms": lint.json()},
        "by_n": results.iter().map(|r| json!({
            "n": r.n,
            "live_read": {"ours": "reconcile status --format json", "theirs": "pm2 jlist", "ms": pair(&r.status, &r.jlist)},
            "plan": {"ours": "reconcile plan --format json", "theirs": "pm2 jlist", "ms": pair(&r.plan, &r.jlist)},
            "apply_one_change": {"ours": "reconcile apply --auto-approve", "theirs": "pm2 startOrReload FILE --update-env",
                "ms": pair(&r.apply, &r.reload), "restarted": {"ours": r.apply_restarted, "theirs": r.reload_restarted},
                "health_gate_ms": MIN_UPTIME_MS},
            "add_one_app": {"ours": "reconcile apply --auto-approve", "theirs": "pm2 start FILE --only NAME",
                "ms": pair(&r.add, &r.pm2_add), "restarted": {"ours": r.add_restarted, "theirs": r.pm2_add_restarted},
                "health_gate_ms": MIN_UPTIME_MS},
            "first_apply_ms": round(r.first_apply_ms),
            "floors_ms": {"process_start": r.version.json(), "status_from_snapshot": r.status_snapshot.json(),
                "plan_from_snapshot": r.plan_snapshot.json(), "lint_n_apps": r.lint.json()},
            "jlist_kb": r.jlist_kb,
            "daemon_rss_mb": round(r.daemon_rss_mb),
            "foreign_untouched": r.foreign_untouched,
        })).collect::<Vec<_>>(),
        "growth": {
            "live_read": {"ours": growth_json(ns, &medians(&|r| r.status.median)), "theirs": growth_json(ns, &medians(&|r| r.jlist.median))},
            "plan": {"ours": growth_json(ns, &medians(&|r| r.plan.median)), "theirs": growth_json(ns, &medians(&|r| r.jlist.median))},
            "apply_one_change": {"ours": growth_json(ns, &medians(&|r| r.apply.median)), "theirs": growth_json(ns, &medians(&|r| r.reload.median))},
            "add_one_app": {"ours": growth_json(ns, &medians(&|r| r.add.median)), "theirs": growth_json(ns, &medians(&|r| r.pm2_add.median))},
        },
        "watch_idle": watch.map(|w| json!({
            "n": w.n, "secs": round(w.secs),
            "ours": {"rss_mb": round(w.rss_mb), "peak_mb": round(w.hwm_mb), "cpu_pct": (w.cpu_pct * 1000.0).round() / 1000.0, "cpu_s": round(w.cpu_s)},
            "daemon": {"rss_mb": round(w.daemon_rss_mb), "peak_mb": round(w.daemon_hwm_mb), "cpu_pct": (w.daemon_cpu_pct * 1000.0).round() / 1000.0, "cpu_s": round(w.daemon_cpu_s)},
            "lines_while_idle": w.lines_while_idle,
        })),
        "goals": goals.iter().map(|(what, met, figure)| json!({"goal": what, "met": met, "figure": figure})).collect::<Vec<_>>(),
        "total_secs": round(total_s),
        "left_behind": left,
    });
    // target/release/reconcile → target/bench/compare.json
    let target = Path::new(env!("CARGO_BIN_EXE_reconcile")).parent().and_then(Path::parent).map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    // One file per PM2 major; 7 keeps the historical name.
    let file = match support::pm2_major() {
        7 => "compare.json".to_string(),
        major => format!("compare-pm2-{major}.json"),
    };
    let path = target.join("bench").join(file);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("target/bench");
    write_json(&path, &json);
    line(format!("JSON: {}", path.display()));
    print!("{out}");
}
