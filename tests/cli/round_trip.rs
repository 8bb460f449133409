//! Round trip (DESIGN.md, "The plan"): an app started from its own spec plans as
//! `noop`. Started the way PM2 users start it (`pm2 start FILE --only NAME --env
//! production`, from the file's directory) and the way `reconcile apply` starts it
//! (PM2's own resolution, then `prepare` over the socket), for every example app and
//! for a spread of options, against a real daemon in a private home.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Pm2Home, pm2_bin, process::repo, reconcile, run_with_timeout};

/// An idle stand-in for each kind of app script: nothing binds a port or needs a
/// database, so the apps stay online without what production has.
fn idle_fixture(path: &Path) -> Option<&'static str> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js") => Some("setInterval(() => {}, 1 << 30);\n"),
        Some("py") => Some("import time\nwhile True:\n    time.sleep(3600)\n"),
        Some("sh") => Some("#!/bin/sh\nexec sleep 3600\n"),
        _ => None,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces every app script under `dir` (not the ecosystem files) by an idle fixture.
fn idle_scripts(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            idle_scripts(&path);
        } else if !name.starts_with("ecosystem")
            && let Some(text) = idle_fixture(&path)
        {
            std::fs::write(&path, text).unwrap();
        }
    }
}

/// `examples/<name>` deployed into the home: the absolute `cwd` its ecosystem files
/// name (`/srv/...`, `/home/...`) rewritten to the copy, every app script idle.
fn deploy_example(home: &Pm2Home, name: &str, deployed_at: &str) -> PathBuf {
    let dir = home.path().join("examples").join(name);
    copy_tree(&repo().join("examples").join(name), &dir);
    idle_scripts(&dir);
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if file.starts_with("ecosystem") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert!(text.contains(deployed_at), "{file} no longer deploys to {deployed_at}");
            std::fs::write(entry.path(), text.replace(deployed_at, &dir.display().to_string())).unwrap();
        }
    }
    dir
}

/// `pm2 ARGS` run from `dir` against the home, as an operator would type it: from a
/// shell that is not the one that started the daemon (another previous directory,
/// another depth, an SSH session), whose variables the apps then carry.
fn pm2_in(home: &Pm2Home, dir: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new(pm2_bin());
    cmd.args(args)
        .current_dir(dir)
        .env("PM2_HOME", home.path())
        .env_remove("_")
        .env("OLDPWD", home.path())
        .env("SHLVL", "7")
        .env("SSH_TTY", "/dev/pts/9");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "pm2 {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `reconcile ARGS` in `dir` (its reconcile.toml) against the home's daemon.
fn reconcile_in(home: &Pm2Home, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run_with_timeout(reconcile(dir).env("PM2_HOME", home.path()).args(args), Duration::from_secs(120));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every listed app is online (each of its processes).
fn wait_online(home: &Pm2Home, names: &[&str]) {
    home.wait_for(
        || {
            let list = home.jlist();
            let procs = list.as_array().cloned().unwrap_or_default();
            names.iter().all(|n| {
                let mine: Vec<_> = procs.iter().filter(|p| p["name"] == *n).collect();
                !mine.is_empty() && mine.iter().all(|p| p["pm2_env"]["status"] == "online")
            })
        },
        &format!("{names:?} to be online"),
    );
}

/// `reconcile plan --format json` exits 0 and says `noop` for exactly these apps.
#[track_caller]
fn assert_plan_is_noop(home: &Pm2Home, dir: &Path, names: &[&str]) {
    let (code, stdout, stderr) = reconcile_in(home, dir, &["plan", "--format", "json"]);
    let plan: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    assert_eq!(code, 0, "plan is not empty\n--- stderr\n{stderr}\n--- plan\n{plan:#}");
    let changes = plan["changes"].as_array().unwrap();
    let mut planned: Vec<(&str, &str)> =
        changes.iter().map(|c| (c["name"].as_str().unwrap(), c["action"].as_str().unwrap())).collect();
    planned.sort_unstable();
    let mut expected: Vec<(&str, &str)> = names.iter().map(|n| (*n, "noop")).collect();
    expected.sort_unstable();
    assert_eq!(planned, expected, "{plan:#}");
}

const FLYER_APPS: [&str; 3] = ["flyer-crawler-api", "flyer-crawler-worker", "flyer-crawler-analytics-worker"];
const C3_APPS: [&str; 2] = ["c3-backend", "chinvex-gateway"];

/// c3's reconcile.toml names the file of the incident, which `lint` rejects; the
/// deployed configuration is the fixed one.
fn use_fixed_c3(dir: &Path) {
    let toml = std::fs::read_to_string(dir.join("reconcile.toml")).unwrap();
    let toml = toml.replace("ecosystem = [\"ecosystem.config.cjs\"]", "ecosystem = [\"ecosystem.fixed.config.cjs\"]");
    std::fs::write(dir.join("reconcile.toml"), toml).unwrap();
}

#[test]
fn example_apps_started_by_pm2_one_by_one_plan_as_noop() {
    let home = Pm2Home::start();
    let flyer = deploy_example(&home, "flyer-crawler", "/srv/flyer-crawler");
    for app in FLYER_APPS {
        pm2_in(&home, &flyer, &["start", "ecosystem.config.cjs", "--only", app, "--env", "production"]);
    }
    let c3 = deploy_example(&home, "c3-backend", "/home/jordan/projects/c3-backend");
    use_fixed_c3(&c3);
    for app in C3_APPS {
        pm2_in(&home, &c3, &["start", "ecosystem.fixed.config.cjs", "--only", app]);
    }
    wait_online(&home, &[FLYER_APPS.as_slice(), C3_APPS.as_slice()].concat());
    let list = home.jlist();
    let api = list.as_array().unwrap().iter().find(|p| p["name"] == "flyer-crawler-api").unwrap();
    assert_eq!(api["pm2_env"]["env"]["PORT"], json!(3001), "started with env_production");
    assert_plan_is_noop(&home, &flyer, &FLYER_APPS);
    assert_plan_is_noop(&home, &c3, &C3_APPS);
}

#[test]
fn example_apps_started_by_apply_plan_as_noop() {
    let home = Pm2Home::start();
    let flyer = deploy_example(&home, "flyer-crawler", "/srv/flyer-crawler");
    let c3 = deploy_example(&home, "c3-backend", "/home/jordan/projects/c3-backend");
    use_fixed_c3(&c3);
    for (dir, apps) in [(&flyer, FLYER_APPS.as_slice()), (&c3, C3_APPS.as_slice())] {
        let (code, stdout, stderr) = reconcile_in(&home, dir, &["apply", "--auto-approve"]);
        assert_eq!(code, 0, "apply failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        wait_online(&home, apps);
        assert_plan_is_noop(&home, dir, apps);
    }
}

// The incident's own c3 file, its findings downgraded to warnings: c3-backend has
// `instances: 1` and no exec_mode, so PM2 runs it in cluster mode; the gateway's mode
// is implicit too. Both still plan as noop once PM2 started them.
#[test]
fn implicit_modes_of_the_incident_file_plan_as_noop() {
    let home = Pm2Home::start();
    let c3 = deploy_example(&home, "c3-backend", "/home/jordan/projects/c3-backend");
    let mut toml = std::fs::read_to_string(c3.join("reconcile.toml")).unwrap();
    for rule in ["exec-mode", "min-uptime", "restart-delay", "max-restarts"] {
        toml.push_str(&format!("\n[policies.rules.{rule}]\nseverity = \"warning\"\n"));
    }
    std::fs::write(c3.join("reconcile.toml"), toml).unwrap();
    pm2_in(&home, &c3, &["start", "ecosystem.config.cjs"]);
    wait_online(&home, &C3_APPS);
    let list = home.jlist();
    let backend = list.as_array().unwrap().iter().find(|p| p["name"] == "c3-backend").unwrap();
    assert_eq!(backend["pm2_env"]["exec_mode"], "cluster_mode", "the incident: one instance in cluster mode");
    assert_plan_is_noop(&home, &c3, &C3_APPS);
}

/// A spread of options, each app policy-clean: fork and cluster, instances, env and
/// env_production, args as a string (with quotes) and as an array, relative and
/// absolute cwd, interpreters (node, python3, bash by extension, none), and every log
/// and pid path, merged or per instance.
fn spread(home: &Pm2Home, dir: &Path) -> Vec<Value> {
    let safe = |mut app: Value| {
        for (k, v) in [("min_uptime", json!(5000)), ("max_restarts", json!(5)), ("restart_delay", json!(2000)), ("kill_timeout", json!(3000))]
        {
            app[k] = v;
        }
        app
    };
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for (file, ext) in [("app.js", "x.js"), ("sub/worker.js", "x.js"), ("gateway.py", "x.py"), ("bin/run.sh", "x.sh")] {
        std::fs::write(dir.join(file), idle_fixture(Path::new(ext)).unwrap()).unwrap();
    }
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("tool.js"), idle_fixture(Path::new("x.js")).unwrap()).unwrap();
    vec![
        safe(json!({"name": "rt-fork", "namespace": "rt", "script": "app.js", "exec_mode": "fork", "instances": 1,
            "args": ["--mode", "fork", "two words"], "env": {"A": "1", "PORT": 4201, "DEBUG": false}, "env_production": {"A": "2", "EXTRA": "x"},
            "out_file": "logs/fork-out.log", "error_file": "logs/fork-err.log", "log_file": "logs/fork-combined.log",
            "pid_file": "pids/fork.pid", "merge_logs": true, "max_memory_restart": "256M"})),
        safe(json!({"name": "rt-cluster", "namespace": "rt", "script": "app.js", "exec_mode": "cluster", "instances": 2,
            "node_args": "--max-old-space-size=64", "args": "--mode cluster --label 'a b'", "env": {"PORT": 4202},
            "out_file": "logs/cluster-out.log", "error_file": "logs/cluster-err.log"})),
        safe(json!({"name": "rt-sub", "namespace": "rt", "script": "worker.js", "cwd": "sub", "exec_mode": "fork",
            "interpreter_args": ["--enable-source-maps"]})),
        safe(json!({"name": "rt-abs", "namespace": "rt", "script": elsewhere.join("tool.js"), "cwd": elsewhere, "exec_mode": "fork"})),
        safe(json!({"name": "rt-python", "namespace": "rt", "script": "gateway.py", "interpreter": "python3", "exec_mode": "fork",
            "args": "--host 127.0.0.1 --port 7790", "env": {"GATEWAY_CONTEXTS": "10"}})),
        safe(json!({"name": "rt-shell", "namespace": "rt", "script": "bin/run.sh", "exec_mode": "fork"})),
        safe(json!({"name": "rt-binary", "namespace": "rt", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork",
            "args": "3600", "out_file": "/dev/null", "error_file": "NULL"})),
    ]
}

const SPREAD: [&str; 7] = ["rt-fork", "rt-cluster", "rt-sub", "rt-abs", "rt-python", "rt-shell", "rt-binary"];

fn spread_project(home: &Pm2Home) -> PathBuf {
    let dir = home.path().join("spread");
    let apps = spread(home, &dir);
    std::fs::write(dir.join("ecosystem.config.js"), format!("module.exports = {};\n", json!({ "apps": apps }))).unwrap();
    std::fs::write(
        dir.join("reconcile.toml"),
        "[project]\nname = \"rt\"\necosystem = [\"ecosystem.config.js\"]\nnamespaces = [\"rt\"]\nenv = \"production\"\n\n\
         [pm2]\ntimeout_ms = 10000\n\n[policies.rules.log-files]\nseverity = \"off\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_spread_of_options_started_by_pm2_one_by_one_plans_as_noop() {
    let home = Pm2Home::start();
    let dir = spread_project(&home);
    for app in SPREAD {
        pm2_in(&home, &dir, &["start", "ecosystem.config.js", "--only", app, "--env", "production"]);
    }
    wait_online(&home, &SPREAD);
    let list = home.jlist();
    let find = |name: &str| list.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(find("rt-cluster")["pm2_env"]["exec_mode"], "cluster_mode");
    assert_eq!(find("rt-fork")["pm2_env"]["env"]["A"], "2", "env_production merged");
    assert_plan_is_noop(&home, &dir, &SPREAD);
}

#[test]
fn a_spread_of_options_started_by_apply_plans_as_noop() {
    let home = Pm2Home::start();
    let dir = spread_project(&home);
    let (code, stdout, stderr) = reconcile_in(&home, &dir, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "apply failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    wait_online(&home, &SPREAD);
    assert_plan_is_noop(&home, &dir, &SPREAD);
}

/// Shapes real ecosystem files use that PM2 starts its own way (issue 16): each must
/// plan `noop` after `pm2 start FILE --env production` and after `apply`.
const SHAPES: [&str; 5] = ["rt-instance-var", "rt-stop-codes", "rt-named-production", "rt-next", "rt-env-file"];

fn shapes_project(home: &Pm2Home) -> PathBuf {
    let dir = home.path().join("shapes");
    std::fs::create_dir_all(dir.join("client/node_modules/.bin")).unwrap();
    std::fs::write(dir.join("app.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    let next = dir.join("client/node_modules/.bin/next");
    std::fs::write(&next, "#!/usr/bin/env node\nsetInterval(() => {}, 1 << 30);\n").unwrap();
    std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let base = |name: &str| json!({"name": name, "namespace": "rt", "script": "app.js", "exec_mode": "fork", "kill_timeout": 3000});
    let with = |name: &str, extra: Value| {
        let mut app = base(name);
        for (k, v) in extra.as_object().unwrap() {
            app[k] = v.clone();
        }
        app
    };
    let apps = json!([
        // PM2 sets INSTANCE_ID on every start.
        with("rt-instance-var", json!({"instance_var": "INSTANCE_ID"})),
        // PM2 keeps `[0]` as `0`.
        with("rt-stop-codes", json!({"stop_exit_codes": [0]})),
        // PM2 names it `rt-named-production` under --env production.
        with("rt-named", json!({"append_env_to_name": true, "env_production": {"A": "1"}})),
        // cwd + script does not exist: PM2's which(script) from the CLI's directory.
        with("rt-next", json!({"cwd": "client", "script": "client/node_modules/.bin/next"})),
        // Ignored by PM2 7.0.4; not an env_<name> block.
        with("rt-env-file", json!({"env_file": ".env"})),
    ]);
    std::fs::write(dir.join("ecosystem.config.js"), format!("module.exports = {};\n", json!({ "apps": apps }))).unwrap();
    std::fs::write(
        dir.join("reconcile.toml"),
        "[project]\nname = \"rt\"\necosystem = [\"ecosystem.config.js\"]\nnamespaces = [\"rt\"]\nenv = \"production\"\n\n\
         [pm2]\ntimeout_ms = 10000\n\n[policies.rules.log-files]\nseverity = \"off\"\n[policies.rules.min-uptime]\nseverity = \"off\"\n\
         [policies.rules.max-restarts]\nseverity = \"off\"\n[policies.rules.restart-delay]\nseverity = \"off\"\n\
         [policies.rules.missing-env]\nseverity = \"off\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn common_shapes_pm2_starts_its_own_way_plan_as_noop_after_pm2_start() {
    let home = Pm2Home::start();
    let dir = shapes_project(&home);
    pm2_in(&home, &dir, &["start", "ecosystem.config.js", "--env", "production"]);
    wait_online(&home, &SHAPES);
    let list = home.jlist();
    let find = |name: &str| list.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let started = find("rt-instance-var");
    assert!(!started["pm2_env"]["INSTANCE_ID"].is_null(), "PM2 set the instance var: {started:#}");
    assert!(find("rt-next")["pm2_env"]["pm_exec_path"].as_str().unwrap().ends_with("/shapes/client/node_modules/.bin/next"));
    assert_plan_is_noop(&home, &dir, &SHAPES);
}

#[test]
fn common_shapes_pm2_starts_its_own_way_plan_as_noop_after_apply() {
    let home = Pm2Home::start();
    let dir = shapes_project(&home);
    let (code, stdout, stderr) = reconcile_in(&home, &dir, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "apply failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    wait_online(&home, &SHAPES);
    assert_plan_is_noop(&home, &dir, &SHAPES);
}
