//! Deploys (issue 13): code is desired state. Each test runs a real daemon, a project
//! in a git repository the test makes (or, for `files` mode, a directory without
//! git), and a foreign `stock-alert` that must come out untouched (same pid, restart
//! count and status, read with `pm2 jlist`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Pm2Home, free_port, get, run, run_with_timeout, sleep_app, under_load};

type Result3 = (i32, String, String, Duration);

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private daemon with `stock-alert` (namespace `stock`), and a project owning `mine`.
struct Deploy {
    home: Pm2Home,
    project: PathBuf,
    foreign: Vec<(String, String, Value, Value, Value)>,
}

impl Deploy {
    /// `git`: the project directory is a fresh git repository.
    fn new(extra_toml: &str, git_repo: bool) -> Self {
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).unwrap();
        let toml = format!(
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\nhome = {:?}\ntimeout_ms = 10000\n\n\
             [policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n\n{extra_toml}\n",
            home.path().display().to_string()
        );
        std::fs::write(project.join("reconcile.toml"), toml).unwrap();
        if git_repo {
            git(&project, &["init", "-q"]);
        }
        let foreign = home.bystanders("mine");
        Self { home, project, foreign }
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.project.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn apps(&self, apps: &[Value]) {
        self.write("ecosystem.json", &serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap());
    }

    fn commit(&self, message: &str) {
        git(&self.project, &["add", "-A"]);
        git(&self.project, &["commit", "-qm", message]);
    }

    fn reconcile(&self, args: &[&str]) -> Result3 {
        run(self.home.reconcile().args(args))
    }

    fn apply(&self, extra: &[&str]) -> Result3 {
        let mut args = vec!["apply", "--auto-approve"];
        args.extend_from_slice(extra);
        self.reconcile(&args)
    }

    fn plan(&self) -> Value {
        let (code, out, err, _) = self.reconcile(&["plan", "--format", "json"]);
        assert!(code == 0 || code == 2, "plan failed ({code}):\n{out}\n{err}");
        serde_json::from_str(&out).expect("plan json")
    }

    /// name → [(pm_id, pid, restarts)] of our processes, from `pm2 jlist`.
    fn ours(&self) -> BTreeMap<String, Vec<(u64, Value, u64)>> {
        let mut out: BTreeMap<String, Vec<(u64, Value, u64)>> = BTreeMap::new();
        for p in self.home.jlist().as_array().unwrap().iter().filter(|p| p["pm2_env"]["namespace"] == "mine") {
            out.entry(p["name"].as_str().unwrap().to_string()).or_default().push((
                p["pm_id"].as_u64().unwrap(),
                p["pid"].clone(),
                p["pm2_env"]["restart_time"].as_u64().unwrap_or(0),
            ));
        }
        out
    }

    #[track_caller]
    fn assert_foreign_untouched(&self) {
        assert_eq!(self.home.bystanders("mine"), self.foreign, "stock-alert changed");
    }
}

#[track_caller]
fn expect(result: &Result3, code: i32) {
    assert_eq!(result.0, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", result.1, result.2);
}

/// The changes of a plan that are not noop: name → attribute paths.
fn changed(plan: &Value) -> BTreeMap<String, Vec<String>> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "noop")
        .map(|c| {
            let paths = c["attributes"].as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap().to_string()).collect();
            (c["name"].as_str().unwrap().to_string(), paths)
        })
        .collect()
}

/// A node app under `dir` that idles; `exec_mode` fork or cluster.
fn node_app(name: &str, script: &str, exec_mode: &str, instances: u64, env: Value) -> Value {
    json!({"name": name, "namespace": "mine", "script": script, "exec_mode": exec_mode, "instances": instances,
        "min_uptime": 500, "max_restarts": 3, "restart_delay": 0, "kill_timeout": 1600,
        "out_file": "/dev/null", "error_file": "/dev/null", "log_date_format": "YYYY-MM-DD HH:mm:ss", "env": env})
}

const IDLE: &str = "setInterval(() => {}, 1 << 30);\n";

#[test]
fn code_changes_roll_out_exactly_the_apps_whose_code_changed() {
    let d = Deploy::new(
        "[revision.apps.api]\npaths = [\"apps/api\", \"packages/common\", \"package-lock.json\"]\n\
         [revision.apps.web]\npaths = [\"apps/web\"]\n[revision.apps.worker]\npaths = [\"apps/worker\"]\n",
        true,
    );
    d.write("apps/api/server.js", &format!("// v1\n{IDLE}"));
    d.write("apps/web/server.js", &format!("// v1\n{IDLE}"));
    d.write("apps/worker/worker.js", &format!("// v1\n{IDLE}"));
    d.write("packages/common/index.js", "module.exports = 1;\n");
    d.write("package-lock.json", "{}\n");
    let apps = |worker_env: &str| {
        vec![
            node_app("api", "apps/api/server.js", "fork", 1, json!({})),
            node_app("web", "apps/web/server.js", "cluster", 2, json!({})),
            node_app("worker", "apps/worker/worker.js", "fork", 1, json!({"QUEUE": worker_env})),
        ]
    };
    d.apps(&apps("a"));
    d.commit("v1");
    expect(&d.apply(&[]), 0);
    assert!(changed(&d.plan()).is_empty(), "a fresh plan after apply is empty");
    let first = d.ours();
    let stamps: Vec<Value> = d.home.jlist().as_array().unwrap().iter().filter(|p| p["pm2_env"]["namespace"] == "mine").map(|p| p["pm2_env"]["x_reconcile_revision"].clone()).collect();
    assert!(stamps.iter().all(Value::is_string), "every started process carries its revision: {stamps:?}");

    // A committed change in web's directory: web only, as `revision`, without downtime (cluster).
    d.write("apps/web/server.js", &format!("// v2\n{IDLE}"));
    d.commit("web v2");
    let plan = d.plan();
    assert_eq!(changed(&plan), BTreeMap::from([("web".to_string(), vec!["revision".to_string()])]), "{plan:#}");
    let web = plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == "web").unwrap();
    assert_eq!(web["action"], "update");
    assert_eq!(web["downtime"], false, "a cluster app reloads");
    let (before, after) = (web["attributes"][0]["before"].as_str().unwrap(), web["attributes"][0]["after"].as_str().unwrap());
    assert!(before.len() == 12 && after.len() == 12 && before != after, "short ids: {before} → {after}");
    let human = d.reconcile(&["plan"]);
    assert!(human.1.contains(&format!("revision: \"{before}\" → \"{after}\"")), "{}", human.1);
    let markdown = d.reconcile(&["plan", "--format", "markdown"]);
    assert!(markdown.1.contains("| `revision` |"), "{}", markdown.1);
    let applied = d.apply(&["--format", "json"]);
    expect(&applied, 0);
    let report: Value = serde_json::from_str(&applied.1).unwrap();
    let calls: Vec<(&str, &str)> = report["actions"].as_array().unwrap().iter().map(|a| (a["app"].as_str().unwrap(), a["call"].as_str().unwrap())).collect();
    assert_eq!(calls, [("web", "reload"), ("web", "reload")], "{report:#}");
    let second = d.ours();
    assert_eq!(second["api"], first["api"], "api untouched");
    assert_eq!(second["worker"], first["worker"], "worker untouched");
    assert!(second["web"].iter().zip(&first["web"]).all(|(a, b)| a.0 == b.0 && a.1 != b.1), "web reloaded in place: {second:?}");
    assert!(changed(&d.plan()).is_empty());

    // The shared package (narrowed into api's revision only), uncommitted: api only, a restart.
    d.write("packages/common/index.js", "module.exports = 2;\n");
    let plan = d.plan();
    assert_eq!(changed(&plan), BTreeMap::from([("api".to_string(), vec!["revision".to_string()])]), "{plan:#}");
    assert_eq!(plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == "api").unwrap()["downtime"], true, "a fork app restarts");
    expect(&d.apply(&[]), 0);
    let third = d.ours();
    assert_ne!(third["api"][0].1, second["api"][0].1, "api restarted");
    assert_eq!(third["web"], second["web"]);
    assert_eq!(third["worker"], second["worker"]);
    // Committing the same content is not new code.
    d.commit("common 2");
    assert!(changed(&d.plan()).is_empty(), "a commit of what already runs changes nothing");

    // An env edit of one app in the ecosystem file (a desired-state file, not code).
    d.apps(&apps("b"));
    d.commit("worker env");
    assert_eq!(changed(&d.plan()), BTreeMap::from([("worker".to_string(), vec!["env.QUEUE".to_string()])]));
    expect(&d.apply(&[]), 0);
    let fourth = d.ours();
    assert_eq!(fourth["api"], third["api"]);
    assert_eq!(fourth["web"], third["web"]);
    assert_ne!(fourth["worker"][0].1, third["worker"][0].1);

    // --restart: a rollout with nothing changed, of the named app only.
    let restarted = d.apply(&["--restart", "api"]);
    expect(&restarted, 0);
    let fifth = d.ours();
    assert_ne!(fifth["api"][0].1, fourth["api"][0].1, "api rolled out");
    assert_eq!(fifth["web"], fourth["web"]);
    assert_eq!(fifth["worker"], fourth["worker"]);
    // Unknown or foreign names: a clear error, exit 1, nothing changed.
    let foreign = d.apply(&["--restart", "stock-alert"]);
    expect(&foreign, 1);
    assert!(foreign.2.contains("--restart stock-alert") && foreign.2.contains("does not own"), "{}", foreign.2);
    let unknown = d.apply(&["--restart", "api", "--restart", "nope"]);
    expect(&unknown, 1);
    assert!(unknown.2.contains("`nope` is not an app of this project") && unknown.2.contains("api, web, worker"), "{}", unknown.2);
    assert_eq!(d.ours(), fifth, "a refused --restart changes nothing");
    d.assert_foreign_untouched();
}

#[test]
fn by_default_the_whole_work_tree_is_the_revision_less_the_desired_state_files() {
    let d = Deploy::new("", true);
    d.write("server.js", &format!("// v1\n{IDLE}"));
    d.write("lib/util.js", "1\n");
    d.apps(&[node_app("api", "server.js", "fork", 1, json!({"A": "1"}))]);
    d.commit("v1");
    expect(&d.apply(&[]), 0);
    // The journal (.reconcile/) and the ecosystem file are not code; a log is not either.
    d.apps(&[node_app("api", "server.js", "fork", 1, json!({"A": "2"}))]);
    d.write("app.log", "a line\n");
    assert_eq!(changed(&d.plan()), BTreeMap::from([("api".to_string(), vec!["env.A".to_string()])]));
    expect(&d.apply(&[]), 0);
    assert!(changed(&d.plan()).is_empty());
    // Any other file of the work tree is, committed or not.
    d.write("lib/util.js", "2\n");
    assert_eq!(changed(&d.plan()), BTreeMap::from([("api".to_string(), vec!["revision".to_string()])]));
    // `plan --base` shows the same change between two commits.
    d.commit("util 2");
    let (code, out, err, _) = d.reconcile(&["plan", "--base", "HEAD~1", "--format", "json"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(changed(&plan), BTreeMap::from([("api".to_string(), vec!["env.A".to_string(), "revision".to_string()])]), "{plan:#}");
    d.assert_foreign_untouched();
}

#[test]
fn files_mode_tracks_code_without_git_and_ignores_what_pm2_writes() {
    let d = Deploy::new("[revision]\nmode = \"files\"\nfiles = [\"dist/**\", \"package.json\"]\n", false);
    d.write("dist/server.js", &format!("// v1\n{IDLE}"));
    d.write("package.json", "{}\n");
    d.write("notes.txt", "not code\n");
    d.apps(&[node_app("api", "dist/server.js", "fork", 1, json!({})), node_app("other", "dist/server.js", "fork", 1, json!({}))]);
    expect(&d.apply(&[]), 0);
    let first = d.ours();
    d.write("dist/api.log", "written by the app\n");
    d.write("dist/api.pid", "123\n");
    d.write("notes.txt", "edited\n");
    assert!(changed(&d.plan()).is_empty(), "logs, pids and unmatched files are not code");
    // An rsync of new code: both apps share it (same globs), both roll out.
    d.write("dist/server.js", &format!("// v2\n{IDLE}"));
    let plan = d.plan();
    assert_eq!(changed(&plan).keys().collect::<Vec<_>>(), ["api", "other"], "{plan:#}");
    expect(&d.apply(&[]), 0);
    assert!(changed(&d.plan()).is_empty());
    assert_ne!(d.ours()["api"][0].1, first["api"][0].1);
    d.assert_foreign_untouched();
}

#[test]
fn a_whole_project_release_passes_the_default_guard_while_deleting_most_is_refused() {
    // Incident 000: three apps, every release restarts all three. Default [safety].
    let d = Deploy::new("", false);
    let apps = |v: &str| ["web", "worker", "analytics"].map(|n| sleep_app(n, json!({"env": {"RELEASE": v}}))).to_vec();
    d.apps(&apps("1"));
    expect(&d.apply(&[]), 0);
    d.apps(&apps("2"));
    let release = d.apply(&[]);
    expect(&release, 0);
    assert!(!release.2.contains("blast-radius"), "{}", release.2);
    assert_eq!(d.ours().values().map(|p| p[0].2).sum::<u64>(), 3, "all three restarted once");
    // With prune on, deleting two of the three is destruction: refused, nothing changed.
    std::fs::write(d.project.join("reconcile.toml"), std::fs::read_to_string(d.project.join("reconcile.toml")).unwrap() + "[safety]\nprune = true\n").unwrap();
    d.apps(&apps("2")[..1]);
    let before = d.ours();
    let refused = d.apply(&[]);
    expect(&refused, 1);
    assert!(refused.2.contains("deletes or replaces 2 of 3 live apps"), "{}", refused.2);
    assert_eq!(d.ours(), before);
    // Explicitly allowed, it goes.
    expect(&d.apply(&["--allow-blast-radius"]), 0);
    assert_eq!(d.ours().keys().collect::<Vec<_>>(), ["web"]);
    d.assert_foreign_untouched();
}

/// An HTTP server that answers its version and closes gracefully: on PM2's
/// `shutdown` message (cluster reload) or SIGINT it stops accepting, finishes what it
/// has, and exits.
fn graceful_server(version: &str) -> String {
    format!(
        "const http = require('http');\n\
         const server = http.createServer((req, res) => {{ res.setHeader('Connection', 'close'); res.end('{version}'); }});\n\
         server.listen(process.env.PORT);\n\
         const stop = () => {{ server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1500).unref(); }};\n\
         process.on('SIGINT', stop);\n\
         process.on('message', (m) => {{ if (m === 'shutdown') stop(); }});\n"
    )
}

#[test]
fn a_cluster_rollout_fails_no_more_requests_than_pm2_reload() {
    let d = Deploy::new("", true);
    let port = free_port();
    d.write("server.js", &graceful_server("v1"));
    let mut app = node_app("web", "server.js", "cluster", 2, json!({"PORT": port.to_string()}));
    app["min_uptime"] = json!(1000);
    d.apps(&[app]);
    d.commit("v1");
    expect(&d.apply(&[]), 0);
    let start = Instant::now();
    while get(port).as_deref() != Some("v1") {
        assert!(start.elapsed() < Duration::from_secs(30), "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    // PM2's own zero-downtime reload of the same app, as the baseline.
    let (pm2_ok, pm2_failed, out) = under_load(port, || run_with_timeout(&mut d.home.pm2_command(&["reload", "web"]), Duration::from_secs(60)));
    assert!(out.status.success(), "pm2 reload: {}", String::from_utf8_lossy(&out.stderr));
    // New code, rolled out by reconcile.
    d.write("server.js", &graceful_server("v2"));
    d.commit("v2");
    let (ours_ok, ours_failed, applied) = under_load(port, || d.apply(&[]));
    expect(&applied, 0);
    assert_eq!(get(port).as_deref(), Some("v2"), "the new code serves");
    // One instance at a time: each reloaded worker is healthy before the next is touched.
    let journal = std::fs::read_to_string(d.project.join(".reconcile/journal.jsonl")).unwrap();
    let lines: Vec<Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let run = lines.last().unwrap()["run"].clone();
    let steps: Vec<(String, u64)> = lines
        .iter()
        .filter(|l| l["run"] == run && (l["event"] == "action" || l["event"] == "healthy"))
        .map(|l| (l["call"].as_str().unwrap_or("healthy").to_string(), l["pm_id"].as_u64().unwrap()))
        .collect();
    let ids: Vec<u64> = steps.iter().map(|s| s.1).collect();
    assert_eq!(steps.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["reload", "healthy", "reload", "healthy"], "{steps:?}");
    assert!(ids[0] == ids[1] && ids[2] == ids[3] && ids[0] != ids[2], "{steps:?}");
    eprintln!("failed requests: reconcile apply {ours_failed} of {}, pm2 reload {pm2_failed} of {}", ours_ok + ours_failed, pm2_ok + pm2_failed);
    assert!(ours_ok > 10 && pm2_ok > 10, "the load ran: {ours_ok} and {pm2_ok} requests served");
    assert!(ours_failed <= pm2_failed, "reconcile failed {ours_failed} requests, pm2 reload {pm2_failed}");
    d.assert_foreign_untouched();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if ["dist", "logs", ".reconcile"].iter().any(|skip| name == *skip) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `examples/deploy/deploy.sh`: incident 000's deploy job (build, then `reconcile apply`),
/// run three times on a fresh host: the first release, a code change, and a re-run.
#[test]
fn the_deploy_example_plays_incident_000s_job_end_to_end() {
    let home = Pm2Home::start();
    home.start_sleep("stock-alert", "stock-alert");
    let foreign = home.bystanders("flyer-crawler");
    let dir = home.path().join("flyer-crawler");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy"), &dir);
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "v0.15.0"]);
    let port = free_port();
    let deploy = || {
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("deploy.sh"))
            .current_dir(&dir)
            .env("PM2_HOME", home.path())
            .env("HOME", &dir)
            .env("RECONCILE", env!("CARGO_BIN_EXE_reconcile"))
            .env("RECONCILE_PM2", crate::support::pm2_package())
            .env("FLYER_PORT", port.to_string())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "deploy.sh failed:\n{stdout}\n{stderr}");
        stdout
    };
    let pids = || -> BTreeMap<String, Value> {
        home.jlist()
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["pm2_env"]["namespace"] == "flyer-crawler")
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["pid"].clone()))
            .collect()
    };
    let apps = ["flyer-crawler-analytics-worker", "flyer-crawler-api", "flyer-crawler-worker"];

    // The first release: three apps created, healthy, serving.
    let first = deploy();
    assert!(first.contains("built 4 files"), "{first}");
    let started = pids();
    assert_eq!(started.keys().collect::<Vec<_>>(), apps, "{first}");
    assert_eq!(get(port).as_deref(), Some("flyer-crawler 0.15.0\n"));

    // A release with new code: one commit, every app of the code base rolls out, and
    // the default blast-radius guard lets it through.
    std::fs::write(dir.join("src/version.js"), "module.exports = { version: '0.15.1' };\n").unwrap();
    git(&dir, &["commit", "-qam", "v0.15.1"]);
    let second = deploy();
    assert!(second.contains("revision:"), "{second}");
    let released = pids();
    assert!(apps.iter().all(|a| released[*a] != started[*a]), "every app restarted: {started:?} → {released:?}");
    assert_eq!(get(port).as_deref(), Some("flyer-crawler 0.15.1\n"));

    // The same job again (a re-run, or a commit that changes nothing): nothing is touched.
    git(&dir, &["commit", "-q", "--allow-empty", "-m", "docs only"]);
    let third = deploy();
    assert!(third.contains("No changes"), "{third}");
    assert_eq!(pids(), released);
    assert_eq!(home.bystanders("flyer-crawler"), foreign, "stock-alert untouched");
}
