//! `reconcile apply` against a real daemon: one test per promise of the safety
//! contract (DESIGN.md). Every test runs beside foreign processes — `stock-alert`
//! in a namespace we do not own, and a same-name trap (`worker` in `theirs`, while
//! a `worker` in `mine`, started by hand, is ours) — and checks afterwards that each
//! has the same pid, restart count and status, read with `pm2 jlist` (not with our
//! own client).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Pm2Home, Spawned, run, sleep_app};

/// A private daemon with the foreign processes, and a project owning `mine`.
struct World {
    home: Pm2Home,
    project: PathBuf,
    foreign: Vec<(String, String, Value, Value, Value)>,
}

impl World {
    fn new(safety: &str) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        // Ours, started by hand; then the trap: the same name in another namespace
        // (`-f`: the CLI would otherwise refuse a second `worker`).
        home.start_sleep("worker", "mine");
        home.pm2_ok(&["start", "/bin/sleep", "-f", "--name", "worker", "--namespace", "theirs", "--interpreter", "none", "--", "3600"]);
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        let toml = format!(
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n\n\
             [safety]\n{safety}\n\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
            home.path().display().to_string()
        );
        std::fs::write(project.join("reconcile.toml"), toml).expect("reconcile.toml");
        let mut world = Self { home, project, foreign: Vec::new() };
        world.foreign = world.bystanders();
        world
    }

    fn write(&self, apps: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({"apps": apps})).expect("json");
        std::fs::write(self.project.join("ecosystem.json"), text).expect("ecosystem.json");
    }

    fn reconcile(&self, args: &[&str]) -> (i32, String, String, Duration) {
        run(self.home.reconcile().args(args))
    }

    fn apply(&self, extra: &[&str]) -> (i32, String, String, Duration) {
        let mut args = vec!["apply", "--auto-approve"];
        args.extend_from_slice(extra);
        self.reconcile(&args)
    }

    fn bystanders(&self) -> Vec<(String, String, Value, Value, Value)> {
        self.home.bystanders("mine")
    }

    #[track_caller]
    fn assert_bystanders_untouched(&self) {
        assert_eq!(self.bystanders(), self.foreign, "a process outside the owned namespace changed");
    }

    /// Our processes: name → [(pm_id, pid, restarts, status)], from `pm2 jlist`.
    fn ours(&self) -> Vec<(String, u64, Value, u64, String)> {
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
                    p["pid"].clone(),
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

    fn plan_code(&self) -> i32 {
        self.reconcile(&["plan"]).0
    }
}

#[track_caller]
fn expect(result: &(i32, String, String, Duration), code: i32) {
    assert_eq!(result.0, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", result.1, result.2);
}

#[test]
fn creates_then_updates_one_app_in_place_and_a_second_apply_does_nothing() {
    let w = World::new("");
    w.write(&[
        sleep_app("web", json!({"env": {"PORT_NAME": "a", "API_TOKEN": "hunter2-secret"}})),
        sleep_app("worker", json!({})),
    ]);
    let first = w.apply(&[]);
    expect(&first, 0);
    assert!(first.2.contains("healthy   web"), "{}", first.2);
    // Progress: the gate says it is waiting, and the plan's `Plan:` line appears once.
    assert!(first.2.contains("health gate: waiting for 2 processes"), "{}", first.2);
    assert_eq!(format!("{}{}", first.1, first.2).matches("Plan: ").count(), 1, "{}\n{}", first.1, first.2);
    let ours = w.ours();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(ours.iter().all(|p| p.4 == "online"), "{ours:?}");
    assert!(ours.iter().any(|p| p.0 == "web" && p.3 == 0), "web started once: {ours:?}");
    assert_eq!(w.plan_code(), 0, "a fresh plan is empty after apply");

    // Promise 9: the same state again does nothing.
    let again = w.apply(&[]);
    expect(&again, 0);
    assert!(again.1.contains("No changes"), "{}", again.1);
    assert_eq!(w.ours(), ours, "no process was touched by the second apply");

    // One env change: exactly that app is restarted, in place (same pm_id).
    w.write(&[sleep_app("web", json!({"env": {"PORT_NAME": "b", "API_TOKEN": "hunter2-secret"}})), sleep_app("worker", json!({}))]);
    let update = w.apply(&[]);
    expect(&update, 0);
    let after = w.ours();
    let web = |v: &[(String, u64, Value, u64, String)]| v.iter().find(|p| p.0 == "web").cloned().expect("web");
    let worker = |v: &[(String, u64, Value, u64, String)]| v.iter().find(|p| p.0 == "worker").cloned().expect("worker");
    assert_eq!(web(&after).1, web(&ours).1, "updated in place: same pm_id");
    assert_ne!(web(&after).2, web(&ours).2, "web was restarted");
    assert_eq!(worker(&after), worker(&ours), "worker untouched");
    let env = w.home.jlist().as_array().unwrap().iter().find(|p| p["name"] == "web").unwrap()["pm2_env"]["env"].clone();
    assert_eq!(env["PORT_NAME"], "b");
    assert_eq!(w.plan_code(), 0);

    // Promise 4: the journal has every step, durably, and no secret.
    let journal = w.journal();
    let events: Vec<&str> = journal.iter().map(|r| r["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events.iter().filter(|e| **e == "begin").count(), 3);
    assert_eq!(events.iter().filter(|e| **e == "end").count(), 3);
    let begin = &journal[0];
    for key in ["tool_version", "user", "host", "plan", "live_before", "pm2_home"] {
        assert!(!begin[key].is_null(), "begin record has {key}: {begin}");
    }
    assert_eq!(begin["pm2_version"], crate::support::pm2_version().as_str(), "the journal names the daemon's version");
    let last_end = journal.iter().rev().find(|r| r["event"] == "end").unwrap();
    assert_eq!(last_end["outcome"], "success");
    assert!(last_end["live_after"]["processes"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(journal.iter().any(|r| r["event"] == "action" && r["call"] == "restart" && r["app"] == "web"));
    let text = std::fs::read_to_string(w.project.join(".reconcile/journal.jsonl")).unwrap();
    assert!(!text.contains("hunter2-secret"), "a secret reached the journal");
    w.assert_bystanders_untouched();
}

#[test]
fn replace_scale_and_prune_touch_only_owned_processes() {
    let w = World::new("prune = true\nmax_deletes = 5\nmax_changed_fraction = 1.0");
    w.write(&[sleep_app("worker", json!({})), sleep_app("api", json!({})), sleep_app("old", json!({}))]);
    expect(&w.apply(&[]), 0);
    let before = w.ours();

    // worker: args change is an update; api: cwd forces a replace; old: pruned;
    // batch: a new app with 3 instances, then scaled to 2.
    w.write(&[
        sleep_app("worker", json!({"args": "3601"})),
        sleep_app("api", json!({"cwd": "/tmp"})),
        sleep_app("batch", json!({"instances": 3})),
    ]);
    let out = w.apply(&[]);
    expect(&out, 0);
    let after = w.ours();
    let names: Vec<&str> = after.iter().map(|p| p.0.as_str()).collect();
    assert!(!names.contains(&"old"), "old was pruned: {names:?}");
    assert_eq!(names.iter().filter(|n| **n == "batch").count(), 3, "{names:?}");
    let api_before = before.iter().find(|p| p.0 == "api").unwrap();
    let api_after = after.iter().find(|p| p.0 == "api").unwrap();
    assert_ne!(api_before.1, api_after.1, "replace: a new pm_id");
    let cwd = w.home.jlist().as_array().unwrap().iter().find(|p| p["name"] == "api").unwrap()["pm2_env"]["pm_cwd"].clone();
    assert_eq!(cwd, "/tmp");
    assert_eq!(w.plan_code(), 0);

    w.write(&[
        sleep_app("worker", json!({"args": "3601"})),
        sleep_app("api", json!({"cwd": "/tmp"})),
        sleep_app("batch", json!({"instances": 2})),
    ]);
    expect(&w.apply(&[]), 0);
    assert_eq!(w.ours().iter().filter(|p| p.0 == "batch").count(), 2);
    w.write(&[
        sleep_app("worker", json!({"args": "3601"})),
        sleep_app("api", json!({"cwd": "/tmp"})),
        sleep_app("batch", json!({"instances": 4})),
    ]);
    expect(&w.apply(&[]), 0);
    assert_eq!(w.ours().iter().filter(|p| p.0 == "batch").count(), 4);
    assert_eq!(w.plan_code(), 0, "scaled up by duplicate: the clones plan as noop");
    w.assert_bystanders_untouched();
}

#[test]
fn the_blast_radius_guard_refuses_before_the_first_action_unless_allowed() {
    let w = World::new("prune = true\nmax_deletes = 1");
    w.write(&[sleep_app("a", json!({})), sleep_app("b", json!({})), sleep_app("c", json!({}))]);
    expect(&w.apply(&[]), 0);
    let before = w.ours();
    w.write(&[sleep_app("a", json!({}))]);
    let refused = w.apply(&[]);
    expect(&refused, 1);
    assert!(refused.2.contains("blast-radius guard") && refused.2.contains("--allow-blast-radius"), "{}", refused.2);
    assert_eq!(w.ours(), before, "nothing was changed");
    assert_eq!(w.journal().last().unwrap()["outcome"], "refused");
    let allowed = w.apply(&["--allow-blast-radius", "--format", "json"]);
    expect(&allowed, 0);
    let report: Value = serde_json::from_str(&allowed.1).expect("--format json prints one JSON object");
    assert_eq!(report["outcome"], "success", "{report:#}");
    let deleted: Vec<&str> = report["actions"].as_array().unwrap().iter().filter(|a| a["call"] == "delete").filter_map(|a| a["app"].as_str()).collect();
    assert_eq!(deleted, ["b", "c"], "{report:#}");
    // The hand-started `worker` in `mine` was neither started nor adopted by this
    // project: prune never deletes it (promise 11).
    let names: Vec<String> = w.ours().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["worker", "a"]);
    w.assert_bystanders_untouched();
}

#[test]
fn a_second_concurrent_apply_exits_at_once_naming_the_holder() {
    let w = World::new("");
    // A long health gate keeps the first apply holding the lock.
    w.write(&[sleep_app("slow", json!({"min_uptime": 3000}))]);
    let spawn = || {
        let mut cmd = w.home.reconcile();
        cmd.args(["apply", "--auto-approve"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Spawned(cmd.spawn().expect("spawn reconcile"))
    };
    let first = spawn();
    let first_pid = first.0.id();
    // Wait until it holds the lock (its holder record is written).
    let lock = w.home.path().join("reconcile.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("\"pid\":{first_pid}"))) {
        assert!(start.elapsed() < Duration::from_secs(20), "the first apply never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = w.apply(&[]);
    expect(&second, 1);
    assert!(second.2.contains("another apply is running") && second.2.contains(&format!("pid {first_pid}")), "{}", second.2);
    assert!(second.3 < Duration::from_secs(5), "the second apply did not wait: {:?}", second.3);
    let mut first = first;
    let status = first.0.wait().expect("first apply");
    assert_eq!(status.code(), Some(0), "the first apply succeeded");
    let slow: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "slow").collect();
    assert_eq!(slow.len(), 1, "started once: {slow:?}");
    assert_eq!(slow[0].3, 0, "never restarted");
    w.assert_bystanders_untouched();
}

#[test]
fn preflight_refuses_a_port_held_by_another_process_and_names_it() {
    let w = World::new("");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    w.write(&[sleep_app("web", json!({"env": {"PORT": port}}))]);
    let out = w.apply(&[]);
    expect(&out, 1);
    let me = std::process::id();
    assert!(out.2.contains(&format!("port {port}")) && out.2.contains(&format!("pid {me}")), "{}", out.2);
    assert!(!w.ours().iter().any(|p| p.0 == "web"), "nothing was started");
    drop(holder);
    expect(&w.apply(&[]), 0);
    w.assert_bystanders_untouched();
}

/// Incident 003: the app exits at once because its port is taken by a hung process
/// (here: a listener this test holds; the app does not declare the port, so the
/// preflight cannot see it). PM2 alone restarted it 3,446 times.
#[test]
fn a_crash_looping_app_is_stopped_after_a_few_restarts_and_the_apply_fails_with_its_error() {
    let w = World::new("");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let script = w.project.join("server.js");
    std::fs::write(
        &script,
        format!("require('net').createServer().listen({port}, '127.0.0.1').on('error', (e) => {{ console.error('listen failed: ' + e.code); process.exit(1); }});\n"),
    )
    .unwrap();
    w.write(&[
        sleep_app("fine", json!({})),
        json!({"name": "crashy", "namespace": "mine", "script": script, "exec_mode": "fork",
            "min_uptime": 2000, "max_restarts": 10, "restart_delay": 0, "kill_timeout": 500}),
    ]);
    let out = w.apply(&[]);
    expect(&out, 1);
    assert!(out.3 < Duration::from_secs(30), "bounded time: {:?}", out.3);
    assert!(out.2.contains("unhealthy") && out.2.contains("crashy"), "{}", out.2);
    assert!(out.2.contains("listen failed: EADDRINUSE"), "the app's last error lines are shown:\n{}", out.2);
    let crashy: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "crashy").collect();
    assert_eq!(crashy.len(), 1);
    assert_eq!(crashy[0].4, "stopped", "{crashy:?}");
    assert!(crashy[0].3 <= 3, "only a few restarts, got {}", crashy[0].3);
    std::thread::sleep(Duration::from_millis(500));
    let later: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "crashy").collect();
    assert_eq!(later[0].3, crashy[0].3, "it stays stopped");
    let fine: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "fine").collect();
    assert_eq!(fine[0].4, "online", "the app changed before it stays as it is");
    let journal = w.journal();
    assert!(journal.iter().any(|r| r["event"] == "unhealthy" && r["app"] == "crashy" && r["stopped"] == true));
    assert_eq!(journal.last().unwrap()["outcome"], "failed");
    // Promise 9: once the cause is gone, apply converges.
    drop(holder);
    expect(&w.apply(&[]), 0);
    assert_eq!(w.plan_code(), 0);
    w.assert_bystanders_untouched();
}

#[test]
fn rollback_restores_the_previous_spec_of_an_app_whose_update_crashes() {
    let w = World::new("");
    let script = w.project.join("app.js");
    std::fs::write(&script, "if (process.env.BROKEN === '1') { console.error('bad config'); process.exit(2); }\nsetInterval(() => {}, 1 << 30);\n").unwrap();
    let app = |broken: &str| {
        json!({"name": "svc", "namespace": "mine", "script": script, "exec_mode": "fork", "min_uptime": 500,
            "max_restarts": 5, "restart_delay": 0, "kill_timeout": 500, "env": {"BROKEN": broken}})
    };
    w.write(&[app("0")]);
    expect(&w.apply(&[]), 0);
    w.write(&[app("1")]);
    let out = w.apply(&["--rollback"]);
    expect(&out, 1);
    assert!(out.2.contains("rolled back svc"), "{}", out.2);
    let svc: Vec<_> = w.ours().into_iter().filter(|p| p.0 == "svc").collect();
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0].4, "online", "the previous spec runs again");
    let env = w.home.jlist().as_array().unwrap().iter().find(|p| p["name"] == "svc").unwrap()["pm2_env"]["env"].clone();
    assert_eq!(env["BROKEN"], "0");
    assert!(w.journal().iter().any(|r| r["event"] == "rolled_back" && r["app"] == "svc" && r["error"].is_null()));
    assert_eq!(w.plan_code(), 2, "the desired (broken) change is still pending");
    w.assert_bystanders_untouched();
}

#[test]
fn a_saved_plan_is_applied_exactly_or_refused_when_anything_moved() {
    let w = World::new("");
    w.write(&[sleep_app("web", json!({}))]);
    expect(&w.apply(&[]), 0);
    let plan_file = w.project.join("plan.json");
    let plan_path = plan_file.to_str().unwrap();

    // Live state moved: the owned app restarted by hand after the plan.
    w.write(&[sleep_app("web", json!({"args": "3601"}))]);
    expect(&w.reconcile(&["plan", "--out", plan_path]), 2);
    w.home.pm2_ok(&["restart", "web", "--namespace", "mine"]);
    let before = w.ours();
    let stale = w.apply(&[plan_path]);
    expect(&stale, 1);
    assert!(stale.2.contains("is stale") && stale.2.contains("process `web`") && stale.2.contains("restarts 0 → 1"), "{}", stale.2);
    assert_eq!(w.ours(), before, "nothing changed");

    // Desired state moved.
    expect(&w.reconcile(&["plan", "--out", plan_path]), 2);
    w.write(&[sleep_app("web", json!({"args": "3602"}))]);
    let stale = w.apply(&[plan_path]);
    expect(&stale, 1);
    assert!(stale.2.contains("desired app `web` changed"), "{}", stale.2);

    // A fresh plan applies.
    expect(&w.reconcile(&["plan", "--out", plan_path]), 2);
    expect(&w.apply(&[plan_path]), 0);
    assert_eq!(w.plan_code(), 0);

    // A file that is not a plan is a clear error.
    std::fs::write(&plan_file, "{\"changes\": 3}").unwrap();
    let bad = w.apply(&[plan_path]);
    expect(&bad, 1);
    assert!(bad.2.contains("plan.json:1:") && bad.2.contains("not a plan saved by"), "{}", bad.2);
    w.assert_bystanders_untouched();
}

#[test]
fn without_a_terminal_or_auto_approve_apply_refuses() {
    let w = World::new("");
    w.write(&[sleep_app("web", json!({}))]);
    let out = w.reconcile(&["apply"]);
    expect(&out, 1);
    assert!(out.2.contains("--auto-approve"), "{}", out.2);
    assert!(!w.ours().iter().any(|p| p.0 == "web"));
    w.assert_bystanders_untouched();
}

#[test]
fn verification_warns_of_a_foreign_crash_loop_and_fails_on_a_bystander_a_call_restarted() {
    let w = World::new("");
    // A foreign app that exits every 300 ms: its restart count moves on its own. The
    // apply touched nothing of it: a warning with its figures, not a failed apply.
    w.home.pm2_ok(&["start", "/bin/sleep", "--name", "flappy", "--namespace", "stock", "--interpreter", "none", "--", "0.3"]);
    w.write(&[sleep_app("web", json!({}))]);
    let out = w.apply(&[]);
    expect(&out, 0);
    assert!(out.1.contains("warning") && out.1.contains("`flappy`") && out.1.contains("by itself") && out.1.contains("restarts"), "{}\n{}", out.1, out.2);
    assert!(!out.1.contains("`stock-alert`"), "only the process that really changed is named:\n{}", out.1);
    assert!(w.ours().iter().any(|p| p.0 == "web"), "web was applied");
    // A restart someone asked for during an apply (`created_at` moves) is a problem.
    w.home.pm2_ok(&["delete", "flappy"]);
    w.write(&[sleep_app("web", json!({"args": "3601"}))]);
    let mut apply = w.home.reconcile().args(["apply", "--auto-approve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("apply");
    let start = Instant::now();
    while !std::fs::read_to_string(w.project.join(".reconcile/journal.jsonl")).unwrap_or_default().lines().last().is_some_and(|l| l.contains("\"event\":\"intent\"") || l.contains("\"event\":\"action\"")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the apply did not start acting");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.home.pm2_ok(&["restart", "stock-alert"]);
    let _ = apply.wait();
    let mut stdout = String::new();
    use std::io::Read;
    apply.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.contains("outside the owned namespaces changed") && stdout.contains("`stock-alert`"), "{stdout}");
}

#[test]
fn an_apply_killed_midway_leaves_a_journal_of_what_it_did_and_the_next_apply_converges() {
    let w = World::new("");
    let apps: Vec<Value> = (0..4).map(|i| sleep_app(&format!("app{i}"), json!({"min_uptime": 4000}))).collect();
    w.write(&apps);
    let mut cmd = w.home.reconcile();
    cmd.args(["apply", "--auto-approve"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut apply = Spawned(cmd.spawn().expect("spawn"));
    let child = &mut apply.0;
    let start = Instant::now();
    while !w.journal().iter().any(|r| r["event"] == "action") {
        assert!(start.elapsed() < Duration::from_secs(20), "no action was journaled");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill the apply"); // SIGKILL: no chance to clean up
    child.wait().expect("reap");
    let journal = w.journal();
    assert_eq!(journal[0]["event"], "begin");
    assert!(journal.iter().all(|r| r["event"] != "end"), "killed before its end record");
    let started: Vec<&str> = journal.iter().filter(|r| r["event"] == "action").filter_map(|r| r["app"].as_str()).collect();
    let live: Vec<String> = w.ours().into_iter().map(|p| p.0).collect();
    for app in &started {
        assert!(live.iter().any(|l| l == app), "journaled {app} but it is not live: {live:?}");
    }
    // The lock died with it; the next apply finishes the job.
    let again = w.apply(&[]);
    expect(&again, 0);
    assert_eq!(w.ours().iter().filter(|p| p.0.starts_with("app")).count(), 4);
    assert_eq!(w.plan_code(), 0);
    w.assert_bystanders_untouched();
}

#[test]
fn a_cluster_app_is_reloaded_not_restarted() {
    let w = World::new("");
    let app_js = w.home.node_app();
    let app = |v: &str| {
        json!({"name": "api", "namespace": "mine", "script": app_js, "exec_mode": "cluster", "instances": 2,
            "min_uptime": 500, "max_restarts": 3, "restart_delay": 0, "kill_timeout": 500, "env": {"V": v}})
    };
    w.write(&[app("1")]);
    expect(&w.apply(&[]), 0);
    w.write(&[app("2")]);
    let out = w.apply(&[]);
    expect(&out, 0);
    let calls: Vec<String> = w
        .journal()
        .iter()
        .filter(|r| r["event"] == "action" && r["action"] == "update")
        .filter_map(|r| r["call"].as_str().map(str::to_string))
        .collect();
    assert_eq!(calls, vec!["reload", "reload"], "zero-downtime reloads");
    assert_eq!(w.plan_code(), 0);
    w.assert_bystanders_untouched();
}

#[test]
fn apply_refuses_a_snapshot_and_a_missing_project() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crate::support::reconcile(dir.path()).args(["apply", "--auto-approve"]));
    expect(&out, 1);
    assert!(out.2.contains("apply needs a reconcile.toml"), "{}", out.2);
    let out = run(crate::support::reconcile(dir.path()).args(["--live", "x.json", "apply"]));
    expect(&out, 1);
    assert!(out.2.contains("cannot run on a --live snapshot"), "{}", out.2);
}

/// On a terminal, apply asks and acts only on `yes`. The terminal is a pty made by
/// util-linux `script` (package bsdutils, essential on Debian).
#[test]
fn on_a_terminal_apply_asks_and_acts_only_on_yes() {
    let w = World::new("");
    w.write(&[sleep_app("web", json!({}))]);
    let ask = |answer: &str| {
        // The environment `reconcile` gets in every test, carried through script(1).
        let cmd = w.home.reconcile();
        let bin = env!("CARGO_BIN_EXE_reconcile");
        let mut script = Command::new("script");
        script
            .args(["-qec", &format!("{bin} apply"), "/dev/null"])
            .current_dir(w.project.as_path())
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Spawned(script.spawn().expect("script(1)"));
        {
            use std::io::Write;
            let stdin = child.0.stdin.as_mut().expect("stdin");
            // Give apply time to reach its question; the pty buffers the answer anyway.
            stdin.write_all(format!("{answer}\n").as_bytes()).expect("answer");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.0.try_wait().expect("wait") {
                let mut out = String::new();
                std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout"), &mut out).expect("read");
                return (status.code(), out);
            }
            assert!(Instant::now() < deadline, "apply on a terminal did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (code, out) = ask("no");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Only 'yes' is accepted") && out.contains("not confirmed"), "{out}");
    assert!(!w.ours().iter().any(|p| p.0 == "web"), "nothing was started");
    let (code, out) = ask("yes");
    assert_eq!(code, Some(0), "{out}");
    assert!(w.ours().iter().any(|p| p.0 == "web" && p.4 == "online"), "{out}");
    w.assert_bystanders_untouched();
}
