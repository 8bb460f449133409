//! Findings for people (`human`), scripts (`json`), code scanning (`sarif`) and
//! workflow annotations (`github`).

mod github;
mod human;
mod json;
mod sarif;

pub use github::github;
pub use human::{explain, human, rules_markdown, rules_table, warnings_line};
pub use json::json;
pub use sarif::sarif;

use std::path::{Path, PathBuf};

use crate::validate::{Diagnostic, Severity};

/// Where the documentation of the built-in rules lives (`docs/rules.md`, one section
/// per rule, anchored by its id): SARIF `helpUri` and `lint --explain` point there.
pub const RULES_DOC: &str = "https://github.com/reconcile-pm2/reconcile/blob/main/docs/rules.md";

/// The documentation address of a built-in rule (`None` for rules from `[policies] paths`).
pub fn rule_doc(rule: &crate::validate::Rule) -> Option<String> {
    rule.origin_path.starts_with("builtin:").then(|| format!("{RULES_DOC}#{}", rule.id()))
}

/// What finding paths are relative to in code scanning and annotations: the root of
/// the git repository the command runs in (so that with `-C deploy/` a finding in
/// `ecosystem.config.cjs` lands on `deploy/ecosystem.config.cjs` of the diff), else
/// the working directory.
#[derive(Debug, Clone)]
pub struct SourceRoot {
    /// Absolute, symlinks resolved.
    pub dir: PathBuf,
}

impl SourceRoot {
    /// The repository root around the working directory, else the working directory.
    pub fn discover() -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let dir = git2::Repository::discover(&cwd)
            .ok()
            .and_then(|repo| repo.workdir().map(Path::to_path_buf))
            .unwrap_or(cwd);
        Self { dir: canonical(&dir) }
    }

    /// `file` (as named, relative to the working directory) relative to the root, with
    /// `/` separators; as named when it lies outside.
    pub fn relative(&self, file: &Path) -> String {
        let absolute = canonical(file);
        match absolute.strip_prefix(&self.dir) {
            Ok(rel) => human::display(rel),
            Err(_) => human::display(file),
        }
    }

    /// The root as a `file://` URI ending in `/` (SARIF `originalUriBaseIds`).
    pub fn uri(&self) -> Option<String> {
        url::Url::from_directory_path(&self.dir).ok().map(String::from)
    }
}

/// `path` absolute with symlinks resolved; for a path that does not exist, its
/// parent's resolved path joined with its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent).map_or(absolute.clone(), |p| p.join(name)),
        _ => absolute,
    }
}

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
