//! The process exit codes that scripts rely on (DESIGN.md, Contracts).

use std::process::ExitCode;

/// What a command ended with; converts to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: success, or `plan` found no changes.
    Success,
    /// 1: any error, lint errors, a refused or failed apply.
    Error,
    /// 2: `plan` found changes.
    Changes,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::Error => ExitCode::from(1),
            ExitStatus::Changes => ExitCode::from(2),
        }
    }
}
