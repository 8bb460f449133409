//! PM2's dump after `apply` (DESIGN.md, promise 10): what `pm2 kill && pm2
//! resurrect` (what `pm2 startup` runs at boot) brings back is what was applied;
//! other namespaces' entries stay as the operator last saved them; `status` and
//! `watch` tell owned apps that differ from the dump (`unsaved`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Pm2Home, run, run_with_timeout, sleep_app};

struct World {
    home: Pm2Home,
    project: PathBuf,
}

impl World {
    /// A daemon and a project owning `mine`; `pm2` settings go under `[pm2]`.
    fn new(pm2: &str) -> Self {
        let home = Pm2Home::start();
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        let world = Self { home, project };
        world.configure(pm2);
        world
    }

    fn configure(&self, pm2: &str) {
        let toml = format!(
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n{pm2}\n\n\
             [policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
            self.home.path().display().to_string()
        );
        std::fs::write(self.project.join("reconcile.toml"), toml).expect("reconcile.toml");
    }

    fn write(&self, apps: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({"apps": apps})).expect("json");
        std::fs::write(self.project.join("ecosystem.json"), text).expect("ecosystem.json");
    }

    fn reconcile(&self, args: &[&str]) -> (i32, String, String, Duration) {
        run(self.home.reconcile().args(args))
    }

    #[track_caller]
    fn apply_ok(&self) -> String {
        let out = self.reconcile(&["apply", "--auto-approve"]);
        assert_eq!(out.0, 0, "apply\n--- stdout\n{}\n--- stderr\n{}", out.1, out.2);
        out.1
    }

    fn dump_path(&self) -> PathBuf {
        self.home.path().join("dump.pm2")
    }

    fn dump(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dump_path()).expect("dump.pm2");
        serde_json::from_str(&text).expect("dump.pm2 is JSON")
    }

    fn status(&self) -> Value {
        let out = self.reconcile(&["--format", "json", "status"]);
        assert_eq!(out.0, 0, "status\n{}\n{}", out.1, out.2);
        serde_json::from_str(&out.1).expect("status JSON")
    }

    fn journal(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.project.join(".reconcile/journal.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("journal line")).collect()
    }

    /// `pm2 kill` then `pm2 resurrect`, as a reboot with `pm2 startup` does.
    fn reboot(&self) {
        self.home.pm2_ok(&["kill"]);
        self.home.wait_for(|| !self.home.path().join("rpc.sock").exists(), "the daemon to go");
        self.home.pm2_ok(&["resurrect"]);
    }

    fn names(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .home
            .jlist()
            .as_array()
            .expect("jlist")
            .iter()
            .map(|p| (p["name"].as_str().unwrap_or_default().into(), p["pm2_env"]["namespace"].as_str().unwrap_or_default().into()))
            .collect();
        out.sort();
        out
    }
}

fn entry_names(dump: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        dump.iter().map(|e| (e["name"].as_str().unwrap_or_default().into(), e["namespace"].as_str().unwrap_or_default().into())).collect();
    out.sort();
    out
}

fn pair(name: &str, ns: &str) -> (String, String) {
    (name.to_string(), ns.to_string())
}

/// `JSON.stringify(JSON.parse(text), '', 2) === text`, run by node: the file is
/// byte for byte what `pm2 save` would write for the same entries.
fn written_as_pm2_writes(path: &Path) -> bool {
    let script = "const fs = require('fs'); const t = fs.readFileSync(process.argv[1], 'utf8'); \
                  process.exit(JSON.stringify(JSON.parse(t), '', 2) === t ? 0 : 3)";
    let out = run_with_timeout(Command::new("node").args(["-e", script, path.to_str().expect("utf-8")]), Duration::from_secs(60));
    out.status.success()
}

/// An entry without what changes on its own from one read to the next.
fn stable(entry: &Value) -> Value {
    let mut e = entry.clone();
    if let Some(map) = e.as_object_mut() {
        map.retain(|k, _| !k.starts_with("axm_"));
    }
    e
}

fn cluster_app(home: &Pm2Home) -> Value {
    let script = home.node_app();
    sleep_app("api", json!({"script": script, "args": [], "interpreter": "node", "exec_mode": "cluster", "instances": 2}))
}

#[test]
fn after_apply_a_reboot_brings_back_what_was_applied_and_only_the_saved_foreign_apps() {
    let w = World::new("");
    // The operator's own apps: one saved with `pm2 save`, one started after it.
    w.home.start_sleep("stock-alert", "stock");
    w.home.pm2_ok(&["save"]);
    let saved_by_pm2 = std::fs::read(w.dump_path()).expect("pm2 save wrote the dump");
    w.home.start_sleep("late-alert", "stock");

    w.write(&[sleep_app("web", json!({"env": {"N": "0b"}})), cluster_app(&w.home)]);
    let out = w.apply_ok();
    assert!(out.contains("Saved to PM2's dump"), "{out}");
    assert_eq!(std::fs::read(w.home.path().join("dump.pm2.bak")).expect("backup"), saved_by_pm2, "the previous dump is kept as .bak");
    assert!(written_as_pm2_writes(&w.dump_path()), "dump.pm2 is formatted as JSON.stringify(list, '', 2)");
    assert_eq!(entry_names(&w.dump()), [pair("api", "mine"), pair("api", "mine"), pair("stock-alert", "stock"), pair("web", "mine")]);
    assert!(w.dump().iter().all(|e| e.get("pm_id").is_none() && e.get("instances").is_none()), "stripped as pm2 save does");
    let record = w.journal().into_iter().rfind(|r| r["event"] == "dump").expect("a dump record");
    assert_eq!(record["outcome"], "written", "{record}");
    assert_eq!((record["apps"].as_u64(), record["processes"].as_u64(), record["kept"].as_u64()), (Some(2), Some(3), Some(1)), "{record}");

    // The owned entries are what `pm2 save` itself writes for those processes now.
    let ours: Vec<Value> = w.dump().iter().filter(|e| e["namespace"] == "mine").map(stable).collect();
    w.home.pm2_ok(&["save"]);
    let theirs: Vec<Value> = w.dump().iter().filter(|e| e["namespace"] == "mine").map(stable).collect();
    assert_eq!(ours, theirs, "the owned entries differ from what `pm2 save` writes");
    // Put back what apply wrote (pm2 save also added late-alert).
    w.home.pm2_ok(&["delete", "late-alert"]);
    w.write(&[sleep_app("web", json!({"env": {"N": "0c"}})), cluster_app(&w.home)]);
    std::fs::remove_file(w.dump_path()).expect("rm dump");
    std::fs::write(w.dump_path(), &saved_by_pm2).expect("restore the operator's dump");
    w.home.start_sleep("late-alert", "stock");

    // The deploy: env N 0b -> 0c, applied, then a reboot.
    let out = w.apply_ok();
    assert!(out.contains("Saved to PM2's dump"), "{out}");
    assert_eq!(w.status()["dump"]["state"], "current");
    w.reboot();
    w.home.wait_for(
        || {
            let list = w.home.jlist();
            let list = list.as_array().cloned().unwrap_or_default();
            list.len() == 4 && list.iter().all(|p| p["pm2_env"]["status"] == "online")
        },
        "the resurrected processes to be online",
    );
    assert_eq!(
        w.names(),
        [pair("api", "mine"), pair("api", "mine"), pair("stock-alert", "stock"), pair("web", "mine")],
        "the saved foreign app is back, the unsaved one is not"
    );
    let web = w.home.jlist().as_array().expect("jlist").iter().find(|p| p["name"] == "web").cloned().expect("web");
    assert_eq!(web["pm2_env"]["env"]["N"], "0c", "the applied env came back");
    let plan = w.reconcile(&["plan"]);
    assert_eq!(plan.0, 0, "a fresh plan after the reboot is empty\n{}\n{}", plan.1, plan.2);
    let status = w.status();
    assert_eq!(status["dump"]["state"], "current", "{}", status["dump"]);
    assert!(status["processes"].as_array().expect("rows").iter().filter(|r| r["owned"] == true).all(|r| r["unsaved"] == false), "{status}");
}

#[test]
fn with_save_off_the_dump_is_left_alone_and_nothing_is_compared() {
    let w = World::new("save = false");
    w.home.start_sleep("stock-alert", "stock");
    w.home.pm2_ok(&["save"]);
    let before = std::fs::read(w.dump_path()).expect("dump");
    w.write(&[sleep_app("web", json!({}))]);
    let out = w.apply_ok();
    assert!(!out.contains("dump"), "{out}");
    assert_eq!(std::fs::read(w.dump_path()).expect("dump"), before, "dump.pm2 untouched");
    assert!(!w.home.path().join("dump.pm2.bak").exists(), "no backup made");
    let record = w.journal().into_iter().rfind(|r| r["event"] == "dump").expect("a dump record");
    assert_eq!(record["outcome"], "off", "{record}");
    let status = w.status();
    assert!(status.get("dump").is_none(), "{status}");
    assert!(status["processes"][1].get("unsaved").is_none(), "{status}");
}

#[test]
fn status_shows_unsaved_before_any_save_and_after_a_hand_edit_and_apply_saves_it() {
    let w = World::new("save = false");
    w.write(&[sleep_app("web", json!({"env": {"MODE": "blue"}})), sleep_app("api", json!({}))]);
    w.apply_ok();
    w.configure("");
    assert!(!w.dump_path().exists());

    // Never saved.
    let status = w.status();
    assert_eq!(status["dump"]["state"], "unsaved", "{status}");
    let unsaved = status["dump"]["unsaved"].as_array().expect("unsaved list");
    assert_eq!(unsaved.len(), 2, "{status}");
    assert!(unsaved[0]["detail"].as_str().is_some_and(|d| d.contains("no dump yet")), "{status}");
    assert!(status["processes"].as_array().expect("rows").iter().all(|r| r["unsaved"] == true), "{status}");
    let human = w.reconcile(&["status"]);
    assert!(human.1.contains("unsaved: 2 owned app(s) differ from PM2's dump"), "{}", human.1);

    // A noop apply saves it.
    let out = w.apply_ok();
    assert!(out.contains("No changes") && out.contains("Saved to PM2's dump"), "{out}");
    assert_eq!(w.status()["dump"]["state"], "current");
    let again = w.apply_ok();
    assert!(again.contains("already holds the owned apps"), "{again}");
    let human = w.reconcile(&["status"]);
    assert!(human.1.contains("dump: every owned app is saved in"), "{}", human.1);

    // A hand edit: restarted with another env.
    let mut restart = w.home.pm2_command(&["restart", "web", "--namespace", "mine", "--update-env"]);
    restart.env("MODE", "green");
    let done = run_with_timeout(&mut restart, Duration::from_secs(60));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let status = w.status();
    assert_eq!(status["dump"]["state"], "unsaved", "{status}");
    let unsaved = status["dump"]["unsaved"].as_array().expect("unsaved list");
    assert_eq!(unsaved.len(), 1, "only web: {status}");
    assert_eq!(unsaved[0]["name"], "web");
    assert!(unsaved[0]["detail"].as_str().is_some_and(|d| d.contains("env.MODE")), "{status}");
    let row = |name: &str| status["processes"].as_array().expect("rows").iter().find(|r| r["name"] == name).cloned().expect("row");
    assert_eq!((row("web")["unsaved"].clone(), row("api")["unsaved"].clone()), (json!(true), json!(false)));

    // apply puts the desired env back and saves that.
    w.apply_ok();
    assert_eq!(w.status()["dump"]["state"], "current");
    let web = w.dump().into_iter().find(|e| e["name"] == "web").expect("web saved");
    assert_eq!(web["env"]["MODE"], "blue");
}

#[test]
fn an_unreadable_dump_is_not_overwritten_and_apply_says_what_to_do() {
    let w = World::new("");
    std::fs::write(w.dump_path(), b"[{\"name\": \"half-writ").expect("a broken dump");
    w.write(&[sleep_app("web", json!({}))]);
    let out = w.reconcile(&["apply", "--auto-approve"]);
    assert_eq!(out.0, 1, "{}\n{}", out.1, out.2);
    assert!(out.1.contains("Apply complete"), "the processes were applied: {}", out.1);
    assert!(out.2.contains("PM2's dump was not saved") && out.2.contains("cannot be read") && out.2.contains("mv "), "{}", out.2);
    assert_eq!(std::fs::read(w.dump_path()).expect("dump"), b"[{\"name\": \"half-writ", "left as it was");
    let record = w.journal().into_iter().rfind(|r| r["event"] == "dump").expect("a dump record");
    assert_eq!(record["outcome"], "failed", "{record}");
    let status = w.status();
    assert_eq!(status["dump"]["state"], "unreadable", "{status}");

    // The help's way out: move it aside, apply again.
    std::fs::rename(w.dump_path(), w.home.path().join("dump.pm2.broken")).expect("mv");
    let out = w.apply_ok();
    assert!(out.contains("Saved to PM2's dump"), "{out}");
    assert_eq!(entry_names(&w.dump()), [pair("web", "mine")]);
}

/// The JSON lines of a running `reconcile watch`, read on a thread.
struct WatchLines {
    _child: crate::support::Spawned,
    rx: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl WatchLines {
    fn start(w: &World) -> Self {
        use std::io::BufRead;
        let mut cmd = w.home.reconcile();
        cmd.args(["--format", "json", "watch", "--interval", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn reconcile watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"kind": "NOT JSON", "line": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { _child: crate::support::Spawned(child), rx, seen: Vec::new() }
    }

    /// The first line from `from` on that matches, within 30 s.
    #[track_caller]
    fn wait(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.seen.iter().skip(from).find(|l| pred(l)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {what} within 30 s; lines:\n{}", self.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")),
            }
        }
    }
}

#[test]
fn watch_reports_an_unsaved_app_and_its_clearing_once_apply_saves_it() {
    let w = World::new("");
    w.write(&[sleep_app("web", json!({"env": {"MODE": "blue"}})), sleep_app("api", json!({}))]);
    w.apply_ok();
    let mut watch = WatchLines::start(&w);
    watch.wait(0, "the start plan", |l| l["kind"] == "plan");
    let mark = watch.seen.len();

    let mut restart = w.home.pm2_command(&["restart", "web", "--namespace", "mine", "--update-env"]);
    restart.env("MODE", "green");
    let done = run_with_timeout(&mut restart, Duration::from_secs(60));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let line = watch.wait(mark, "an unsaved drift", |l| l["kind"] == "drift" && l["reason"] == "unsaved");
    assert_eq!((&line["app"], &line["namespace"]), (&json!("web"), &json!("mine")), "{line}");
    assert!(line["detail"].as_str().is_some_and(|d| d.contains("env.MODE")), "{line}");

    w.apply_ok();
    watch.wait(mark, "the unsaved drift to clear", |l| l["kind"] == "drift_cleared" && l["reason"] == "unsaved" && l["app"] == "web");
    let unsaved_api = watch.seen.iter().any(|l| l["kind"] == "drift" && l["reason"] == "unsaved" && l["app"] == "api");
    assert!(!unsaved_api, "api was never unsaved");
}
