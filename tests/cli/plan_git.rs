//! `reconcile plan --base REF [--head REF]`: the pull-request view, on a throwaway
//! git repository made by the test. No PM2 daemon is involved.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::{Output, bin, run};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

fn app(name: &str, env: Value) -> Value {
    json!({"name": name, "namespace": "web", "script": "server.js", "exec_mode": "fork", "min_uptime": 5000,
        "max_restarts": 5, "restart_delay": 2000, "kill_timeout": 3000, "out_file": "o.log", "error_file": "e.log",
        "log_date_format": "YYYY", "env": env})
}

fn write_apps(dir: &Path, apps: &[Value]) {
    std::fs::write(dir.join("deploy/eco.json"), serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap()).unwrap();
}

fn plan(dir: &Path, args: &[&str]) -> Output {
    let mut command = bin();
    // A PM2 home that does not exist: the git view must never read a daemon.
    command.current_dir(dir.join("deploy")).env("PM2_HOME", dir.join("no-such-home")).args(["plan", "--format", "json"]).args(args);
    run(command, Duration::from_secs(60))
}

fn action<'a>(plan: &'a Value, name: &str) -> &'a str {
    plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == name).map_or("missing", |c| c["action"].as_str().unwrap())
}

#[test]
fn base_plans_what_the_working_tree_or_head_changes() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    std::fs::create_dir(dir.join("deploy")).unwrap();
    std::fs::write(dir.join("deploy/reconcile.toml"), "[project]\nname = \"shop\"\necosystem = [\"eco.json\"]\nnamespaces = [\"web\"]\n").unwrap();
    write_apps(dir, &[app("api", json!({"PORT": 3000})), app("worker", json!({})), app("legacy", json!({}))]);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);

    // Unchanged: no changes, exit 0.
    let out = plan(dir, &["--base", "main"]);
    out.expect_code(0);
    assert_eq!(out.json()["basis"]["git_dirty"], false);

    // The working tree changes one env, adds an app and drops one.
    write_apps(dir, &[app("api", json!({"PORT": 3001})), app("worker", json!({})), app("search", json!({}))]);
    let out = plan(dir, &["--base", "main"]);
    out.expect_code(2);
    let p = out.json();
    assert_eq!(action(&p, "api"), "update");
    assert_eq!(action(&p, "worker"), "noop");
    assert_eq!(action(&p, "search"), "create");
    assert_eq!(p["unmanaged"][0]["name"], "legacy", "{p:#}");
    assert_eq!(p["basis"]["live_source"], "git main");
    assert_eq!(p["basis"]["git_dirty"], true);

    // Committed: --base main --head HEAD gives the same plan, from a clean tree.
    git(dir, &["checkout", "-q", "-b", "feature"]);
    git(dir, &["commit", "-q", "-am", "change"]);
    let out = plan(dir, &["--base", "main", "--head", "HEAD"]);
    out.expect_code(2);
    let q = out.json();
    assert_eq!(q["changes"], p["changes"]);
    assert_eq!(q["basis"]["git_dirty"], false);
    assert_eq!(q["basis"]["git_commit"].as_str().unwrap().len(), 40);

    // Markdown, for the pull-request comment.
    let mut command = bin();
    command.current_dir(dir.join("deploy")).args(["plan", "--base", "main", "--format", "markdown"]);
    let out = run(command, Duration::from_secs(60));
    out.expect_code(2);
    assert!(out.stdout.contains("| `~` **update** (downtime) | `api` | `web` |"), "a fork app restarts: {}", out.stdout);
    // What it was compared with: the base ref and both commits, no daemon, no pm_ids.
    let base = q["basis"]["base_commit"].as_str().unwrap();
    assert!(out.stdout.contains(&base[..12]) && out.stdout.contains(&q["basis"]["git_commit"].as_str().unwrap()[..12]), "{}", out.stdout);
    assert!(out.stdout.contains("No PM2 daemon was read") && !out.stdout.contains("pm_id"), "{}", out.stdout);
    assert!(out.stdout.starts_with("<!-- reconcile-plan: "), "{}", out.stdout);
    assert!(q["changes"].as_array().unwrap().iter().all(|c| c["pm_ids"] == serde_json::json!([])), "{q:#}");
}

#[test]
fn an_unknown_ref_or_no_repository_is_a_clear_error() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    std::fs::create_dir(dir.join("deploy")).unwrap();
    std::fs::write(dir.join("deploy/reconcile.toml"), "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"web\"]\n").unwrap();
    write_apps(dir, &[app("api", json!({}))]);
    let out = plan(dir, &["--base", "main"]);
    out.expect_code(1);
    assert!(out.stderr.contains("is not inside a git repository"), "{out:#?}");
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);
    let out = plan(dir, &["--base", "origin/nope"]);
    out.expect_code(1);
    assert!(out.stderr.contains("cannot resolve `origin/nope`") && out.stderr.contains("git fetch"), "{out:#?}");
}
