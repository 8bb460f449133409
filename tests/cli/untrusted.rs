//! What a hostile pull request can put in the desired state: special files and
//! symlinks, JavaScript that outlives its deadline, secrets in odd places.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::support::process::{bin, run, Output};

/// A secret in the environment of every command below: it must never be printed.
const CANARY: &str = "canary-7f3a9c1e-do-not-print";

fn reconcile_with_secret(dir: &Path, args: &[&str]) -> Output {
    let mut command = bin();
    command.current_dir(dir).args(args).env("CI_DEPLOY_TOKEN", CANARY);
    run(command, Duration::from_secs(60))
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn assert_no_canary(output: &Output) {
    assert!(!output.stdout.contains(CANARY) && !output.stderr.contains(CANARY), "the secret leaked: {output:#?}");
    assert!(!output.stderr.contains("panicked"), "{output:#?}");
}

#[test]
fn an_ecosystem_symlink_to_proc_self_environ_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/proc/self/environ", dir.path().join("eco.json")).unwrap();
    for format in ["human", "json", "sarif", "github"] {
        let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "eco.json", "--format", format]);
        output.expect_code(1);
        assert_no_canary(&output);
        assert!(!output.stdout.contains("CI_DEPLOY_TOKEN"), "{output:#?}");
        assert!(output.stdout.contains("eco.json"), "{output:#?}");
    }
    let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "eco.json"]);
    assert!(output.stdout.contains("leads outside"), "{output:#?}");
    // Named directly, the file is still refused: /proc claims its files are regular.
    let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "/proc/self/environ"]);
    assert_no_canary(&output);
    output.expect_code(1);
}

#[test]
fn a_reconcile_toml_symlink_to_proc_self_environ_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/proc/self/environ", dir.path().join("reconcile.toml")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert_no_canary(&output);
    assert!(output.stderr.contains("reconcile.toml") && output.stderr.contains("leads outside"), "{output:#?}");
    let output = reconcile_with_secret(dir.path(), &["--config", "/proc/self/environ", "lint"]);
    output.expect_code(1);
    assert_no_canary(&output);
    assert!(output.stderr.contains("pseudo file system"), "{output:#?}");
}

#[test]
fn dev_zero_as_an_ecosystem_file_or_reconcile_toml_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/dev/zero", dir.path().join("eco.json")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "eco.json"]);
    output.expect_code(1);
    assert!(output.stdout.contains("eco.json") && !output.stdout.contains("/dev/zero"), "the target is not named: {output:#?}");
    let output = reconcile_with_secret(dir.path(), &["--config", "/dev/zero", "lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("character device"), "{output:#?}");
    // A policy path and a saved plan are read the same way.
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"app.json\"]\nnamespaces = [\"x\"]\n[policies]\npaths = [\"zero.toml\"]\n").unwrap();
    symlink("/dev/zero", dir.path().join("zero.toml")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("zero.toml") && output.stderr.contains("leads outside"), "{output:#?}");
    symlink("/dev/zero", dir.path().join("plan.json")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["apply", "plan.json"]);
    output.expect_code(1);
    assert!(output.stderr.contains("plan.json"), "{output:#?}");
}

#[test]
fn a_fifo_as_an_ecosystem_file_or_reconcile_toml_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("eco.yaml"));
    let output = reconcile_with_secret(dir.path(), &["lint", "eco.yaml"]);
    output.expect_code(1);
    assert!(output.stdout.contains("eco.yaml") && output.stdout.contains("FIFO"), "{output:#?}");
    mkfifo(&dir.path().join("reconcile.toml"));
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("reconcile.toml") && output.stderr.contains("FIFO"), "{output:#?}");
}

#[test]
fn a_symlink_inside_the_project_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(dir.path().join("conf/eco.json"), r#"{"apps": [{"name": "a", "script": "a.js"}]}"#).unwrap();
    symlink("conf/eco.json", dir.path().join("eco.json")).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"x\"]\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "--format", "json"]);
    assert_eq!(output.json()["summary"]["apps"], 1, "{output:#?}");
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet), polled for up to a minute.
fn ends(pid: i32) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

fn pids_in(path: &Path) -> Vec<i32> {
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if !pids.is_empty() || started.elapsed() > Duration::from_secs(30) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_detached_grandchild_holding_stdout_open_does_not_hold_up_lint() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    std::fs::write(
        dir.path().join("eco.config.js"),
        format!(
            "const {{ spawn }} = require('child_process');\n\
             const c = spawn('sleep', ['300'], {{ detached: true, stdio: ['ignore', 'inherit', 'inherit'] }});\n\
             c.unref();\n\
             require('fs').writeFileSync({:?}, String(c.pid));\n\
             module.exports = {{ apps: [{{ name: 'a', script: 'a.js' }}] }};\n",
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.config.js\"]\nnamespaces = [\"x\"]\njs_timeout_ms = 3000\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "--format", "json"]);
    // Before, lint waited for the grandchild (300 s) to close the pipe.
    assert!(output.elapsed < Duration::from_secs(50), "took {:?}", output.elapsed);
    assert_eq!(output.json()["summary"]["apps"], 1, "the file's value is still read: {output:#?}");
    let pids = pids_in(&pid_file);
    assert_eq!(pids.len(), 1);
    assert!(ends(pids[0]), "the grandchild holding the output was killed");
}

#[test]
fn at_the_deadline_the_whole_evaluation_process_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    std::fs::write(
        dir.path().join("eco.config.js"),
        format!(
            "const {{ spawn }} = require('child_process');\n\
             const c = spawn('sleep', ['300'], {{ stdio: 'ignore' }});\n\
             require('fs').writeFileSync({:?}, c.pid + ' ' + process.pid);\n\
             while (true) {{}}\n",
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.config.js\"]\nnamespaces = [\"x\"]\njs_timeout_ms = 3000\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stdout.contains("did not finish within 3s"), "{output:#?}");
    let pids = pids_in(&pid_file);
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(ends(pid), "{pid} outlived the deadline");
    }
}
