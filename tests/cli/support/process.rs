//! Running the binary with a deadline, and paths to the repository and the corpus.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The third-party ecosystem corpus beside the repository (`../shared/corpus/ecosystem`).
pub fn corpus() -> PathBuf {
    let dir = repo().join("../shared/corpus/ecosystem");
    assert!(dir.is_dir(), "the corpus is missing at {}: check out shared/ beside the repository", dir.display());
    dir
}

/// A `reconcile` command with a clean, predictable environment.
pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reconcile"));
    command.env_remove("RUST_LOG").env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Fails the test unless the exit code is `code` and nothing panicked.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(!self.stderr.contains("panicked"), "panic: {self:#?}");
        assert_eq!(self.code, Some(code), "unexpected exit code: {self:#?}");
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs a command, killing it if it outlives `limit` (a hang is a test failure).
pub fn run(mut command: Command, limit: Duration) -> Output {
    let start = Instant::now();
    let output = super::run_with_timeout(&mut command, limit);
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Runs `reconcile ARGS` in `dir` with a 60 s limit.
pub fn reconcile_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = bin();
    command.current_dir(dir).args(args);
    run(command, Duration::from_secs(60))
}

/// The 1-based line of the first line of `file` containing `needle`.
pub fn line_of(file: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in {}", file.display())) + 1
}
