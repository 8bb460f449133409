//! What differs between PM2 5.x, 6.x and 7.x, against the daemon of the version the
//! run picks (`RECONCILE_TEST_PM2`, see support): the resolver's version check, a
//! call that times out (every version), and the cluster calls PM2 5/6 never answer
//! (docs/pm2-versions.md). Each hazard test runs on every version and asserts the
//! same end state; on the versions that have the hazard it also asserts the error
//! names it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Pm2Home, kill, pm2_major, pm2_version, run, run_with_timeout};

/// A daemon of the version under test, a bystander, and a project owning `mine`.
struct World {
    home: Pm2Home,
    project: PathBuf,
}

impl World {
    fn new(timeout_ms: u64) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).unwrap();
        let toml = format!(
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = {timeout_ms}\n\n\
             [policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n\n\
             [policies.rules.exec-mode]\nseverity = \"off\"\n",
            home.path().display().to_string()
        );
        std::fs::write(project.join("reconcile.toml"), toml).unwrap();
        Self { home, project }
    }

    fn write(&self, apps: &[Value]) {
        std::fs::write(self.project.join("ecosystem.json"), serde_json::to_string_pretty(&json!({"apps": apps})).unwrap()).unwrap();
    }

    fn apply(&self) -> (i32, String, String, Duration) {
        run(self.home.reconcile().args(["apply", "--auto-approve"]))
    }

    fn journal(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.project.join(".reconcile/journal.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `pm2 jlist` entries of `name`.
    fn procs(&self, name: &str) -> Vec<Value> {
        self.home.jlist().as_array().unwrap().iter().filter(|p| p["name"] == name).cloned().collect()
    }

    /// Children of the daemon that no listed process accounts for: a worker the
    /// process list cannot show (PM2 5/6's `_old_<id>`).
    fn hidden_children(&self) -> Vec<u32> {
        let daemon = self.home.daemon_pid().unwrap() as u32;
        let listed: Vec<u64> = self.home.jlist().as_array().unwrap().iter().filter_map(|p| p["pid"].as_u64()).collect();
        children(daemon).into_iter().filter(|pid| !listed.contains(&u64::from(*pid))).collect()
    }
}

/// Running children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first().is_some_and(|s| !matches!(*s, "Z" | "X" | "x")) && fields.get(1) == Some(&pid.to_string().as_str()) {
            out.push(child);
        }
    }
    out
}

fn expect_code(out: &(i32, String, String, Duration), code: i32) {
    assert_eq!(out.0, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", out.1, out.2);
}

/// A Node cluster app listening on `PORT`, clean under the test's policies.
fn cluster_app(w: &World, name: &str, port: u16, extra: Value) -> Value {
    let script = w.project.join("server.js");
    std::fs::write(&script, "require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1');\n").unwrap();
    let mut app = json!({"name": name, "namespace": "mine", "script": script, "exec_mode": "cluster", "instances": 1,
        "min_uptime": 500, "max_restarts": 3, "restart_delay": 0, "kill_timeout": 500,
        "out_file": "/dev/null", "error_file": w.project.join(format!("{name}-err.log")), "log_date_format": "YYYY-MM-DD HH:mm:ss",
        "env": {"PORT": port.to_string()}});
    for (k, v) in extra.as_object().unwrap() {
        app[k] = v.clone();
    }
    app
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn apply_refuses_a_pm2_package_of_another_major_naming_both_versions() {
    let w = World::new(10000);
    w.write(&[crate::support::sleep_app("api", json!({}))]);
    let other = if pm2_major() == 7 { "pm2-6" } else { "pm2" };
    let other_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules").join(other);
    let other_version: Value = serde_json::from_str(&std::fs::read_to_string(other_dir.join("package.json")).unwrap()).unwrap();
    let other_version = other_version["version"].as_str().unwrap().to_string();
    let out = run(w.home.reconcile().env("RECONCILE_PM2", &other_dir).args(["apply", "--auto-approve"]));
    expect_code(&out, 1);
    let text = format!("{}{}", out.1, out.2);
    assert!(text.contains(&format!("is version {other_version}")) && text.contains(&format!("runs PM2 {}", pm2_version())), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(w.procs("api").is_empty(), "nothing was started");
    // Without RECONCILE_PM2, the package the daemon itself runs from is used.
    let out = run(w.home.reconcile().env_remove("RECONCILE_PM2").args(["apply", "--auto-approve"]));
    expect_code(&out, 0);
    assert_eq!(w.procs("api").len(), 1);
}

/// Every version: a call that times out is followed by verification on a fresh
/// connection, which finds the daemon alive, never "it may have crashed".
#[test]
fn a_daemon_paused_mid_call_is_not_reported_as_crashed_afterwards() {
    let w = World::new(2000);
    let mark = w.project.join("sigint.mark");
    let script = w.project.join("slow-stop.js");
    // Exits 500 ms after SIGINT, after leaving a mark: the daemon is mid-restart then.
    std::fs::write(&script, format!(
        "process.on('SIGINT', () => {{ require('fs').writeFileSync({:?}, 'x'); setTimeout(() => process.exit(0), 500); }});\nsetInterval(() => {{}}, 1 << 30);\n",
        mark.display().to_string()
    )).unwrap();
    let app = |greeting: &str| {
        json!({"name": "api", "namespace": "mine", "script": script, "exec_mode": "fork", "min_uptime": 300, "max_restarts": 3,
            "restart_delay": 0, "kill_timeout": 1000, "out_file": "/dev/null", "error_file": "/dev/null",
            "log_date_format": "YYYY-MM-DD HH:mm:ss", "env": {"GREETING": greeting}})
    };
    w.write(&[app("hello")]);
    expect_code(&w.apply(), 0);

    w.write(&[app("bonjour")]);
    let mut cmd = w.home.reconcile();
    cmd.args(["apply", "--auto-approve"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let daemon = w.home.daemon_pid().unwrap();
    assert!(w.home.is_ours(daemon), "pm2.pid names this test's daemon");
    let start = Instant::now();
    while !mark.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the restart never began");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(daemon, libc::SIGSTOP);
    // Hold the daemon until the restart call has timed out (its record is journaled).
    let start = Instant::now();
    let timed_out = loop {
        let failed = w.journal().into_iter().find(|r| r["event"] == "action" && r["error"].is_string());
        if let Some(record) = failed {
            break record;
        }
        if start.elapsed() > Duration::from_secs(60) {
            kill(daemon, libc::SIGCONT);
            panic!("the restart call never timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill(daemon, libc::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a timed-out call fails the apply\n{stdout}\n{stderr}");
    assert!(timed_out["error"].as_str().unwrap().contains("did not answer"), "{timed_out}");
    assert!(!stderr.contains("crashed") && !stdout.contains("crashed"), "no crash is reported of a live daemon:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("closed the connection"), "{stderr}");
    let end = w.journal().into_iter().rev().find(|r| r["event"] == "end").unwrap();
    assert!(end["live_after"].is_object(), "verification read the daemon on a fresh connection: {end}");
    assert!(w.home.is_ours(daemon), "the daemon still runs");
    // And the next apply converges.
    expect_code(&w.apply(), 0);
}

/// A cluster app whose workers die before "online" (a bad node flag): PM2 5/6 never
/// answer `prepare`; 7 does. Either way: bounded, exit 1, no worker left looping or
/// hidden, and a read afterwards that tells the truth.
#[test]
fn a_cluster_app_dying_before_online_is_bounded_and_leaves_nothing_running() {
    let w = World::new(3000);
    let port = free_port();
    w.write(&[cluster_app(&w, "web", port, json!({"instances": 2, "node_args": "--no-such-node-flag"}))]);
    let out = w.apply();
    expect_code(&out, 1);
    assert!(out.3 < Duration::from_secs(50), "bounded: {:?}", out.3);
    if pm2_major() < 7 {
        assert!(out.2.contains("did not answer `prepare` for cluster app `web`") && out.2.contains("PM2 5.x and 6.x never answer"), "{}", out.2);
    }
    assert!(!out.2.contains("crashed;") && !out.2.contains("closed the connection"), "{}", out.2);
    // Nothing of it keeps running or restarting, listed or not.
    let web = w.procs("web");
    assert!(web.iter().all(|p| p["pm2_env"]["status"] != "online" && p["pid"].as_u64().is_none_or(|pid| pid == 0)), "{web:#?}");
    let restarts: Vec<Value> = web.iter().map(|p| p["pm2_env"]["restart_time"].clone()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    let later: Vec<Value> = w.procs("web").iter().map(|p| p["pm2_env"]["restart_time"].clone()).collect();
    assert_eq!(restarts, later, "it is not left crash-looping");
    assert!(w.hidden_children().is_empty(), "no worker the list cannot show: {:?}", w.hidden_children());
    assert!(port_free(port));
    // A truthful read: status answers and lists what is there.
    let status = run(w.home.reconcile().args(["status", "--format", "json"]));
    expect_code(&status, 0);
    let doc: Value = serde_json::from_str(&status.1).unwrap();
    assert_eq!(doc["processes"].as_array().unwrap().iter().filter(|p| p["name"] == "web").count(), web.len());
    assert_eq!(doc["daemon"]["version"], pm2_version().as_str());
}

/// An online cluster app reloaded into a worker that dies before "online": on PM2 5/6
/// the reload is never answered and the old worker is parked under `_old_<id>`,
/// invisible in the list and holding the port. It is found, proved to be that app's
/// worker of this daemon, and stopped; on every version nothing is left hidden.
#[test]
fn a_reload_that_would_leave_an_old_worker_leaves_nothing_hidden() {
    let w = World::new(3000);
    let port = free_port();
    w.write(&[cluster_app(&w, "web", port, json!({}))]);
    expect_code(&w.apply(), 0);
    let before = w.procs("web");
    assert_eq!(before.len(), 1);
    let old_pid = before[0]["pid"].as_u64().unwrap() as u32;
    assert!(!port_free(port), "web listens");

    w.write(&[cluster_app(&w, "web", port, json!({"node_args": "--no-such-node-flag"}))]);
    let out = w.apply();
    expect_code(&out, 1);
    assert!(out.3 < Duration::from_secs(50), "bounded: {:?}", out.3);
    if pm2_major() < 7 {
        assert!(out.2.contains("did not answer `reloadProcessId` for cluster app `web`"), "{}", out.2);
        assert!(out.2.contains(&format!("the old worker (pid {old_pid}) left running under _old_")) && out.2.contains("was stopped"), "{}", out.2);
    }
    assert!(!out.2.contains("crashed;") && !out.2.contains("closed the connection"), "{}", out.2);
    let gone = Instant::now();
    while Path::new(&format!("/proc/{old_pid}")).exists() && crate::support::alive(old_pid as i32) {
        assert!(gone.elapsed() < Duration::from_secs(10), "the old worker {old_pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.hidden_children().is_empty(), "no worker the list cannot show: {:?}", w.hidden_children());
    assert!(port_free(port), "nothing holds the app's port");
    let web = w.procs("web");
    assert!(web.iter().all(|p| p["pm2_env"]["status"] != "online"), "{web:#?}");
    // The bystander was not touched.
    let stock = w.procs("stock-alert");
    assert_eq!(stock[0]["pm2_env"]["status"], "online");
    assert_eq!(stock[0]["pm2_env"]["restart_time"], 0);
}

/// The harness really runs the version it says (a run of another version cannot
/// pass silently as 7).
#[test]
fn the_daemon_runs_the_pm2_version_the_run_picked() {
    let home = Pm2Home::start();
    let out = run_with_timeout(Command::new(crate::support::pm2_bin()).arg("--version").env("PM2_HOME", home.path()), Duration::from_secs(60));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pm2_version());
    let status = run(crate::support::reconcile(home.path()).env("PM2_HOME", home.path()).args(["status", "--format", "json"]));
    let doc: Value = serde_json::from_str(&status.1).unwrap();
    assert_eq!(doc["daemon"]["version"], pm2_version().as_str());
    assert!(pm2_version().starts_with(&format!("{}.", pm2_major())));
}
