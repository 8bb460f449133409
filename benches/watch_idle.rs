//! `reconcile watch` idle: resident memory and CPU of the watcher over a quiet
//! window, with 100 processes on a private daemon (all desired, so the plan is
//! empty), next to the PM2 daemon's own figures over the same window.
//!
//! `cargo bench --bench watch_idle` (needs `npm ci` first). `WATCH_SECS` sets the
//! window (default 60). The watcher runs as an agent would: `--interval 30`
//! (the default), `--heal`, `--metrics` on loopback. Figures come from
//! `/proc/<pid>/status` (VmRSS, VmHWM) and `/proc/<pid>/stat` (utime + stime).
//! Goal: under 20 MB resident and under 1% of a core.

#[path = "../tests/cli/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Pm2Home, Spawned};

const APPS: usize = 100;

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may contain spaces) start at field 3.
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

fn main() {
    let secs: u64 = std::env::var("WATCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let home = Pm2Home::start();
    let apps: Vec<Value> = (0..APPS)
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
    let project = home.project(&["bench"], 10_000);
    std::fs::write(project.join("eco.json"), serde_json::to_vec(&json!({ "apps": apps })).expect("json")).expect("eco.json");
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).expect("reconcile.toml");
    let toml = toml.replacen("[project]\n", "[project]\necosystem = [\"eco.json\"]\n", 1);
    std::fs::write(project.join("reconcile.toml"), format!("{toml}\n[policies.rules.log-files]\nseverity = \"off\"\n")).expect("toml");

    let mut cmd = home.reconcile();
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
            assert_eq!(line["changes"], json!([]), "the bench needs an empty plan: {line}");
            break;
        }
    }
    // Let the start-up settle (the first read, the bus subscription).
    std::thread::sleep(Duration::from_secs(2));
    let daemon = u32::try_from(home.daemon_pid().expect("pm2.pid")).expect("pid");
    let (w0, d0, t0) = (cpu_seconds(pid), cpu_seconds(daemon), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (w1, d1, elapsed) = (cpu_seconds(pid), cpu_seconds(daemon), t0.elapsed().as_secs_f64());
    let lines_while_idle = rx.try_iter().count();
    let (w_rss, w_hwm) = (status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM"));
    let (d_rss, d_hwm) = (status_kb(daemon, "VmRSS"), status_kb(daemon, "VmHWM"));
    let w_cpu = (w1 - w0) / elapsed * 100.0;
    let d_cpu = (d1 - d0) / elapsed * 100.0;

    let stopped = Instant::now();
    support::kill(i32::try_from(pid).expect("pid"), libc::SIGTERM);
    let status = watcher.0.wait().expect("wait");
    let stop_ms = stopped.elapsed().as_millis();

    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("reconcile watch idle for {elapsed:.0} s beside {APPS} processes (--interval 30 --heal --metrics):");
    println!("                      resident (peak)          CPU (of one core)");
    println!("  reconcile watch     {:6.1} MB ({:6.1} MB)   {w_cpu:6.3} %   ({:.2} s of CPU)", mb(w_rss), mb(w_hwm), w1 - w0);
    println!("  PM2 daemon          {:6.1} MB ({:6.1} MB)   {d_cpu:6.3} %   ({:.2} s of CPU)", mb(d_rss), mb(d_hwm), d1 - d0);
    println!("  lines written while idle: {lines_while_idle}; SIGTERM → exit {:?} in {stop_ms} ms", status.code());
    let ok = mb(w_rss) < 20.0 && w_cpu < 1.0;
    println!("  goal (< 20 MB resident, < 1% of a core): {}", if ok { "met" } else { "NOT met" });
}
