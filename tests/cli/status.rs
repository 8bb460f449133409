//! `reconcile status` against a real daemon and a snapshot.

use serde_json::{Value, json};

use crate::support::{Pm2Home, reconcile, run, short_tempdir};

#[test]
fn status_json_lists_owned_and_ignored_with_the_contract_fields() {
    let home = Pm2Home::start();
    home.start_sleep("api", "mine");
    home.start_sleep("other-app", "theirs");
    home.start_ecosystem(
        "eco.json",
        &json!({"apps": [{"name": "crasher", "script": "/bin/false", "interpreter": "none",
            "namespace": "mine", "max_restarts": 1, "min_uptime": 5000, "restart_delay": 0}]}),
    );
    home.wait_status("crasher", "errored");
    home.project(&["mine"], 5000);

    let (code, stdout, stderr, _) = run(home.reconcile().args(["status", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let procs = doc["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3);
    for p in procs {
        for key in ["pm_id", "name", "namespace", "status", "pid", "restarts", "uptime_ms", "owned"] {
            assert!(p.get(key).is_some(), "{key} missing in {p}");
        }
    }
    let get = |name: &str| procs.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(get("api")["owned"], true);
    assert_eq!(get("api")["status"], "online");
    assert!(get("api")["pid"].as_u64().is_some());
    assert!(get("api")["uptime_ms"].as_u64().is_some());
    assert_eq!(get("other-app")["owned"], false);
    assert_eq!(get("crasher")["status"], "errored");
    assert_eq!(get("crasher")["pid"], Value::Null);
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["name"] == "crasher" && w["kind"] == "errored"), "{warnings:?}");
    assert_eq!(doc["daemon"]["version"], crate::support::pm2_version().as_str());

    // The same list, for people: owned apart from ignored, warnings on stderr, exit 0.
    let (code, stdout, stderr, _) = run(home.reconcile().arg("status"));
    assert_eq!(code, 0);
    assert!(stdout.contains(&format!("PM2 {}", crate::support::pm2_version())), "the human status names the daemon's version: {stdout}");
    let owned_at = stdout.find("owned").unwrap();
    let ignored_at = stdout.find("ignored").unwrap();
    assert!(owned_at < stdout.find("api").unwrap() && stdout.find("other-app").unwrap() > ignored_at, "{stdout}");
    assert!(stderr.contains("warning: `crasher`") && stderr.contains("is errored"), "{stderr}");
}

#[test]
fn status_flags_a_crash_loop() {
    let home = Pm2Home::start();
    // Crashes after half a second, forever: restarts climb without hitting errored.
    home.start_ecosystem(
        "eco.json",
        &json!({"apps": [{"name": "looper", "script": "/bin/sh", "args": ["-c", "sleep 0.2; exit 3"],
            "interpreter": "none", "namespace": "mine", "restart_delay": 0, "max_restarts": 1000}]}),
    );
    home.wait_for(
        || home.jlist()[0]["pm2_env"]["restart_time"].as_u64().unwrap_or(0) >= 3,
        "three restarts",
    );
    let dir = home.project(&["mine"], 5000);
    std::fs::write(
        dir.join("reconcile.toml"),
        format!(
            "[project]\nnamespaces = [\"mine\"]\n[pm2]\nhome = {:?}\n[health]\ncrash_restarts = 2\n",
            home.path().display().to_string()
        ),
    )
    .unwrap();
    let (code, stdout, stderr, _) = run(home.reconcile().args(["status", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["warnings"][0]["kind"], "crash_loop", "{doc}");
    assert_eq!(doc["warnings"][0]["owned"], true);
}

#[test]
fn status_reads_a_jlist_snapshot_without_pm2() {
    let home = Pm2Home::start();
    home.start_sleep("api", "mine");
    let jlist = home.pm2_ok(&["jlist"]).stdout;
    drop(home);

    let dir = short_tempdir();
    std::fs::write(dir.path().join("jlist.json"), jlist).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\nnamespaces = [\"mine\"]\n").unwrap();
    let (code, stdout, stderr, _) =
        run(reconcile(dir.path()).args(["status", "--live", "jlist.json", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["processes"][0]["name"], "api");
    assert_eq!(doc["processes"][0]["owned"], true);
    assert_eq!(doc["source"]["kind"], "snapshot");
    // One process is "1 process", not "1 processes".
    let (_, human, _, _) = run(reconcile(dir.path()).args(["status", "--live", "jlist.json"]));
    assert!(human.contains("1 process: 1 owned"), "{human}");

    std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
    let (code, _, stderr, _) = run(reconcile(dir.path()).args(["status", "--live", "bad.json"]));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: live snapshot") && stderr.contains("is not `pm2 jlist` output"), "{stderr}");
}

#[test]
fn status_refuses_formats_it_does_not_have() {
    let dir = short_tempdir();
    // After the command, clap refuses it and lists what status writes.
    let (code, _, stderr, _) = run(reconcile(dir.path()).args(["status", "--format", "sarif"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid value 'sarif'") && stderr.contains("[possible values: human, json]"), "{stderr}");
    // Before it, status itself does.
    let (code, _, stderr, _) = run(reconcile(dir.path()).args(["--format", "sarif", "status"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("`status` does not write --format"), "{stderr}");
}
