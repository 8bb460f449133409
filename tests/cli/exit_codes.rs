//! Exit codes a pipeline can trust: 2 means only "`plan` found changes", so usage
//! errors and panics must never exit 0 or 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::support::{reconcile, run_with_timeout};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reconcile(dir.path());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn usage_errors_exit_1_never_0_or_2() {
    for args in [
        &["plna"][..],
        &["plan", "--bse", "main"],
        &["--formt", "json", "lint"],
        &["--format", "yaml", "lint"],
        &["watch", "--interval", "0"],
        &["completions"],
        &["import"],
        &[],
    ] {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, 1, "reconcile {args:?} exited {code}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stderr.contains("error") || stderr.contains("Usage"), "reconcile {args:?}: no message: {stderr}");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["-h"], &["--version"], &["plan", "--help"], &["help", "plan"]] {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, 0, "reconcile {args:?}: {stderr}");
        assert!(!stdout.is_empty(), "reconcile {args:?} printed nothing");
    }
}

#[test]
fn the_exit_codes_are_in_help() {
    let (_, stdout, _) = run(&["--help"], &[]);
    for needle in ["Exit status:", "usage error", "2  `plan` found changes"] {
        assert!(stdout.contains(needle), "{needle:?} missing from --help:\n{stdout}");
    }
}

/// The binary's panic path (a debug-build switch makes it panic on purpose): a
/// message that says it is a bug, and exit 1, not Rust's 101 (nor 0 or 2).
#[test]
fn a_panic_exits_1_with_a_message() {
    let (code, _, stderr) = run(&["lint", "x.json"], &[("RECONCILE_DEBUG_PANIC", "1")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("internal error (a bug in reconcile"), "{stderr}");
    assert_eq!(stderr.matches("internal error").count(), 1, "reported once: {stderr}");
}

/// What a newcomer hits first says what to do.
#[test]
fn first_contact_messages_say_what_to_do() {
    let (code, stdout, _) = run(&["lint", "missing.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(stdout.contains("check the path: no such file") && !stdout.contains("PM2 itself could read"), "{stdout}");
    let (code, _, stderr) = run(&["plan"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("reconcile import --namespace NS"), "{stderr}");
}
