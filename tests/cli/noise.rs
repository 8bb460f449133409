//! Output volume: in `plan` (as in `apply` and `watch`), lint warnings are one line
//! saying how to see them; `-v` shows them in full, `-q` not at all; errors always.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::{reconcile, run_with_timeout};

/// A project whose one app draws warnings only (no kill_timeout, no log files).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\nname = \"w\"\necosystem = [\"eco.json\"]\nnamespaces = [\"web\"]\n").unwrap();
    std::fs::write(
        dir.path().join("eco.json"),
        r#"{"apps":[{"name":"api","namespace":"web","script":"/bin/sleep","interpreter":"none","args":["60"],"exec_mode":"fork","min_uptime":5000,"max_restarts":10,"restart_delay":2000}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("jlist.json"), "[]").unwrap();
    dir
}

fn plan(dir: &std::path::Path, flags: &[&str]) -> (i32, String, String) {
    let out = run_with_timeout(reconcile(dir).args(flags).args(["plan", "--live", "jlist.json"]), Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plan_sums_lint_warnings_up_in_one_line_and_v_and_q_do_what_they_say() {
    let dir = project();
    let (code, stdout, stderr) = plan(dir.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.contains("Plan: 1 to create"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("3 lint warnings (kill-timeout, log-files ×2); `reconcile lint` shows them, or add -v"), "{stderr}");

    let (code, stdout_v, stderr) = plan(dir.path(), &["-v"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("warning[kill-timeout]") && stderr.contains("warning[log-files]"), "{stderr}");
    assert_eq!(stdout_v, stdout, "-v changes what goes to stderr, not the plan");

    let (code, stdout_q, stderr) = plan(dir.path(), &["-q"]);
    assert_eq!(code, 2);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(stdout_q, stdout, "-q keeps the plan");

    // Errors are shown in full, even with -q.
    std::fs::write(dir.path().join("eco.json"), r#"{"apps":[{"name":"api","namespace":"web","script":"x.js"}]}"#).unwrap();
    let (code, _, stderr) = plan(dir.path(), &["-q"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("error[min-uptime]"), "{stderr}");
    // -q and -v together are a usage error.
    assert_eq!(plan(dir.path(), &["-q", "-v"]).0, 1);
}
