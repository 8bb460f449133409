//! `reconcile plan` against a real PM2 daemon in a private home.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Pm2Home, run_with_timeout};

fn safe(app: Value) -> Value {
    let mut app = app;
    for (k, v) in [("min_uptime", json!(5000)), ("max_restarts", json!(5)), ("restart_delay", json!(2000)), ("kill_timeout", json!(3000))] {
        app[k] = v;
    }
    app
}

/// Writes `eco.json` with `apps` into the home's project dir and a reconcile.toml
/// owning `namespaces` that names it.
fn project(home: &Pm2Home, namespaces: &[&str], apps: &[Value], extra_toml: &str) -> std::path::PathBuf {
    let dir = home.project(namespaces, 10_000);
    std::fs::write(dir.join("eco.json"), serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap()).unwrap();
    let toml = std::fs::read_to_string(dir.join("reconcile.toml")).unwrap();
    let toml = toml.replacen("[project]\n", "[project]\necosystem = [\"eco.json\"]\n", 1);
    std::fs::write(dir.join("reconcile.toml"), format!("{toml}\n{extra_toml}\n[policies.rules.log-files]\nseverity = \"off\"\n")).unwrap();
    dir
}

/// `pm2 start eco.json` from the project directory, as an operator would.
fn pm2_start(home: &Pm2Home, dir: &std::path::Path, only: Option<&str>) {
    let mut cmd = std::process::Command::new(crate::support::pm2_bin());
    cmd.arg("start").arg("eco.json").current_dir(dir).env("PM2_HOME", home.path()).env_remove("_");
    if let Some(name) = only {
        cmd.args(["--only", name]);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "pm2 start failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn plan_json(home: &Pm2Home) -> (i32, Value, String) {
    let out = run_with_timeout(home.reconcile().args(["plan", "--format", "json"]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code().unwrap_or(-1);
    let plan = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, plan, stderr)
}

fn action_of<'a>(plan: &'a Value, name: &str) -> &'a str {
    plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == name).map_or("missing", |c| c["action"].as_str().unwrap())
}

fn foreign_untouched(home: &Pm2Home, before: &Value) {
    let now = home.jlist();
    let find = |list: &Value| list.as_array().unwrap().iter().find(|p| p["name"] == "stock-alert").cloned().unwrap();
    let (a, b) = (find(before), find(&now));
    assert_eq!(a["pid"], b["pid"], "stock-alert's pid changed");
    assert_eq!(a["pm2_env"]["restart_time"], b["pm2_env"]["restart_time"]);
    assert_eq!(a["pm2_env"]["status"], b["pm2_env"]["status"]);
}

// Every app started from its own spec by `pm2 start` plans as noop: fork and cluster,
// instances, env blocks, args as string and array, cwd, interpreter, log paths.
#[test]
fn apps_started_from_their_spec_plan_as_noop() {
    let home = Pm2Home::start();
    home.start_sleep("stock-alert", "stock-alert");
    let app_js = home.node_app();
    std::fs::create_dir_all(home.path().join("project/sub")).unwrap();
    let apps = vec![
        safe(json!({"name": "sleeper", "namespace": "web", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork", "args": ["3600"],
              "env": {"A": "1", "PORT": 4101}, "env_production": {"A": "2"}})),
        safe(json!({"name": "sleeper-str", "namespace": "web", "script": "sh", "interpreter": "none", "exec_mode": "fork", "args": "-c 'exec sleep 3600'",
              "out_file": "logs/s-out.log", "error_file": "logs/s-err.log"})),
        safe(json!({"name": "clustered", "namespace": "jobs", "script": app_js, "exec_mode": "cluster", "instances": 2,
              "node_args": ["--max-old-space-size=64"], "env": {"PORT": 4102}})),
        safe(json!({"name": "in-sub", "namespace": "jobs", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork",
              "args": ["3600"], "cwd": "sub", "max_memory_restart": "200M"})),
    ];
    let dir = project(&home, &["web", "jobs"], &apps, "");
    std::fs::write(dir.join("reconcile.toml"), std::fs::read_to_string(dir.join("reconcile.toml")).unwrap().replacen("[project]\n", "[project]\nenv = \"production\"\n", 1)).unwrap();
    // As `pm2 start eco.json --env production` from the project directory.
    let mut cmd = std::process::Command::new(crate::support::pm2_bin());
    cmd.args(["start", "eco.json", "--env", "production"]).current_dir(&dir).env("PM2_HOME", home.path()).env_remove("_");
    assert!(run_with_timeout(&mut cmd, Duration::from_secs(60)).status.success());
    home.wait_status("clustered", "online");
    let before = home.jlist();
    let (code, plan, stderr) = plan_json(&home);
    assert_eq!(code, 0, "{stderr}\n{plan:#}");
    for name in ["sleeper", "sleeper-str", "clustered", "in-sub"] {
        assert_eq!(action_of(&plan, name), "noop", "{name}: {plan:#}");
    }
    let online = |name: &str| before.as_array().unwrap().iter().filter(|p| p["name"] == name).all(|p| p["pm2_env"]["status"] == "online");
    assert!(["sleeper", "sleeper-str", "clustered", "in-sub"].iter().all(|n| online(n)), "a fixture app is not running: {before:#}");
    assert_eq!(plan["ignored"], json!([{"name": "stock-alert", "namespace": "stock-alert", "pm_id": 0}]));
    foreign_untouched(&home, &before);
}

// One test per action kind, against a real daemon, with a foreign app that a plan
// must list as ignored and never target.
#[test]
fn each_action_kind_against_a_real_daemon() {
    let home = Pm2Home::start();
    home.start_sleep("stock-alert", "stock-alert");
    let sleep = |name: &str, extra: Value| {
        let mut app = safe(json!({"name": name, "namespace": "web", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork", "args": ["3600"]}));
        for (k, v) in extra.as_object().unwrap() {
            app[k] = v.clone();
        }
        app
    };
    let started = vec![
        sleep("same", json!({})),
        sleep("env-change", json!({"env": {"LEVEL": "1"}})),
        sleep("script-change", json!({})),
        sleep("scaled", json!({"instances": 1})),
        sleep("leftover", json!({})),
    ];
    let dir = project(&home, &["web"], &started, "[safety]\nprune = true\nmax_changed_fraction = 1.0\n");
    pm2_start(&home, &dir, None);
    home.wait_status("leftover", "online");
    // Started by hand, so prune may delete them only once adopted: an apply of the
    // state they run (a noop) records them in the adoption ledger.
    let adopt = run_with_timeout(home.reconcile().args(["apply", "--auto-approve"]), Duration::from_secs(120));
    assert_eq!(adopt.status.code(), Some(0), "{}", String::from_utf8_lossy(&adopt.stderr));
    assert!(dir.join(".reconcile/adopted.json").is_file());
    let desired = vec![
        sleep("same", json!({})),
        sleep("env-change", json!({"env": {"LEVEL": "2"}})),
        sleep("script-change", json!({"script": "/bin/cat", "args": []})),
        sleep("scaled", json!({"instances": 2})),
        sleep("brand-new", json!({})),
    ];
    std::fs::write(dir.join("eco.json"), serde_json::to_string_pretty(&json!({ "apps": desired })).unwrap()).unwrap();
    let before = home.jlist();
    let (code, plan, stderr) = plan_json(&home);
    assert_eq!(code, 2, "changes mean exit 2: {stderr}\n{plan:#}");
    assert_eq!(action_of(&plan, "same"), "noop");
    assert_eq!(action_of(&plan, "env-change"), "update");
    assert_eq!(action_of(&plan, "script-change"), "replace");
    assert_eq!(action_of(&plan, "scaled"), "scale");
    assert_eq!(action_of(&plan, "leftover"), "delete");
    assert_eq!(action_of(&plan, "brand-new"), "create");
    let change = plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == "script-change").unwrap();
    let script = change["attributes"].as_array().unwrap().iter().find(|a| a["path"] == "script").unwrap();
    assert_eq!(script["forces_replacement"], true);
    assert_eq!(script["after"], "/bin/cat");
    assert_eq!(plan["summary"], json!({"create": 1, "update": 1, "replace": 1, "scale": 1, "delete": 1, "noop": 1}));
    let stock_alert_id = before.as_array().unwrap().iter().find(|p| p["name"] == "stock-alert").unwrap()["pm_id"].clone();
    for change in plan["changes"].as_array().unwrap() {
        assert!(!change["pm_ids"].as_array().unwrap().contains(&stock_alert_id), "{change:#}");
    }
    // Human and markdown views of the same plan.
    let out = run_with_timeout(home.reconcile().args(["plan"]), Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-/+ script-change (web) must be replaced"), "{text}");
    assert!(text.contains("# forces replacement"), "{text}");
    assert!(text.contains("Plan: 1 to create, 1 to update, 1 to replace, 1 to scale, 1 to delete."), "{text}");
    foreign_untouched(&home, &before);
}

// See: pm2-internals §0.2. A desired name live in a namespace we do not own is a
// conflict: exit 1, with what to do, and nothing planned.
#[test]
fn a_desired_name_live_in_a_foreign_namespace_is_a_conflict() {
    let home = Pm2Home::start();
    home.start_sleep("stock-alert", "stock-alert");
    let apps = vec![safe(json!({"name": "stock-alert", "namespace": "web", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork", "args": ["60"]}))];
    project(&home, &["web"], &apps, "");
    let before = home.jlist();
    let (code, plan, stderr) = plan_json(&home);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(plan, Value::Null, "no plan on stdout");
    assert!(stderr.contains("error[live-name-conflict]") && stderr.contains("namespace `stock-alert`"), "{stderr}");
    foreign_untouched(&home, &before);
}

// --out saves the plan with what it was planned against; secrets never appear.
#[test]
fn saved_plans_record_their_basis_and_never_hold_secrets() {
    let home = Pm2Home::start();
    let apps = vec![safe(json!({"name": "api", "namespace": "web", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork",
        "args": ["3600"], "env": {"API_TOKEN": "tok-old-123", "DB_PASSWORD": "pw-old-456"}}))];
    let dir = project(&home, &["web"], &apps, "");
    pm2_start(&home, &dir, None);
    home.wait_status("api", "online");
    let apps = vec![safe(json!({"name": "api", "namespace": "web", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork",
        "args": ["3600"], "env": {"API_TOKEN": "tok-new-789", "DB_PASSWORD": "pw-old-456"}}))];
    std::fs::write(dir.join("eco.json"), serde_json::to_string(&json!({ "apps": apps })).unwrap()).unwrap();
    for format in ["human", "json", "markdown"] {
        let out = run_with_timeout(home.reconcile().args(["plan", "--format", format, "--out", "plan.json"]), Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{text}");
        for secret in ["tok-old-123", "tok-new-789", "pw-old-456"] {
            assert!(!text.contains(secret), "{format} shows a secret: {text}");
        }
        // JSON keeps the redaction marker; people see it as a label, not a quoted value.
        let label = if format == "json" { "(sensitive value changed)" } else { "API_TOKEN: (sensitive) → (sensitive, changed)" };
        let label = if format == "markdown" { "+   env.API_TOKEN: (sensitive, changed)" } else { label };
        assert!(text.contains(label), "{format}: {text}");
    }
    let saved = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    assert!(!saved.contains("tok-") && !saved.contains("pw-old"), "{saved}");
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["basis"]["live_source"], "daemon");
    assert_eq!(saved["basis"]["pm2_version"], crate::support::pm2_version().as_str(), "the plan names the daemon's version");
    assert_eq!(saved["basis"]["desired_hash"].as_str().unwrap().len(), 32);
    assert_eq!(saved["basis"]["live_fingerprint"].as_str().unwrap().len(), 32);
}
