//! The health gate, the crash-loop breaker, convergence and the write-ahead journal
//! (incident 003 in full), against a real daemon. Each test has its own daemon and
//! its own ports, and a foreign `stock-alert` that must come out untouched.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Pm2Home, run, sleep_app};

struct World {
    home: Pm2Home,
    project: PathBuf,
    foreign: Vec<(String, String, Value, Value, Value)>,
}

impl World {
    /// A daemon with `stock-alert` (foreign) and a project owning `mine`; `health` is
    /// the body of its `[health]` section.
    fn new(health: &str) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        let toml = format!(
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n\n\
             [health]\n{health}\n\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
            home.path().display().to_string()
        );
        std::fs::write(project.join("reconcile.toml"), toml).expect("reconcile.toml");
        let foreign = home.bystanders("mine");
        Self { home, project, foreign }
    }

    fn write(&self, apps: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({"apps": apps})).expect("json");
        std::fs::write(self.project.join("ecosystem.json"), text).expect("ecosystem.json");
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.project.join(name);
        std::fs::write(&path, body).expect("script");
        path
    }

    fn reconcile(&self, args: &[&str]) -> (i32, String, String, Duration) {
        run(self.home.reconcile().args(args))
    }

    fn apply(&self) -> (i32, String, String, Duration) {
        self.reconcile(&["apply", "--auto-approve"])
    }

    /// (name, pm_id, restarts, status) of our processes.
    fn ours(&self) -> Vec<(String, u64, u64, String)> {
        self.home
            .jlist()
            .as_array()
            .expect("jlist array")
            .iter()
            .filter(|p| p["pm2_env"]["namespace"] == "mine")
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["pm_id"].as_u64().unwrap_or(u64::MAX),
                    p["pm2_env"]["restart_time"].as_u64().unwrap_or(0),
                    p["pm2_env"]["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn journal(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.project.join(".reconcile/journal.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("every journal line is JSON")).collect()
    }

    #[track_caller]
    fn assert_foreign_untouched(&self) {
        assert_eq!(self.home.bystanders("mine"), self.foreign, "a process outside the owned namespace changed");
    }
}

#[track_caller]
fn expect(result: &(i32, String, String, Duration), code: i32) {
    assert_eq!(result.0, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", result.1, result.2);
}

fn node_app(name: &str, script: &PathBuf, extra: Value) -> Value {
    let mut app = json!({"name": name, "namespace": "mine", "script": script, "exec_mode": "fork",
        "min_uptime": 500, "max_restarts": 10, "restart_delay": 0, "kill_timeout": 500,
        "log_date_format": "YYYY-MM-DD HH:mm:ss"});
    for (k, v) in extra.as_object().expect("object") {
        app[k] = v.clone();
    }
    app
}

#[test]
fn the_late_crasher_fails_the_gate_is_stopped_and_shows_its_error() {
    // Dies 6 s after start, past its min_uptime of 5000 ms: PM2 would restart it
    // forever without counting a single restart toward max_restarts.
    let w = World::new("");
    let script = w.script("late.js", "setTimeout(() => { console.error('late failure: upstream gone'); process.exit(1); }, 6000);\nsetInterval(() => {}, 1000);\n");
    w.write(&[node_app("late", &script, json!({"min_uptime": 5000}))]);
    let out = w.apply();
    expect(&out, 1);
    assert!(out.2.contains("unhealthy") && out.2.contains("settle window"), "{}", out.2);
    assert!(out.2.contains("late failure: upstream gone"), "the error lines since the start are shown:\n{}", out.2);
    assert!(out.2.contains("pm2 logs late"), "{}", out.2);
    let late: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "late").collect();
    assert_eq!(late[0].3, "stopped", "{late:?}");
    assert!(late[0].2 <= 2, "few restarts: {late:?}");
    w.assert_foreign_untouched();
}

#[test]
fn null_env_values_converge_in_two_applies() {
    let w = World::new("settle_ms = 500");
    w.write(&[sleep_app("nully", json!({"env": {"N": null, "KEEP": "1"}}))]);
    expect(&w.apply(), 0);
    let second = w.apply();
    expect(&second, 0);
    assert!(w.journal().last().unwrap()["outcome"] == "noop", "{}", second.1);
    assert_eq!(w.reconcile(&["plan"]).0, 0);
    w.assert_foreign_untouched();
}

#[test]
fn names_pm2_would_rename_or_misread_are_lint_errors_before_anything_runs() {
    let w = World::new("settle_ms = 500");
    let long = "x".repeat(300);
    for name in ["", "1e3", "0x1", " 0", "a\nb", "a/b", long.as_str()] {
        w.write(&[sleep_app(name, json!({}))]);
        let out = w.apply();
        expect(&out, 1);
        assert!(out.1.contains("reserved-name") || out.2.contains("reserved-name"), "{name:?}:\n{}\n{}", out.1, out.2);
    }
    assert!(w.ours().is_empty(), "nothing was started");
    w.assert_foreign_untouched();
}

#[test]
fn a_wait_ready_fork_app_passes_only_once_ready_and_one_that_never_is_fails_and_is_stopped() {
    let w = World::new("settle_ms = 500");
    let ready = w.script("ready.js", "setTimeout(() => process.send('ready'), 1500);\nsetInterval(() => {}, 1000);\n");
    let silent = w.script("silent.js", "setInterval(() => {}, 1000);\n");
    w.write(&[node_app("ready", &ready, json!({"wait_ready": true, "listen_timeout": 2500}))]);
    let out = w.apply();
    expect(&out, 0);
    assert!(out.2.contains("healthy   ready"), "{}", out.2);
    w.write(&[
        node_app("ready", &ready, json!({"wait_ready": true, "listen_timeout": 2500})),
        node_app("silent", &silent, json!({"wait_ready": true, "listen_timeout": 2000})),
    ]);
    let out = w.apply();
    expect(&out, 1);
    assert!(out.2.contains("silent") && out.2.contains("did not signal ready"), "{}", out.2);
    assert!(out.2.contains("PM2 marks it online anyway, the gate does not"), "{}", out.2);
    let silent: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "silent").collect();
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].3, "stopped", "{silent:?}");
    // The plan afterwards is truthful: the stopped app is to be started again.
    assert_eq!(w.reconcile(&["plan"]).0, 2);
    w.assert_foreign_untouched();
}

#[test]
fn a_cluster_wait_ready_app_that_never_becomes_ready_is_gated_and_stopped_and_the_next_plan_says_so() {
    let w = World::new("settle_ms = 500");
    let silent = w.script("silent.js", "setInterval(() => {}, 1000);\n");
    w.write(&[node_app("silent", &silent, json!({"exec_mode": "cluster", "instances": 2, "wait_ready": true, "listen_timeout": 6000}))]);
    // PM2 answers `prepare` only once every worker is ready or timed out: 2 × 6 s,
    // beyond the call's budget (10 s). The start's outcome is unknown; a fresh read settles it.
    let out = w.apply();
    expect(&out, 1);
    assert!(out.2.contains("did not answer"), "the start timed out:\n{}", out.2);
    let intents = w.journal().into_iter().filter(|r| r["event"] == "action" && r["call"] == "start").collect::<Vec<_>>();
    assert_eq!(intents[0]["outcome"], "unknown", "{intents:?}");
    assert!(out.2.contains("did not signal ready"), "{}", out.2);
    let silent: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "silent").collect();
    assert_eq!(silent.len(), 2, "{silent:?}");
    assert!(silent.iter().all(|p| p.3 == "stopped"), "no process that failed the gate is left running: {silent:?}");
    let plan = w.reconcile(&["plan"]);
    assert_eq!(plan.0, 2, "the next plan is not `Up to date`:\n{}", plan.1);
    w.assert_foreign_untouched();
}

/// A fork app that ignores SIGINT, so each stop (and restart) of it takes its whole
/// `kill_timeout`: a call that is still in progress at the daemon for seconds.
fn slow_stopper(w: &World, extra: Value) -> Value {
    let script = w.script("stubborn.js", "process.on('SIGINT', () => {});\nsetInterval(() => {}, 1000);\n");
    let mut app = node_app("stubborn", &script, json!({"kill_timeout": 4000}));
    for (k, v) in extra.as_object().expect("object") {
        app[k] = v.clone();
    }
    app
}

/// Waits (up to 60 s: a loaded host) until `cond` holds.
#[track_caller]
fn wait_long(mut cond: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 60 s) until the journal has an intent for `call`.
fn wait_for_intent(w: &World, call: &str) {
    let start = Instant::now();
    while !w.journal().iter().any(|r| r["event"] == "intent" && r["call"] == call && r["run"] != Value::Null) {
        assert!(start.elapsed() < Duration::from_secs(60), "no `{call}` intent was journaled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_apply(w: &World) -> std::process::Child {
    w.home
        .reconcile()
        .args(["apply", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn apply")
}

#[test]
fn an_apply_killed_between_a_call_and_its_record_is_settled_by_the_next_apply() {
    let w = World::new("settle_ms = 500");
    w.write(&[slow_stopper(&w, json!({"env": {"V": "1"}}))]);
    expect(&w.apply(), 0);
    w.write(&[slow_stopper(&w, json!({"env": {"V": "2"}}))]);
    let mut apply = spawn_apply(&w);
    wait_for_intent(&w, "restart");
    // The intent is on disk before the call is sent: wait until the daemon has the call
    // (it is stopping the app, which ignores SIGINT for kill_timeout), so the kill falls
    // between the call and its record, not between the intent and the call.
    wait_long(|| w.ours().iter().any(|p| p.0 == "stubborn" && (p.3 == "stopping" || p.2 >= 1)), "the daemon to begin the restart");
    // The restart is under way at the daemon (it waits out kill_timeout): kill -9 now.
    apply.kill().expect("kill -9");
    let _ = apply.wait();
    let journal = w.journal();
    let intent = journal.iter().rev().find(|r| r["event"] == "intent" && r["call"] == "restart").unwrap().clone();
    assert!(
        !journal.iter().any(|r| r["event"] == "action" && r["run"] == intent["run"] && r["seq"] == intent["seq"]),
        "the kill came between the call and its record"
    );
    // The daemon carries the restart out anyway; the next apply settles the record.
    wait_long(|| w.ours().iter().any(|p| p.0 == "stubborn" && p.2 >= 1 && p.3 == "online"), "the restart to be carried out");
    let next = w.apply();
    expect(&next, 0);
    let settled = w.journal().into_iter().find(|r| r["event"] == "settled" && r["of_run"] == intent["run"] && r["seq"] == intent["seq"]);
    let settled = settled.expect("a settled record for the killed call");
    assert_eq!(settled["result"], "done", "{settled}");
    assert_eq!(w.reconcile(&["plan"]).0, 0);
    w.assert_foreign_untouched();
}

/// Resumes a stopped daemon however the test ends.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        crate::support::kill(self.0, libc::SIGCONT);
    }
}

#[test]
fn a_call_to_a_paused_daemon_is_journaled_unknown_and_settled_by_the_next_apply() {
    let w = World::new("settle_ms = 500");
    // A short call timeout, so the paused daemon's silence is seen soon.
    let toml = std::fs::read_to_string(w.project.join("reconcile.toml")).unwrap().replace("timeout_ms = 10000", "timeout_ms = 2000");
    std::fs::write(w.project.join("reconcile.toml"), toml).unwrap();
    w.write(&[slow_stopper(&w, json!({"env": {"V": "1"}, "kill_timeout": 1000}))]);
    expect(&w.apply(), 0);
    w.write(&[slow_stopper(&w, json!({"env": {"V": "2"}, "kill_timeout": 1000}))]);
    let daemon = w.home.daemon_pid().expect("daemon pid");
    assert!(w.home.is_ours(daemon));
    let apply = spawn_apply(&w);
    wait_for_intent(&w, "restart");
    crate::support::kill(daemon, libc::SIGSTOP);
    let resume = Resume(daemon);
    let out = apply.wait_with_output().expect("apply ends");
    assert_eq!(out.status.code(), Some(1), "the apply cannot finish against a paused daemon");
    let journal = w.journal();
    let record = journal.iter().rev().find(|r| r["event"] == "action" && r["call"] == "restart").expect("the call's record").clone();
    assert_eq!(record["outcome"], "unknown", "{record}");
    drop(resume);
    // Resumed, the daemon carries out the call it had received.
    wait_long(|| w.ours().iter().any(|p| p.0 == "stubborn" && p.2 >= 1 && p.3 == "online"), "the restart to be carried out");
    let next = w.apply();
    expect(&next, 0);
    let settled = w.journal().into_iter().find(|r| r["event"] == "settled" && r["of_run"] == record["run"] && r["seq"] == record["seq"]);
    assert_eq!(settled.expect("settled")["result"], "done");
    w.assert_foreign_untouched();
}

#[test]
fn values_pm2_rewrites_converge_in_two_applies() {
    let w = World::new("settle_ms = 500");
    w.write(&[sleep_app(
        "rewritten",
        json!({"env": {"N": null, "FLAG": true, "NUM": 5, "OBJ": {"a": 1}}, "max_memory_restart": "100M",
            "kill_timeout": "500", "restart_delay": "0", "args": ["3600"]}),
    )]);
    let first = w.apply();
    expect(&first, 0);
    let second = w.apply();
    expect(&second, 0);
    assert_eq!(w.journal().last().unwrap()["outcome"], "noop", "{}\n{}", second.1, second.2);
    w.assert_foreign_untouched();
}
