//! `reconcile import` against a real daemon: apps started by plain `pm2 start` commands
//! with a spread of options are imported, and `plan` right after shows no changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Pm2Home, reconcile, run_with_timeout};

/// A daemon with apps started the way operators start them by hand, plus one app in a
/// namespace that is not imported.
fn hand_started() -> (Pm2Home, PathBuf) {
    let home = Pm2Home::start();
    let proj = home.path().join("proj");
    std::fs::create_dir_all(proj.join("sub")).unwrap();
    std::fs::write(proj.join("app.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    std::fs::write(proj.join("loop.sh"), "while true; do sleep 60; done\n").unwrap();
    let logs = home.path().join("custom-logs");
    let pm2 = |dir: &Path, env: &[(&str, &str)], args: &[&str]| {
        let mut cmd: Command = home.pm2_command(args);
        cmd.current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(out.status.success(), "pm2 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // Cluster, two instances, node args, a memory limit, a combined log, env from the shell.
    pm2(&proj, &[("API_TOKEN", "s3cret-value"), ("PORT", "4100")], &[
        "start", "app.js", "--name", "web", "--namespace", "shop", "-i", "2", "--max-memory-restart", "200M",
        "--node-args=--max-old-space-size=64", "--log",
    ]);
    // A binary with interpreter none and arguments.
    pm2(&proj, &[("FOO", "bar")], &["start", "/bin/sleep", "--name", "sleeper", "--namespace", "shop", "--interpreter", "none", "--", "3600"]);
    // Fork mode node app from another cwd, custom logs, restart options, script args.
    let out_log = logs.join("forky-out.log");
    let err_log = logs.join("forky-err.log");
    pm2(&proj.join("sub"), &[], &[
        "start", "../app.js", "--name", "forky", "--namespace", "jobs", "-o", out_log.to_str().unwrap(), "-e",
        err_log.to_str().unwrap(), "--kill-timeout", "3000", "--no-autorestart", "--restart-delay", "2500", "--", "--port", "4200",
    ]);
    // A shell script (bash by extension) with explicit interpreter node args absent.
    pm2(&proj, &[], &["start", "loop.sh", "--name", "looper", "--namespace", "jobs"]);
    // Someone else's app, never imported.
    home.start_sleep("stock-alert", "other");
    for name in ["web", "sleeper", "forky", "looper", "stock-alert"] {
        home.wait_status(name, "online");
    }
    (home, proj)
}

fn import(home: &Pm2Home, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = reconcile(cwd);
    cmd.env("PM2_HOME", home.path()).arg("import").args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `reconcile plan --format json` in `dir` (no PM2_HOME: the imported reconcile.toml says where the daemon is).
fn plan(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let out = run_with_timeout(reconcile(dir).args(extra).args(["plan", "--format", "json"]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let plan = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), plan, stderr)
}

fn assert_all_noop(plan: &Value, names: &[&str]) {
    let changes = plan["changes"].as_array().unwrap();
    let mut seen: Vec<&str> = changes.iter().map(|c| c["name"].as_str().unwrap()).collect();
    seen.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want, "{plan:#}");
    for change in changes {
        assert_eq!(change["action"], "noop", "{change:#}");
    }
    assert_eq!(plan["unmanaged"], serde_json::json!([]), "{plan:#}");
}

/// pid and restart count of every process: import must change nothing.
fn fingerprint(home: &Pm2Home) -> Vec<(String, Value, Value)> {
    home.jlist()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["pid"].clone(), p["pm2_env"]["restart_time"].clone()))
        .collect()
}

const IMPORTED: &[&str] = &["forky", "looper", "sleeper", "web"];

#[test]
fn imported_apps_plan_clean_in_every_format() {
    let (home, proj) = hand_started();
    let before = fingerprint(&home);
    for (format, file) in [("yaml", "ecosystem.config.yaml"), ("json", "ecosystem.config.json"), ("js", "ecosystem.config.cjs")] {
        let out = home.path().join(format!("out-{format}"));
        let (code, stdout, stderr) = import(&home, &proj, &["--namespace", "shop", "--namespace", "jobs", "--as", format, "--out", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{format}: {stdout}\n{stderr}");
        assert!(stdout.contains("Imported 4 apps from shop, jobs") && stdout.contains("1 secret value"), "{stdout}");
        assert!(!stderr.contains("will not plan clean"), "{format}: {stderr}");
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(!text.contains("stock-alert"), "an app of another namespace was imported:\n{text}");
        assert!(text.contains("s3cret-value"), "the secret is written as it is");
        match format {
            "json" => assert!(stderr.contains("`web`: secret: `API_TOKEN`"), "json flags secrets on stderr: {stderr}"),
            _ => {
                let flagged = text.lines().collect::<Vec<_>>().windows(2).any(|w| w[0].contains("secret: `API_TOKEN`") && w[1].contains("API_TOKEN"));
                assert!(flagged, "{format}: no comment above the secret:\n{text}");
            }
        }
        // Only what the apps set: none of the daemon's environment.
        for inherited in ["PM2_HOME", "\"PATH\"", "PATH:", "unique_id", "HOME"] {
            assert!(!text.contains(inherited), "{format}: inherited `{inherited}` was imported:\n{text}");
        }
        let (code, plan, stderr) = plan(&out, &[]);
        assert_eq!(code, 0, "{format}: plan after import\n{stderr}\n{plan:#}\n{text}");
        assert_all_noop(&plan, IMPORTED);
        assert_eq!(plan["ignored"][0]["name"], "stock-alert", "{plan:#}");
        assert_eq!(plan["basis"]["live_source"], "daemon");
    }
    assert_eq!(fingerprint(&home), before, "import or plan changed a process");

    // Applying the imported state restarts nothing.
    let out = run_with_timeout(reconcile(&home.path().join("out-yaml")).args(["apply", "--auto-approve"]), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "apply after import\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("No changes"), "{stdout}");
    assert_eq!(fingerprint(&home), before, "apply of the imported state touched a process");

    // What the YAML says, option by option.
    let yaml = std::fs::read_to_string(home.path().join("out-yaml/ecosystem.config.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
    let app = |name: &str| doc["apps"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap().clone();
    let web = app("web");
    assert_eq!((web["exec_mode"].as_str(), web["instances"].as_u64()), (Some("cluster"), Some(2)));
    assert_eq!(web["max_memory_restart"], "200M");
    assert_eq!(web["node_args"], serde_json::json!(["--max-old-space-size=64"]));
    assert_eq!(web["env"]["PORT"], "4100");
    assert_eq!(web["log_file"], true);
    assert_eq!(web["script"], "./app.js");
    let sleeper = app("sleeper");
    assert_eq!((sleeper["interpreter"].as_str(), sleeper["script"].as_str()), (Some("none"), Some("/bin/sleep")));
    assert_eq!(sleeper["args"], serde_json::json!(["3600"]));
    assert_eq!(sleeper["env"], serde_json::json!({"FOO": "bar"}));
    let forky = app("forky");
    assert_eq!(forky["cwd"], proj.join("sub").to_str().unwrap());
    assert_eq!(forky["args"], serde_json::json!(["--port", "4200"]));
    assert_eq!((forky["kill_timeout"].as_u64(), forky["restart_delay"].as_u64(), forky["autorestart"].as_bool()), (Some(3000), Some(2500), Some(false)));
    assert!(forky["out_file"].as_str().unwrap().ends_with("custom-logs/forky-out.log"));
    assert_eq!(forky["exec_mode"], "fork");
    assert!(forky.get("instances").is_none() && forky.get("error_file").is_some());
    assert_eq!(app("looper")["interpreter"], "bash");
    for app in doc["apps"].as_array().unwrap() {
        assert!(app.get("out_file").is_some() || app["name"] != "forky");
        assert!(app.get("pid_file").is_none(), "default pid paths are not written: {app}");
    }

    // The rules the running apps break are warnings in the new reconcile.toml, so plan ran.
    let toml = std::fs::read_to_string(home.path().join("out-yaml/reconcile.toml")).unwrap();
    assert!(toml.contains("[policies.rules.min-uptime]\nseverity = \"warning\""), "{toml}");
    assert!(toml.contains(&format!("home = {:?}", home.path().display().to_string())), "{toml}");
}

#[test]
fn a_snapshot_imports_and_plans_clean_against_itself() {
    let (home, proj) = hand_started();
    let snapshot = home.path().join("jlist.json");
    std::fs::write(&snapshot, serde_json::to_vec(&home.jlist()).unwrap()).unwrap();
    let out = home.path().join("out-snap");
    let mut cmd = reconcile(&proj);
    cmd.args(["--live", snapshot.to_str().unwrap(), "import", "--namespace", "shop,jobs", "--out", out.to_str().unwrap(), "--format", "json"]);
    let result = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let report: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(report["apps"], serde_json::json!(["web", "sleeper", "forky", "looper"]));
    assert!(report["secrets"].as_array().unwrap().contains(&serde_json::json!("web env API_TOKEN")), "{report:#}");
    let toml = std::fs::read_to_string(out.join("reconcile.toml")).unwrap();
    assert!(toml.contains("# home ="), "a snapshot names no daemon home: {toml}");
    let (code, plan, stderr) = plan(&out, &["--live", snapshot.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}\n{plan:#}");
    assert_all_noop(&plan, IMPORTED);
    assert_eq!(plan["basis"]["live_source"], "snapshot");
}

#[test]
fn import_refuses_to_overwrite_and_to_import_an_empty_namespace() {
    let home = Pm2Home::start();
    home.start_sleep("one", "shop");
    home.wait_status("one", "online");
    let out = home.path().join("out");
    let (code, _, stderr) = import(&home, home.path(), &["--namespace", "shpo", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("namespace `shpo` has no live process (live namespaces: shop)"), "{stderr}");
    assert!(!out.exists(), "nothing is written on an error");

    let (code, _, stderr) = import(&home, home.path(), &["--namespace", "shop", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(out.join("reconcile.toml"), "# mine\n").unwrap();
    let eco_before = std::fs::read_to_string(out.join("ecosystem.config.yaml")).unwrap();
    let (code, _, stderr) = import(&home, home.path(), &["--namespace", "shop", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("reconcile.toml")).unwrap(), "# mine\n");
    assert_eq!(std::fs::read_to_string(out.join("ecosystem.config.yaml")).unwrap(), eco_before);

    let (code, _, stderr) = import(&home, home.path(), &["--namespace", "shop", "--out", out.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::read_to_string(out.join("reconcile.toml")).unwrap().contains("namespaces = [\"shop\"]"));

    // The report's format is the global --format; the file's is --as.
    let (code, _, stderr) = import(&home, home.path(), &["--namespace", "shop", "--as", "toml"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("yaml") && stderr.contains("json") && stderr.contains("js"), "{stderr}");
    let mut cmd = reconcile(home.path());
    cmd.env("PM2_HOME", home.path()).args(["--format", "markdown", "import", "--namespace", "shop", "--out", "x"]);
    let result = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert_eq!(result.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&result.stderr).contains("does not write --format markdown"));
    assert!(!home.path().join("x").exists());
}

// A stopped app cannot be written as stopped (an ecosystem file has no such state):
// import says so, the file does not claim a clean plan, and plan shows the start.
#[test]
fn a_stopped_app_is_imported_with_a_warning_that_plan_will_start_it() {
    let home = Pm2Home::start();
    home.start_sleep("up", "shop");
    home.start_sleep("down", "shop");
    home.wait_status("down", "online");
    home.pm2_ok(&["stop", "down"]);
    home.wait_status("down", "stopped");
    let out = home.path().join("out");
    let (code, stdout, stderr) = import(&home, home.path(), &["--namespace", "shop", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("`down` will not plan clean (update: status)"), "{stderr}");
    assert!(!stderr.contains("`up`"), "{stderr}");
    assert!(stdout.contains("shows the changes warned about above"), "{stdout}");
    let text = std::fs::read_to_string(out.join("ecosystem.config.yaml")).unwrap();
    assert!(text.contains("cannot be written") && !text.contains("shows no changes"), "{text}");
    let (code, plan, stderr) = plan(&out, &[]);
    assert_eq!(code, 2, "{stderr}\n{plan:#}");
    let action = |name: &str| plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["action"].clone();
    assert_eq!((action("up"), action("down")), (Value::from("noop"), Value::from("update")));
}
