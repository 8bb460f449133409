//! A finding about a file: what, where, and what to do. Findings are data; `render`
//! formats them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How bad a finding is. Errors block `plan` and `apply`; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One finding. The serialized fields are the `lint --format json` contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The rule id (kebab-case), e.g. `min-uptime`.
    pub rule: String,
    pub severity: Severity,
    /// The file as the user named it.
    pub file: PathBuf,
    /// 1-based; 0 when the finding is about the whole file and has no position.
    pub line: usize,
    pub column: usize,
    /// The fact.
    pub message: String,
    /// The edit that fixes it.
    pub help: String,
    /// The app the finding is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

impl Diagnostic {
    /// Sort key: file, line, column, rule.
    pub fn sort_key(&self) -> (&PathBuf, usize, usize, &str) {
        (&self.file, self.line, self.column, &self.rule)
    }
}
