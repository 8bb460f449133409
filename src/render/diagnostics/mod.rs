//! Findings for people (`human`), scripts (`json`), code scanning (`sarif`) and
//! workflow annotations (`github`).

mod github;
mod human;
mod json;
mod sarif;

pub use github::github;
pub use human::{human, rules_table};
pub use json::json;
pub use sarif::sarif;

use crate::validate::{Diagnostic, Severity};

/// Counts for the closing line and the JSON summary.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub files: usize,
    pub apps: usize,
    pub errors: usize,
    pub warnings: usize,
}

impl Summary {
    /// Counts the findings.
    pub fn new(files: usize, apps: usize, diagnostics: &[Diagnostic]) -> Self {
        let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        Self { files, apps, errors, warnings: diagnostics.len() - errors }
    }
}
