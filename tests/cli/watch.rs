//! `reconcile watch` against a real daemon. Each test runs beside a foreign app
//! (`stock-alert` in a namespace we do not own, and `worker` in `theirs`, the same
//! name as one of ours) and checks at the end, with `pm2 jlist`, that each kept its
//! pid, restart count and status. The watcher's JSON lines are read from its stdout
//! with deadlines; the watcher is always killed at the end (a [`Spawned`] guard).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Pm2Home, Spawned, run, sleep_app};

/// A private daemon with foreign processes, and a project owning `mine` with `web`
/// and `worker` applied.
struct World {
    home: Pm2Home,
    project: PathBuf,
    foreign: Vec<(String, String, Value, Value, Value)>,
}

/// The reconcile.toml of the tests: owns `mine`, short thresholds.
fn project_toml(home: &Path) -> String {
    format!(
        "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n\n\
         [health]\ncrash_window_restarts = 3\ncrash_window_s = 60\n\n\
         [policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
        home.display().to_string()
    )
}

impl World {
    /// The daemon, the foreign apps, and `apps` applied (none if empty).
    fn new(apps: &[Value]) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        home.pm2_ok(&["start", "/bin/sleep", "-f", "--name", "worker", "--namespace", "theirs", "--interpreter", "none", "--", "3600"]);
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        std::fs::write(project.join("reconcile.toml"), project_toml(home.path())).expect("reconcile.toml");
        let mut world = Self { home, project, foreign: Vec::new() };
        world.foreign = world.bystanders();
        if !apps.is_empty() {
            world.write(apps);
            let out = run(world.home.reconcile().args(["apply", "--auto-approve"]));
            assert_eq!(out.0, 0, "apply failed:\n{}\n{}", out.1, out.2);
        }
        world
    }

    fn write(&self, apps: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({"apps": apps})).expect("json");
        // As editors do: a new file renamed over the old one.
        let tmp = self.project.join(".ecosystem.json.tmp");
        std::fs::write(&tmp, text).expect("ecosystem");
        std::fs::rename(&tmp, self.project.join("ecosystem.json")).expect("rename");
    }

    fn bystanders(&self) -> Vec<(String, String, Value, Value, Value)> {
        self.home.bystanders("mine")
    }

    #[track_caller]
    fn assert_bystanders_untouched(&self) {
        assert_eq!(self.bystanders(), self.foreign, "a process outside the owned namespace changed");
    }

    /// (status, restarts, args) of our app `name`, from `pm2 jlist`.
    fn ours(&self, name: &str) -> Vec<(String, u64, Value)> {
        self.home
            .jlist()
            .as_array()
            .expect("jlist array")
            .iter()
            .filter(|p| p["pm2_env"]["namespace"] == "mine" && p["name"] == name)
            .map(|p| {
                (
                    p["pm2_env"]["status"].as_str().unwrap_or_default().to_string(),
                    p["pm2_env"]["restart_time"].as_u64().unwrap_or(0),
                    p["pm2_env"]["args"].clone(),
                )
            })
            .collect()
    }

    fn watch(&self, args: &[&str]) -> Watch {
        let mut cmd = self.home.reconcile();
        cmd.args(["--format", "json", "watch"]).args(args);
        Watch::spawn(cmd)
    }
}

/// A running `reconcile watch` and the JSON lines it has written.
struct Watch {
    child: Spawned,
    rx: Receiver<Value>,
    lines: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Watch {
    fn spawn(mut cmd: std::process::Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn reconcile watch");
        let stdout = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"kind": "NOT JSON", "line": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Self { child: Spawned(child), rx, lines: Vec::new(), stderr }
    }

    fn drain(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(v) => {
                self.lines.push(v);
                while let Ok(v) = self.rx.try_recv() {
                    self.lines.push(v);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// How many lines were read so far (a mark for [`Watch::wait_after`]).
    fn mark(&mut self) -> usize {
        self.drain(Duration::from_millis(1));
        self.lines.len()
    }

    /// The first line (from `from` on) matching `pred`, within `limit`.
    #[track_caller]
    fn wait_after(&mut self, from: usize, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(found) = self.lines.iter().skip(from).find(|l| pred(l)) {
                return found.clone();
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || (!self.drain(left) && start.elapsed() >= limit) {
                if let Some(found) = self.lines.iter().skip(from).find(|l| pred(l)) {
                    return found.clone();
                }
                panic!("no {what} within {limit:?}; lines:\n{}\nstderr:\n{}", self.dump(), self.stderr());
            }
        }
    }

    #[track_caller]
    fn wait(&mut self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_after(0, what, limit, pred)
    }

    fn count(&mut self, pred: impl Fn(&Value) -> bool) -> usize {
        self.drain(Duration::from_millis(1));
        self.lines.iter().filter(|l| pred(l)).count()
    }

    fn dump(&self) -> String {
        self.lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends `signal` and waits (at most `limit`) for the exit.
    fn stop(&mut self, signal: i32, limit: Duration) -> (ExitStatus, Duration) {
        let pid = i32::try_from(self.child.0.id()).expect("pid");
        let start = Instant::now();
        crate::support::kill(pid, signal);
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(start.elapsed() < limit, "the watcher did not exit within {limit:?} of the signal");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |l| l["kind"] == kind
}

fn drift(app: &'static str, reason: &'static str) -> impl Fn(&Value) -> bool {
    move |l| l["kind"] == "drift" && l["app"] == app && l["reason"] == reason
}

fn cleared(app: &'static str, reason: &'static str) -> impl Fn(&Value) -> bool {
    move |l| l["kind"] == "drift_cleared" && l["app"] == app && l["reason"] == reason
}

const T: Duration = Duration::from_secs(20);

#[test]
fn an_owned_app_stopped_by_hand_is_reported_within_two_seconds_once_and_cleared_when_it_runs() {
    let w = World::new(&[sleep_app("web", json!({})), sleep_app("api", json!({}))]);
    let mut watch = w.watch(&[]);
    let plan = watch.wait("the start plan", T, is("plan"));
    assert_eq!(plan["trigger"], "start");
    assert_eq!(plan["changes"], json!([]), "{plan}");
    assert_eq!(watch.count(is("drift")), 0, "no drift at start:\n{}", watch.dump());

    let mark = watch.mark();
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    let line = watch.wait_after(mark, "a stopped drift", Duration::from_secs(2), drift("web", "stopped"));
    assert_eq!(line["namespace"], "mine");
    assert!(line["pm_ids"].as_array().is_some_and(|ids| ids.len() == 1), "{line}");
    assert!(line["at_ms"].is_i64(), "{line}");
    // Not every tick: once, however many reads follow.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(watch.count(drift("web", "stopped")), 1, "{}", watch.dump());

    w.home.pm2_ok(&["restart", "web", "--namespace", "mine"]);
    let gone = watch.wait("the drift to clear", T, cleared("web", "stopped"));
    assert!(gone["lasted_ms"].as_u64().is_some_and(|ms| ms > 0), "{gone}");
    assert_eq!(watch.count(drift("api", "stopped")), 0, "api was not stopped");
    assert_eq!(w.ours("web")[0].0, "online", "watch without --heal changes nothing by itself");
    w.assert_bystanders_untouched();
}

#[test]
fn an_app_restarted_by_hand_with_other_env_shows_attribute_drift() {
    let w = World::new(&[sleep_app("web", json!({"env": {"MODE": "blue"}})), sleep_app("api", json!({}))]);
    let mut watch = w.watch(&[]);
    watch.wait("the start plan", T, is("plan"));
    let mut restart = w.home.pm2_command(&["restart", "web", "--namespace", "mine", "--update-env"]);
    restart.env("MODE", "green");
    let out = crate::support::run_with_timeout(&mut restart, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = watch.wait("attribute drift", T, drift("web", "attributes"));
    let attrs = line["attributes"].as_array().expect("attributes");
    let mode = attrs.iter().find(|a| a["path"] == "env.MODE").unwrap_or_else(|| panic!("env.MODE in {line}"));
    assert_eq!((&mode["before"], &mode["after"]), (&json!("green"), &json!("blue")));
    assert!(line["detail"].as_str().is_some_and(|d| d.contains("env.MODE")), "{line}");
    assert_eq!(watch.count(|l| l["kind"] == "drift" && l["app"] == "api"), 0, "{}", watch.dump());
    w.assert_bystanders_untouched();
}

#[test]
fn a_crash_looping_app_is_reported_as_a_crash_loop() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let script = w.project.join("crash.js");
    std::fs::write(&script, "setTimeout(() => process.exit(1), 150);\n").expect("crash.js");
    let mut watch = w.watch(&[]);
    watch.wait("the start plan", T, is("plan"));
    // Started by hand in an owned namespace: PM2 restarts it again and again.
    w.home.pm2_ok(&[
        "start", script.to_str().expect("utf-8"), "--name", "loopy", "--namespace", "mine",
        "--max-restarts", "50", "--restart-delay", "100",
    ]);
    let line = watch.wait("a crash loop", T, drift("loopy", "crash_loop"));
    assert!(line["detail"].as_str().is_some_and(|d| d.contains("within 60 s (more than 3)")), "{line}");
    watch.wait("the unmanaged drift", T, drift("loopy", "unmanaged"));
    assert_eq!(watch.count(drift("loopy", "crash_loop")), 1, "told once:\n{}", watch.dump());
    w.home.pm2_ok(&["delete", "loopy", "--namespace", "mine"]);
    watch.wait("the crash loop to clear", T, cleared("loopy", "crash_loop"));
    w.assert_bystanders_untouched();
}

#[test]
fn editing_the_ecosystem_file_gives_a_new_plan_and_lint_errors_stop_planning_until_fixed() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let mut watch = w.watch(&[]);
    watch.wait("the start plan", T, is("plan"));

    let mark = watch.mark();
    w.write(&[sleep_app("web", json!({"args": "3601"})), sleep_app("api", json!({}))]);
    let plan = watch.wait_after(mark, "a plan after the edit", T, |l| l["kind"] == "plan" && l["trigger"] == "files");
    let changes: Vec<(&str, &str)> =
        plan["changes"].as_array().expect("changes").iter().map(|c| (c["name"].as_str().unwrap_or(""), c["action"].as_str().unwrap_or(""))).collect();
    assert_eq!(changes, [("api", "create"), ("web", "update")], "{plan}");
    assert_eq!(plan["summary"]["create"], 1);
    watch.wait_after(mark, "api missing", T, drift("api", "missing"));
    let web = watch.wait_after(mark, "web attributes", T, drift("web", "attributes"));
    assert_eq!(web["attributes"][0]["path"], "args");

    // A schema error: reported as lint, no plan until it is fixed.
    let mark = watch.mark();
    w.write(&[sleep_app("web", json!({"instances": "many"}))]);
    let lint = watch.wait_after(mark, "lint errors", T, |l| l["kind"] == "lint" && l["errors"].as_u64() > Some(0));
    let diag = &lint["diagnostics"][0];
    assert!(diag["file"].as_str().is_some_and(|f| f.ends_with("ecosystem.json")) && diag["line"].as_u64() > Some(0), "{lint}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(watch.count(|l| l["kind"] == "plan") , 2, "no plan while lint errors stand:\n{}", watch.dump());
    w.write(&[sleep_app("web", json!({}))]);
    let fixed = watch.wait_after(mark, "a plan after the fix", T, |l| l["kind"] == "plan" && l["trigger"] == "files");
    assert_eq!(fixed["changes"], json!([]), "{fixed}");
    watch.wait_after(mark, "the lint all-clear", T, |l| l["kind"] == "lint" && l["errors"] == 0);
    watch.wait_after(mark, "api no longer missing", T, cleared("api", "missing"));
    watch.wait_after(mark, "web attributes cleared", T, cleared("web", "attributes"));
    assert_eq!(w.ours("web")[0].2, json!(["3600"]), "watch without --heal changed nothing");
    w.assert_bystanders_untouched();
}

#[test]
fn heal_brings_a_stopped_app_back_and_gives_up_on_one_that_keeps_crashing() {
    let w = World::new(&[sleep_app("web", json!({})), sleep_app("api", json!({}))]);
    let mut watch = w.watch(&["--heal", "--heal-max-attempts", "2", "--heal-backoff", "1"]);
    watch.wait("the start plan", T, is("plan"));
    let mark = watch.mark();
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    watch.wait_after(mark, "the stopped drift", T, drift("web", "stopped"));
    let healed = watch.wait_after(mark, "a heal", T, is("healed"));
    assert_eq!((healed["apps"].clone(), healed["outcome"].clone()), (json!(["web"]), json!("success")), "{healed}");
    watch.wait_after(mark, "the drift to clear", T, cleared("web", "stopped"));
    assert_eq!(w.ours("web")[0].0, "online");
    assert_eq!(w.ours("api")[0].1, 0, "api was not touched");
    let journal = std::fs::read_to_string(w.project.join(".reconcile/journal.jsonl")).expect("the heal is journaled");
    assert!(journal.lines().any(|l| l.contains("\"event\":\"action\"") && l.contains("\"app\":\"web\"")), "{journal}");

    // An app that cannot stay up: healed, fails the health gate, backs off, given up.
    let script = w.project.join("crash.js");
    std::fs::write(&script, "console.error('boom'); process.exit(3);\n").expect("crash.js");
    let crashy = json!({"name": "crashy", "namespace": "mine", "script": script, "exec_mode": "fork",
        "min_uptime": 1000, "max_restarts": 2, "restart_delay": 0, "kill_timeout": 500,
        "out_file": "/dev/null", "error_file": w.project.join("crashy.err"), "log_date_format": "YYYY-MM-DD HH:mm:ss"});
    let mark = watch.mark();
    w.write(&[sleep_app("web", json!({})), sleep_app("api", json!({})), crashy]);
    let failed = watch.wait_after(mark, "a failed heal", Duration::from_secs(40), |l| l["kind"] == "heal_failed" && l["apps"] == json!(["crashy"]));
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(failed["reason"].as_str().is_some_and(|r| r.contains("crashy") && r.contains("boom")), "{failed}");
    let given_up = watch.wait_after(mark, "the give-up", Duration::from_secs(60), |l| l["kind"] == "heal_given_up" && l["app"] == "crashy");
    assert!(given_up["reason"].as_str().is_some_and(|r| r.contains("2 heals in a row failed")), "{given_up}");
    let attempts = |watch: &mut Watch| watch.count(|l| l["kind"] == "healing" && l["apps"].as_array().is_some_and(|a| a.iter().any(|x| x == "crashy")));
    let tried = attempts(&mut watch);
    assert_eq!(tried, 2, "{}", watch.dump());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(attempts(&mut watch), tried, "never retried after giving up:\n{}", watch.dump());
    assert_eq!(watch.count(|l| l["kind"] == "heal_given_up"), 1, "reported once");
    let crashy_now = w.ours("crashy");
    assert!(crashy_now.iter().all(|p| p.0 == "stopped"), "left stopped, not looping: {crashy_now:?}");
    assert_eq!(w.ours("web")[0].0, "online");
    w.assert_bystanders_untouched();
}

/// GET `path` from the metrics endpoint: (status line, body).
fn http_get(addr: &str, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("request");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn the_metrics_endpoint_answers_with_the_expected_series_on_loopback_only() {
    let w = World::new(&[sleep_app("web", json!({})), sleep_app("api", json!({}))]);
    let refused = run(w.home.reconcile().args(["watch", "--metrics", "0.0.0.0:9464"]));
    assert_eq!(refused.0, 1);
    assert!(refused.2.contains("0.0.0.0 is not a loopback address"), "{}", refused.2);

    let mut watch = w.watch(&["--metrics", "127.0.0.1:0"]);
    let started = watch.wait("started", T, is("started"));
    let addr = started["metrics"].as_str().expect("the bound address").to_string();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    watch.wait("the start plan", T, is("plan"));
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    watch.wait("the stopped drift", T, drift("web", "stopped"));

    let (status, body) = http_get(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(status.contains("200"), "{status}");
    for series in [
        "reconcile_drift{kind=\"stopped\"} 1",
        "reconcile_drift{kind=\"attributes\"} 0",
        "reconcile_app_restarts_total{app=\"web\",namespace=\"mine\"} 0",
        "reconcile_app_restarts_total{app=\"api\",namespace=\"mine\"} 0",
        "reconcile_app_processes{app=\"web\",namespace=\"mine\",status=\"stopped\"} 1",
        "reconcile_app_drift{app=\"web\",namespace=\"mine\",kind=\"stopped\"} 1",
        "reconcile_build_info{version=",
        "# TYPE reconcile_last_successful_plan_timestamp_seconds gauge",
        "# TYPE reconcile_heals counter",
        "reconcile_daemon_up 1",
    ] {
        assert!(body.contains(series), "{series} missing:\n{body}");
    }
    assert!(!body.contains("stock-alert"), "foreign apps are not ours to report");
    // Content negotiation: the Prometheus text format for those who ask for it.
    let (status, plain) = http_get(&addr, "GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n");
    assert!(status.contains("200") && plain.contains("# TYPE reconcile_heals_total counter") && !plain.contains("# EOF"), "{plain}");
    let stamp: i64 = body
        .lines()
        .find_map(|l| l.strip_prefix("reconcile_last_successful_plan_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a plan timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    assert!((now - stamp).abs() < 120, "{stamp} vs {now}");

    // Garbage gets an error status, and the endpoint keeps answering.
    assert!(http_get(&addr, "\u{1}\u{2}garbage\r\n\r\n").0.contains("400"));
    assert!(http_get(&addr, "GET /nope HTTP/1.1\r\n\r\n").0.contains("404"));
    assert!(http_get(&addr, "DELETE /metrics HTTP/1.1\r\n\r\n").0.contains("405"));
    drop(TcpStream::connect(&addr).expect("connect and hang up"));
    assert!(http_get(&addr, "GET /metrics HTTP/1.0\r\n\r\n").0.contains("200"));
    w.assert_bystanders_untouched();
}

#[test]
fn sigterm_and_sigint_stop_it_within_a_second_with_exit_0() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut watch = w.watch(&["--heal", "--metrics", "127.0.0.1:0"]);
        watch.wait("the start plan", T, is("plan"));
        let (status, took) = watch.stop(signal, Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "{name}: {status:?}\n{}", watch.stderr());
        assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
        let last = watch.wait("the stopping line", Duration::from_secs(2), is("stopping"));
        assert_eq!(last["signal"], name);
        assert!(!watch.stderr().contains("panicked"), "{}", watch.stderr());
    }
    assert_eq!(w.ours("web")[0].0, "online");
    w.assert_bystanders_untouched();
}

#[test]
fn the_daemon_going_away_is_reported_and_retried_not_a_crash() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let mut watch = w.watch(&[]);
    watch.wait("the start plan", T, is("plan"));
    w.home.kill_daemon_hard();
    let down = watch.wait("daemon_down", T, is("daemon_down"));
    assert!(down["retry_in_ms"].as_u64().is_some_and(|ms| ms >= 1000), "{down}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(watch.child.0.try_wait().expect("wait").is_none(), "the watcher is still running");
    assert_eq!(watch.count(is("daemon_down")), 1, "reported once:\n{}", watch.dump());
    // A new daemon in the same home (its apps are gone): seen again, with backoff.
    w.home.pm2_ok(&["ping"]);
    watch.wait("daemon_back", Duration::from_secs(40), is("daemon_back"));
    watch.wait("web missing now", T, drift("web", "missing"));
}

// ---- pull mode ----

/// Commits `files` (flat) on `branch` of a bare repository; returns the commit id.
fn commit_files(repo: &git2::Repository, branch: &str, files: &[(&str, String)], message: &str) -> String {
    let mut tree = repo.treebuilder(None).expect("treebuilder");
    for (name, text) in files {
        let blob = repo.blob(text.as_bytes()).expect("blob");
        tree.insert(name, blob, 0o100_644).expect("insert");
    }
    let tree = repo.find_tree(tree.write().expect("write tree")).expect("tree");
    let reference = format!("refs/heads/{branch}");
    let parent = repo.find_reference(&reference).ok().and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let sig = git2::Signature::now("deployer", "deploy@example.com").expect("signature");
    repo.commit(Some(&reference), &sig, &sig, message, &tree, &parents).expect("commit").to_string()
}

#[test]
fn pull_mode_applies_a_commit_that_changes_an_app() {
    let w = World::new(&[]);
    let bare_dir = w.home.path().join("deploy.git");
    let bare = git2::Repository::init_bare(&bare_dir).expect("bare repository");
    let files = |args: &str| {
        let eco = serde_json::to_string_pretty(&json!({"apps": [sleep_app("web", json!({"args": args}))]})).expect("json");
        vec![("reconcile.toml", project_toml(w.home.path())), ("ecosystem.json", eco)]
    };
    let first = commit_files(&bare, "deploy", &files("3600"), "web");
    let agent = w.home.path().join("agent");
    std::fs::create_dir_all(&agent).expect("agent dir");
    let remote = format!("file://{}", bare_dir.display());

    let mut cmd = crate::support::reconcile(&agent);
    cmd.env("PM2_HOME", w.home.path());
    cmd.args(["--format", "json", "watch", "--git-remote", &remote, "--branch", "deploy", "--git-interval", "1"]);
    let mut watch = Watch::spawn(cmd);
    let started = watch.wait("started", T, is("started"));
    assert_eq!(started["git"]["branch"], "deploy");
    let plan = watch.wait("the first plan", T, is("plan"));
    assert_eq!((plan["trigger"].as_str(), plan["git_commit"].as_str()), (Some("git"), Some(first.as_str())), "{plan}");
    watch.wait("web created", Duration::from_secs(30), |l| l["kind"] == "healed" && l["apps"] == json!(["web"]));
    assert_eq!(w.ours("web"), vec![("online".to_string(), 0, json!(["3600"]))]);

    let mark = watch.mark();
    let second = commit_files(&bare, "deploy", &files("3601"), "web: longer sleep");
    let moved = watch.wait_after(mark, "the new commit", T, is("git"));
    assert_eq!((moved["commit"].as_str(), moved["previous"].as_str()), (Some(second.as_str()), Some(first.as_str())));
    let plan = watch.wait_after(mark, "its plan", T, is("plan"));
    assert_eq!(plan["changes"][0]["action"], "update", "{plan}");
    watch.wait_after(mark, "the commit applied", Duration::from_secs(30), |l| l["kind"] == "healed" && l["apps"] == json!(["web"]));
    let web = w.ours("web");
    assert_eq!((web.len(), web[0].0.as_str(), &web[0].2), (1, "online", &json!(["3601"])), "{web:?}");
    assert_eq!(std::fs::read_to_string(agent.join(".reconcile/checkout/ecosystem.json")).ok().map(|t| t.contains("3601")), Some(true));
    let journal = std::fs::read_to_string(agent.join(".reconcile/journal.jsonl")).expect("journal beside the agent");
    assert!(journal.contains(&second), "the journal names the commit");
    w.assert_bystanders_untouched();
}

const SECRET: &str = "tok-Wx92-never-shown";

/// Every file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn pull_mode_refuses_a_wrong_password_and_a_password_in_the_url_clearly_without_showing_them() {
    let tmp = crate::support::short_tempdir();
    let repo = crate::pull::Repo::new(tmp.path());
    repo.push(&[("reconcile.toml", "x".into())], "one", None);
    let server = crate::pull::GitHttp::start(tmp.path(), "bot", SECRET, None);
    let agent = tmp.path().join("agent");
    std::fs::create_dir_all(&agent).expect("agent dir");
    let remote = format!("{}/deploy.git", server.base);

    let mut cmd = crate::support::reconcile(&agent);
    cmd.env("PM2_HOME", tmp.path().join("no-daemon")).env("RECONCILE_GIT_USERNAME", "bot").env("RECONCILE_GIT_PASSWORD", "wrong-Pw-7731");
    cmd.args(["watch", "--git-remote", &remote, "--branch", "deploy"]);
    let out = run(&mut cmd);
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("cannot fetch branch `deploy`") && out.2.contains("Authentication failed"), "{}", out.2);
    assert!(!out.1.contains("wrong-Pw-7731") && !out.2.contains("wrong-Pw-7731"), "{}", out.2);

    let with_password = remote.replace("://", &format!("://bot:{SECRET}@"));
    let mut cmd = crate::support::reconcile(&agent);
    cmd.env("PM2_HOME", tmp.path().join("no-daemon")).args(["watch", "--git-remote", &with_password, "--branch", "deploy"]);
    let out = run(&mut cmd);
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("RECONCILE_GIT_PASSWORD") && !out.2.contains(SECRET), "{}", out.2);
    assert!(files_containing(&agent, SECRET).is_empty());
    assert!(out.3 < Duration::from_secs(30));

    // A credentials file: refused while others can read it; with mode 600 the fetch
    // passes and the agent goes on to read the commit.
    let creds = tmp.path().join("git-credentials");
    std::fs::write(&creds, format!("username=bot\npassword={SECRET}\n")).expect("credentials");
    let with_file = |mode: u32| {
        std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
        let mut cmd = crate::support::reconcile(&agent);
        cmd.env("PM2_HOME", tmp.path().join("no-daemon")).args(["watch", "--git-remote", &remote, "--branch", "deploy"]);
        cmd.args(["--git-credentials-file", creds.to_str().expect("path")]);
        run(&mut cmd)
    };
    let out = with_file(0o644);
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("chmod 600"), "{}", out.2);
    let out = with_file(0o600);
    assert_eq!(out.0, 1, "{}", out.2);
    // Fetched: the error is the committed reconcile.toml's (`x`), with its position.
    assert!(out.2.contains("checkout/reconcile.toml:1:2") && !out.2.contains("cannot fetch"), "{}", out.2);
    assert!(agent.join(".reconcile/checkout/reconcile.toml").is_file(), "fetched and checked out");
    assert!(!out.1.contains(SECRET) && !out.2.contains(SECRET));
    assert!(files_containing(&agent, SECRET).is_empty(), "{:?}", files_containing(&agent, SECRET));

    let mut cmd = crate::support::reconcile(&agent);
    cmd.args(["watch", "--git-remote", &remote, "--branch", "deploy", "--path", "../elsewhere"]);
    let out = run(&mut cmd);
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("--path ../elsewhere: must be a directory inside the repository"), "{}", out.2);
}

#[test]
fn pull_mode_over_ssh_refuses_an_unknown_host_key_and_fetches_from_a_known_one() {
    let tmp = crate::support::short_tempdir();
    let repo = crate::pull::Repo::new(tmp.path());
    repo.push(&[("reconcile.toml", "x".into())], "one", None);
    let key = crate::pull::keygen(tmp.path(), "deploy_key");
    let server = crate::pull::Sshd::start(tmp.path(), &key);
    let remote = format!("ssh://{}@127.0.0.1:{}{}", server.user, server.port, repo.bare.display());
    let agent = tmp.path().join("agent");
    std::fs::create_dir_all(&agent).expect("agent dir");
    let known_hosts = tmp.path().join("known_hosts");
    let watch = |known: &str| {
        std::fs::write(&known_hosts, known).expect("known_hosts");
        let mut cmd = crate::support::reconcile(&agent);
        cmd.env("PM2_HOME", tmp.path().join("no-daemon")).args(["watch", "--git-remote", &remote, "--branch", "deploy"]);
        cmd.args(["--git-ssh-key", key.to_str().expect("path"), "--git-known-hosts", known_hosts.to_str().expect("path")]);
        run(&mut cmd)
    };
    let out = watch("");
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("cannot fetch branch `deploy`") && out.2.contains("Host key verification failed"), "{}", out.2);
    assert!(!agent.join(".reconcile/checkout/reconcile.toml").exists());
    let out = watch(&server.known_hosts_line());
    assert_eq!(out.0, 1, "{}", out.2);
    assert!(out.2.contains("checkout/reconcile.toml:1:2") && !out.2.contains("cannot fetch"), "fetched: {}", out.2);
    assert!(agent.join(".reconcile/checkout/reconcile.toml").is_file());
}

/// A repository with one directory per host: `hosts/<name>/reconcile.toml` (that
/// host's daemon) and its `ecosystem.json` with one `sleep` app of `args`.
fn host_files(host: &str, home: &Path, app: &str, args: &str) -> Vec<(String, String)> {
    let eco = serde_json::to_string_pretty(&json!({"apps": [sleep_app(app, json!({"args": args}))]})).expect("json");
    vec![(format!("hosts/{host}/reconcile.toml"), project_toml(home)), (format!("hosts/{host}/ecosystem.json"), eco)]
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, String)> {
    files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect()
}

#[test]
fn two_agents_follow_one_repository_over_https_each_applying_its_own_path_without_showing_the_password() {
    let (a, b) = (World::new(&[]), World::new(&[]));
    let tmp = crate::support::short_tempdir();
    let repo = crate::pull::Repo::new(tmp.path());
    // Host a has its own directory; b is served by a group directory, selected by its
    // labels, with a file shared from outside that directory (PM2_HOME from the unit).
    let mut files = host_files("a", a.home.path(), "web-a", "3600");
    let eco = |app: &str| serde_json::to_string_pretty(&json!({"apps": [sleep_app(app, json!({}))]})).expect("json");
    let group_toml = project_toml(b.home.path())
        .replace(&format!("home = {:?}\n", b.home.path().display().to_string()), "")
        .replace("ecosystem = [\"ecosystem.json\"]", "ecosystem = [\"../shared/common.json\"]")
        + "\n[[hosts]]\nmatch = { role = \"worker\" }\necosystem = [\"worker.json\"]\n\n[[hosts]]\nmatch = { role = \"web\" }\necosystem = [\"web.json\"]\n";
    assert!(!group_toml.contains("home ="), "{group_toml}");
    files.extend([
        ("groups/reconcile.toml".to_string(), group_toml),
        ("groups/worker.json".to_string(), eco("web-b")),
        ("groups/web.json".to_string(), eco("web-x")),
        // An explicit cwd: without one, an app from a file outside the project's
        // directory fails the heal's verification (cwd differs; see the report).
        ("shared/common.json".to_string(), serde_json::to_string(&json!({"apps": [sleep_app("common", json!({"cwd": "/tmp"}))]})).expect("json")),
    ]);
    let first = repo.push(&as_refs(&files), "two hosts", None);
    let server = crate::pull::GitHttp::start(tmp.path(), "bot", SECRET, None);
    let remote = format!("{}/deploy.git", server.base);
    let spawn = |world: &World, path: &str, labels: &[&str]| {
        let agent = world.home.path().join("agent");
        std::fs::create_dir_all(&agent).expect("agent dir");
        let mut cmd = crate::support::reconcile(&agent);
        cmd.env("PM2_HOME", world.home.path()).env("RECONCILE_GIT_USERNAME", "bot").env("RECONCILE_GIT_PASSWORD", SECRET);
        cmd.args(["--format", "json", "watch", "--git-remote", &remote, "--branch", "deploy", "--git-interval", "1"]);
        cmd.args(["--path", path, "--metrics", "127.0.0.1:0"]);
        for label in labels {
            cmd.args(["--label", label]);
        }
        (Watch::spawn(cmd), agent)
    };
    let (mut watch_a, agent_a) = spawn(&a, "hosts/a", &[]);
    let (mut watch_b, agent_b) = spawn(&b, "groups", &["role=worker", "zone=b"]);
    for (watch, app) in [(&mut watch_a, "web-a"), (&mut watch_b, "web-b")] {
        let plan = watch.wait("the first plan", T, is("plan"));
        assert_eq!(plan["git_commit"].as_str(), Some(first.as_str()), "{plan}");
        watch.wait("its app created", Duration::from_secs(40), move |l| {
            l["kind"] == "healed" && l["apps"].as_array().is_some_and(|apps| apps.contains(&json!(app)))
        });
    }
    assert_eq!(a.ours("web-a").len(), 1);
    assert_eq!((a.ours("web-b").len(), a.ours("common").len(), b.ours("web-a").len()), (0, 0, 0), "each host applies only its own path");
    assert_eq!((b.ours("web-b").len(), b.ours("common").len(), b.ours("web-x").len()), (1, 1, 0), "b: its group's files for role=worker, and the shared one");

    // A change to host a only: a applies it; b sees the commit and has nothing to do.
    let (mark_a, mark_b) = (watch_a.mark(), watch_b.mark());
    let second = repo.push(&as_refs(&host_files("a", a.home.path(), "web-a", "3601")), "a: longer sleep", None);
    let moved = watch_a.wait_after(mark_a, "the new commit", T, is("git"));
    assert_eq!(moved["commit"].as_str(), Some(second.as_str()));
    watch_a.wait_after(mark_a, "the change applied", Duration::from_secs(40), |l| l["kind"] == "healed" && l["apps"] == json!(["web-a"]));
    assert_eq!(a.ours("web-a")[0].2, json!(["3601"]));
    watch_b.wait_after(mark_b, "the new commit on b", T, is("git"));
    let plan_b = watch_b.wait_after(mark_b, "b's plan", T, is("plan"));
    assert_eq!(plan_b["changes"].as_array().map(Vec::len), Some(0), "{plan_b}");
    assert_eq!(b.ours("web-b")[0].2, json!(["3600"]));

    let started = watch_a.wait("started", T, is("started"));
    let addr = started["metrics"].as_str().expect("metrics address").to_string();
    let (_, metrics) = http_get(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(metrics.contains(&format!("reconcile_source_info{{branch=\"deploy\",commit=\"{second}\"}} 1")), "{metrics}");
    assert!(metrics.contains("reconcile_source_last_sync_timestamp_seconds "), "{metrics}");
    // Credentials: asked through the askpass script (a 401, then 200s), shown nowhere.
    let requests = server.requests();
    assert!(requests.contains(" 401\n") && requests.contains("info/refs 200"), "{requests}");
    for (watch, agent) in [(&watch_a, &agent_a), (&watch_b, &agent_b)] {
        assert!(!watch.dump().contains(SECRET) && !watch.stderr().contains(SECRET));
        assert!(files_containing(agent, SECRET).is_empty(), "{:?}", files_containing(agent, SECRET));
        assert!(agent.join(".reconcile/askpass.sh").is_file());
    }
    assert!(!metrics.contains(SECRET));
    a.assert_bystanders_untouched();
    b.assert_bystanders_untouched();
}

#[test]
fn pull_mode_applies_signed_pushes_and_refuses_an_unsigned_one_and_a_force_push_back() {
    let w = World::new(&[]);
    let tmp = crate::support::short_tempdir();
    let repo = crate::pull::Repo::new(tmp.path());
    let key = crate::pull::keygen(tmp.path(), "release_key");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let signers = tmp.path().join("allowed_signers");
    std::fs::write(&signers, format!("deploy@example.com {public}")).expect("allowed_signers");
    let files = |args: &str| {
        let eco = serde_json::to_string_pretty(&json!({"apps": [sleep_app("web", json!({"args": args}))]})).expect("json");
        vec![("reconcile.toml", project_toml(w.home.path())), ("ecosystem.json", eco)]
    };
    let signed = repo.push(&files("3600"), "web", Some(&key));
    let agent = w.home.path().join("agent");
    std::fs::create_dir_all(&agent).expect("agent dir");
    let mut cmd = crate::support::reconcile(&agent);
    cmd.env("PM2_HOME", w.home.path());
    cmd.args(["--format", "json", "watch", "--git-remote", repo.bare.to_str().expect("path"), "--branch", "deploy", "--git-interval", "1"]);
    cmd.args(["--verify-signers", signers.to_str().expect("path"), "--metrics", "127.0.0.1:0"]);
    let mut watch = Watch::spawn(cmd);
    let plan = watch.wait("the first plan", T, is("plan"));
    assert_eq!(plan["git_commit"].as_str(), Some(signed.as_str()), "{plan}");
    watch.wait("web created", Duration::from_secs(40), |l| l["kind"] == "healed" && l["apps"] == json!(["web"]));

    let mark = watch.mark();
    let unsigned = repo.push(&files("3601"), "web: unsigned", None);
    let refused = watch.wait_after(mark, "the refusal", T, is("git_refused"));
    assert_eq!((refused["commit"].as_str(), refused["reason"].as_str(), refused["current"].as_str()), (Some(unsigned.as_str()), Some("unverified"), Some(signed.as_str())), "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("not signed by a key in")), "{refused}");
    let addr = watch.wait("started", T, is("started"))["metrics"].as_str().expect("metrics").to_string();
    let (_, metrics) = http_get(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(metrics.contains("reconcile_source_failures_total{reason=\"unverified\"}"), "{metrics}");
    assert!(metrics.contains(&format!("commit=\"{signed}\"")), "{metrics}");
    // Several more fetches: still refused (told once), nothing applied.
    std::thread::sleep(Duration::from_secs(3));
    watch.drain(Duration::from_millis(1));
    let after: Vec<&Value> = watch.lines.iter().skip(mark).collect();
    assert_eq!(after.iter().filter(|l| l["kind"] == "git_refused").count(), 1, "told once");
    assert_eq!(after.iter().filter(|l| l["kind"] == "git").count(), 0, "the clone did not move");
    assert_eq!(w.ours("web")[0].2, json!(["3600"]));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(agent.join(".reconcile/source.json")).expect("source.json")).expect("json");
    assert_eq!((state["commit"].as_str(), state["refused_commit"].as_str()), (Some(signed.as_str()), Some(unsigned.as_str())), "{state}");
    assert!(state["last_error"].as_str().is_some_and(|e| e.contains("not signed")) && state["last_sync_ms"].is_i64(), "{state}");

    let mark = watch.mark();
    let resigned = repo.push(&files("3602"), "web: signed again", Some(&key));
    let moved = watch.wait_after(mark, "the signed commit", T, is("git"));
    assert_eq!(moved["commit"].as_str(), Some(resigned.as_str()));
    watch.wait_after(mark, "it applied", Duration::from_secs(40), |l| l["kind"] == "healed" && l["apps"] == json!(["web"]));
    assert_eq!(w.ours("web")[0].2, json!(["3602"]));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(agent.join(".reconcile/source.json")).expect("source.json")).expect("json");
    assert_eq!((state["commit"].as_str(), &state["refused_commit"]), (Some(resigned.as_str()), &Value::Null), "{state}");

    // A force-push back to the first (signed) commit: refused without --git-allow-rewind.
    let mark = watch.mark();
    repo.force_to(&signed);
    let refused = watch.wait_after(mark, "the rewind refused", T, is("git_refused"));
    assert_eq!((refused["commit"].as_str(), refused["reason"].as_str(), refused["current"].as_str()), (Some(signed.as_str()), Some("rewind"), Some(resigned.as_str())), "{refused}");
    assert_eq!(w.ours("web")[0].2, json!(["3602"]));
    w.assert_bystanders_untouched();
}

#[test]
fn a_heal_waits_while_another_apply_holds_the_lock_and_runs_at_a_later_read() {
    let w = World::new(&[sleep_app("web", json!({})), sleep_app("api", json!({}))]);
    let holder = reconcile::apply::Holder {
        pid: std::process::id(),
        user: "ops".into(),
        host: "here".into(),
        since_ms: 0,
        command: "reconcile apply (the test)".into(),
    };
    let lock = reconcile::apply::ApplyLock::acquire_at(&w.home.path().join("reconcile.lock"), &holder).expect("the test takes the lock");
    let mut watch = w.watch(&["--heal", "--interval", "2"]);
    watch.wait("the start plan", T, is("plan"));
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    let deferred = watch.wait("a deferred heal", T, is("heal_deferred"));
    assert_eq!(deferred["apps"], json!(["web"]));
    assert!(deferred["reason"].as_str().is_some_and(|r| r.contains("reconcile apply (the test)")), "{deferred}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(watch.count(is("heal_deferred")), 1, "told once while it waits:\n{}", watch.dump());
    assert_eq!(watch.count(is("healing")), 0, "no heal while the lock is held");
    assert_eq!(w.ours("web")[0].0, "stopped");
    drop(lock);
    watch.wait("the heal at a later read", T, |l| l["kind"] == "healed" && l["apps"] == json!(["web"]));
    assert_eq!(w.ours("web")[0].0, "online");
    w.assert_bystanders_untouched();
}

/// A node app that crashes 600 ms after start (past its min_uptime, so PM2 never counts
/// the restart toward max_restarts) while `flag` exists, and idles otherwise.
fn flagged_app(w: &World, flag: &Path, extra: Value) -> Value {
    let script = w.project.join("flagged.js");
    std::fs::write(
        &script,
        format!(
            "if (require('fs').existsSync({flag:?})) {{ setTimeout(() => {{ console.error('bind failed: EADDRINUSE 127.0.0.1:7778'); process.exit(1); }}, 600); }}\nsetInterval(() => {{}}, 1000);\n",
            flag = flag.display().to_string()
        ),
    )
    .expect("flagged.js");
    let mut app = json!({"name": "loopy", "namespace": "mine", "script": script, "exec_mode": "fork",
        "min_uptime": 300, "max_restarts": 10, "restart_delay": 200, "kill_timeout": 500,
        "out_file": "/dev/null", "error_file": w.project.join("loopy.err"), "log_date_format": "YYYY-MM-DD HH:mm:ss"});
    for (k, v) in extra.as_object().expect("object") {
        app[k] = v.clone();
    }
    app
}

#[test]
fn heal_breaks_a_crash_loop_started_by_hand_and_keeps_it_stopped_until_its_spec_changes() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let flag = w.project.join("crash.flag");
    w.write(&[sleep_app("web", json!({})), flagged_app(&w, &flag, json!({}))]);
    let out = run(w.home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(out.0, 0, "{}\n{}", out.1, out.2);
    let mut watch = w.watch(&["--heal", "--heal-backoff", "1"]);
    watch.wait("the start plan", T, is("plan"));
    // By hand: a restart into a state where it crashes after start, again and again
    // (PM2's max_restarts never stops it: each run outlives min_uptime).
    std::fs::write(&flag, "").expect("flag");
    let mark = watch.mark();
    w.home.pm2_ok(&["restart", "loopy", "--namespace", "mine"]);
    let broke = watch.wait_after(mark, "the breaker", Duration::from_secs(40), is("crash_loop_stopped"));
    assert_eq!((broke["app"].as_str(), broke["stopped"].as_bool()), (Some("loopy"), Some(true)), "{broke}");
    assert!(broke["log_tail"].to_string().contains("bind failed: EADDRINUSE"), "the last error lines: {broke}");
    let loopy = w.ours("loopy");
    assert!(loopy.iter().all(|p| p.0 == "stopped"), "{loopy:?}");
    let restarts = loopy[0].1;
    assert!(restarts <= 8, "a handful of restarts, not thousands: {restarts}");
    // Stopped, it stays stopped: no heal restarts it while its spec and code are the same.
    std::thread::sleep(Duration::from_secs(6));
    assert!(w.ours("loopy").iter().all(|p| p.0 == "stopped" && p.1 == restarts), "{:?}\n{}", w.ours("loopy"), watch.dump());
    assert_eq!(watch.count(|l| l["kind"] == "healing" && l["apps"].to_string().contains("loopy")), 0, "{}", watch.dump());
    // The cause fixed and the desired state changed: healed again.
    std::fs::remove_file(&flag).expect("unflag");
    let mark = watch.mark();
    w.write(&[sleep_app("web", json!({})), flagged_app(&w, &flag, json!({"env": {"FIXED": "1"}}))]);
    watch.wait_after(mark, "the heal after the change", Duration::from_secs(40), |l| l["kind"] == "healed" && l["apps"] == json!(["loopy"]));
    assert_eq!(w.ours("loopy")[0].0, "online");
    w.assert_bystanders_untouched();
}

#[test]
fn human_restarts_are_not_a_crash_loop() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let mut watch = w.watch(&[]);
    watch.wait("the start plan", T, is("plan"));
    for _ in 0..6 {
        w.home.pm2_ok(&["restart", "web", "--namespace", "mine"]);
    }
    assert!(w.ours("web")[0].1 >= 6);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(watch.count(drift("web", "crash_loop")), 0, "six restarts by hand are not a crash loop:\n{}", watch.dump());
    w.assert_bystanders_untouched();
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Incident 003, replayed: the c3-backend and chinvex-gateway configs as they ran
/// (only the paths and ports changed to the test's own, and the gateway's warm-up
/// shortened), the gateway's port held by a hung process. `apply` fails on the gateway
/// with its bind error and stops it; `watch --heal` gives up healing it; a human
/// restarts it and it loops — the breaker stops it after a handful of restarts, not
/// thousands, with the bind error shown.
#[test]
fn incident_003_the_loop_ends_after_a_handful_of_restarts_with_the_bind_error_shown() {
    let home = Pm2Home::start();
    home.start_sleep("stock-alert", "stock");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c3-backend");
    let dir = home.path().join("c3");
    std::fs::create_dir_all(dir.join("gateway")).expect("dir");
    std::fs::copy(repo.join("server.js"), dir.join("server.js")).expect("server.js");
    std::fs::copy(repo.join("gateway/run_gateway.py"), dir.join("gateway/run_gateway.py")).expect("gateway");
    let (backend_port, gateway_port) = (free_port(), free_port());
    let ecosystem = std::fs::read_to_string(repo.join("ecosystem.config.cjs"))
        .expect("the example")
        .replace("/home/jordan/projects/c3-backend", &dir.display().to_string())
        .replace("7780", &backend_port.to_string())
        .replace("7778", &gateway_port.to_string())
        .replace("GATEWAY_CONTEXTS: '10',", "GATEWAY_CONTEXTS: '10', GATEWAY_WARMUP_S: '1.5',");
    std::fs::write(dir.join("ecosystem.config.cjs"), ecosystem).expect("ecosystem");
    // The example's lint errors are the incident's causes; here they are let through
    // (as warnings) to show what happens at run time.
    let mut toml = format!(
        "[project]\nname = \"c3\"\necosystem = [\"ecosystem.config.cjs\"]\nnamespaces = [\"c3\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n\n\
         [health]\ncrash_window_restarts = 3\ncrash_window_s = 60\n",
        home.path().display().to_string()
    );
    for rule in ["exec-mode", "min-uptime", "max-restarts", "restart-delay"] {
        toml.push_str(&format!("\n[policies.rules.{rule}]\nseverity = \"warning\"\n"));
    }
    std::fs::write(dir.join("reconcile.toml"), toml).expect("reconcile.toml");
    let foreign = home.bystanders("c3");

    // The hung process that holds the gateway's port.
    let holder = std::process::Command::new("python3")
        .args(["-c", &format!("import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{gateway_port}))\ns.listen()\nprint('held',flush=True)\ntime.sleep(3600)")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut holder = Spawned(holder);
    let mut ready = String::new();
    BufReader::new(holder.0.stdout.as_mut().expect("stdout")).read_line(&mut ready).expect("held");
    crate::support::kill(i32::try_from(holder.0.id()).expect("pid"), libc::SIGSTOP);

    let reconcile = |args: &[&str]| {
        let mut cmd = crate::support::reconcile(&dir);
        cmd.env("PM2_HOME", home.path()).args(args);
        cmd
    };
    let gateway = || -> (String, u64) {
        let list = home.jlist();
        let p = list.as_array().expect("list").iter().find(|p| p["name"] == "chinvex-gateway").cloned().unwrap_or(Value::Null);
        (p["pm2_env"]["status"].as_str().unwrap_or("gone").to_string(), p["pm2_env"]["restart_time"].as_u64().unwrap_or(0))
    };

    // The port in the gateway's args is held: preflight refuses before anything starts,
    // naming the holder (the incident's host had no such check).
    let out = run(&mut reconcile(&["apply", "--auto-approve"]));
    assert_eq!(out.0, 1, "{}\n{}", out.1, out.2);
    let held = format!("port {gateway_port} for `chinvex-gateway` is held by pid {}", holder.0.id());
    assert!(out.2.contains(&held), "preflight names the holder:\n{}", out.2);
    assert_eq!(gateway().0, "gone", "nothing was started");

    let mut cmd = reconcile(&["--format", "json", "watch", "--heal", "--heal-max-attempts", "2", "--heal-backoff", "1"]);
    cmd.env("PM2_HOME", home.path());
    let mut watch = Watch::spawn(cmd);
    watch.wait("the start plan", T, is("plan"));
    // A human starts it by hand past the check, as on the incident's host: it loops on
    // the held port, each run outliving its min_uptime, so PM2 never stops it.
    let mark = watch.mark();
    let pm2 = home.pm2(&["start", &dir.join("ecosystem.config.cjs").display().to_string(), "--only", "chinvex-gateway"]);
    assert!(pm2.status.success(), "pm2 start: {}", String::from_utf8_lossy(&pm2.stderr));
    let broke = watch.wait_after(mark, "the breaker", Duration::from_secs(60), |l| l["kind"] == "crash_loop_stopped" && l["app"] == "chinvex-gateway");
    assert!(broke["log_tail"].to_string().contains("error while attempting to bind on address"), "{broke}");
    let (status, restarts) = gateway();
    assert_eq!(status, "stopped");
    assert!(restarts <= 15, "a handful of restarts, not thousands: {restarts}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(gateway(), ("stopped".to_string(), restarts), "the loop stays ended:\n{}", watch.dump());
    assert_eq!(home.bystanders("c3"), foreign, "stock-alert untouched");
    crate::support::kill(i32::try_from(holder.0.id()).expect("pid"), libc::SIGCONT);
    let _ = holder.0.kill();
}

#[test]
fn a_manual_stop_during_a_heals_gate_is_reported_as_stopped_not_crashed() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    let mut watch = w.watch(&["--heal"]);
    watch.wait("the start plan", T, is("plan"));
    let mark = watch.mark();
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    watch.wait_after(mark, "the heal", T, |l| l["kind"] == "healing" && l["apps"] == json!(["web"]));
    // The heal's gate lasts min_uptime (500 ms) + the settle window (5 s): stop it by hand within it.
    w.home.wait_for(|| w.ours("web").iter().any(|p| p.0 == "online"), "web to be started by the heal");
    w.home.pm2_ok(&["stop", "web", "--namespace", "mine"]);
    let failed = watch.wait_after(mark, "the heal's verdict", Duration::from_secs(40), |l| l["kind"] == "heal_failed" && l["apps"] == json!(["web"]));
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("stopped by someone else") && !reason.contains("crashed"), "{failed}");
    assert_eq!(watch.count(drift("web", "crash_loop")), 0, "{}", watch.dump());
    w.assert_bystanders_untouched();
}

#[test]
fn a_foreign_crash_loop_is_reported_and_never_acted_on_even_with_heal() {
    let w = World::new(&[sleep_app("web", json!({}))]);
    // Foreign events do not bring a read forward; the periodic re-read sees the loop.
    let mut watch = w.watch(&["--heal", "--interval", "2"]);
    watch.wait("the start plan", T, is("plan"));
    let script = w.project.join("flap.js");
    // Past PM2's default min_uptime (1 s): PM2 never stops it.
    std::fs::write(&script, "setTimeout(() => process.exit(1), 1200);\n").expect("flap.js");
    w.home.pm2_ok(&["start", script.to_str().expect("utf-8"), "--name", "flappy", "--namespace", "stock"]);
    let line = watch.wait("the foreign crash loop", Duration::from_secs(40), |l| l["kind"] == "foreign_crash_loop" && l["app"] == "flappy");
    assert_eq!(line["namespace"], "stock");
    // Still looping: reported, not stopped.
    let status = |w: &World| w.home.jlist().as_array().expect("list").iter().find(|p| p["name"] == "flappy").map(|p| p["pm2_env"]["restart_time"].as_u64().unwrap_or(0));
    let seen = status(&w).unwrap_or(0);
    w.home.wait_for(|| status(&w).unwrap_or(0) > seen, "flappy to go on restarting");
    assert_eq!(watch.count(is("crash_loop_stopped")), 0, "{}", watch.dump());
    assert_eq!(watch.count(|l| l["kind"] == "foreign_crash_loop"), 1, "told once");
    w.home.pm2_ok(&["delete", "flappy"]);
    w.assert_bystanders_untouched();
}
