//! The README's quickstart, word for word: its `sh` block, run by bash with
//! `set -eu` in a fresh directory, with the built `reconcile` and the repository's
//! `pm2` on `PATH` and a private `PM2_HOME` (whose daemon the harness kills).

use std::process::Command;
use std::time::Duration;

use crate::support::process::repo;
use crate::support::{Pm2Home, pm2_bin, run_with_timeout};

fn quickstart_block() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let start = readme.find("<!-- quickstart:begin").expect("the README marks its quickstart");
    let end = readme[start..].find("<!-- quickstart:end").expect("the quickstart ends") + start;
    let section = &readme[start..end];
    let code = section.split_once("```sh\n").expect("an sh block").1;
    code.rsplit_once("```").expect("the block is closed").0.to_string()
}

#[test]
fn the_readme_quickstart_works_word_for_word() {
    let block = quickstart_block();
    assert!(block.contains("reconcile apply"), "the quickstart applies something:\n{block}");
    let home = Pm2Home::empty();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_reconcile")).parent().expect("bin dir").to_path_buf();
    let pm2_dir = pm2_bin().parent().expect(".bin").to_path_buf();
    let path = std::env::join_paths(
        [bin_dir, pm2_dir].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -eu\n{block}"))
        .current_dir(&work)
        .env("PATH", path)
        .env("PM2_HOME", home.path())
        .env("HOME", &work)
        .env("NO_COLOR", "1")
        .env_remove("RECONCILE_PM2")
        .env_remove("_");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the quickstart failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(stdout.contains("Apply complete"), "{stdout}");
    let list = home.jlist();
    let api = list.as_array().and_then(|l| l.iter().find(|p| p["name"] == "api")).expect("api is live");
    assert_eq!(api["pm2_env"]["env"]["GREETING"], "hello", "the change was applied");
    assert_eq!(api["pm2_env"]["status"], "online");
}
