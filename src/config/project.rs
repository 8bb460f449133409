//! `reconcile.toml`: which ecosystem files and PM2 namespaces this project owns, and
//! how the tool behaves. Unknown keys are errors. Described for editors by
//! `schemas/reconcile.schema.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::source::SourceFile;

/// `reconcile.toml` over this is refused (read with [`super::read`]).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// The file name looked for in the working directory (or `-C DIR`).
pub const FILE_NAME: &str = "reconcile.toml";

/// A loaded `reconcile.toml`, with the directory relative paths resolve against.
#[derive(Debug, Clone)]
pub struct Project {
    /// Where the file is.
    pub path: PathBuf,
    /// Its directory: `ecosystem`, `policies.paths` and `journal.path` are relative to it.
    pub root: PathBuf,
    /// The settings.
    pub settings: Settings,
    /// Where symlinks among the project's files may lead: `root`, or in pull mode the
    /// checkout (see [`crate::config::read`]).
    pub scope: PathBuf,
}

/// The contents of `reconcile.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub project: ProjectSection,
    #[serde(default)]
    pub pm2: Pm2Section,
    #[serde(default)]
    pub safety: SafetySection,
    #[serde(default)]
    pub policies: PoliciesSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub secrets: SecretsSection,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub revision: RevisionSection,
    /// `[[hosts]]`: desired-state files for the hosts whose labels match.
    #[serde(default)]
    pub hosts: Vec<HostsEntry>,
}

/// One `[[hosts]]` entry: `match = { role = "web" }` and the `ecosystem` files the
/// hosts with every one of those labels (`watch --label role=web`) also apply. One
/// directory of a fleet's repository can so serve a group of hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsEntry {
    /// Label name to the value a host must have; all must match (at least one).
    #[serde(rename = "match")]
    pub selector: BTreeMap<String, String>,
    /// Desired-state files added for matching hosts, relative to `reconcile.toml`.
    pub ecosystem: Vec<PathBuf>,
}

impl HostsEntry {
    /// Whether a host with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `[project]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    /// The project's name (shown in plans and the journal).
    pub name: Option<String>,
    /// Desired-state files, relative to `reconcile.toml`.
    #[serde(default)]
    pub ecosystem: Vec<PathBuf>,
    /// The PM2 namespaces this project owns; nothing else is ever touched.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Which `env_<name>` block to merge, as `pm2 start FILE --env NAME`.
    pub env: Option<String>,
    /// Whether JavaScript ecosystem files may be evaluated (default true).
    #[serde(default = "default_true")]
    pub allow_js: bool,
    /// How long a JavaScript ecosystem file may take to evaluate.
    #[serde(default = "default_js_timeout_ms")]
    pub js_timeout_ms: u64,
}

/// `[pm2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pm2Section {
    /// The PM2 home; else `$PM2_HOME`, else `~/.pm2`.
    pub home: Option<PathBuf>,
    /// Deadline for every call to the daemon.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Keep PM2's dump (`dump.pm2`) in step with what `apply` applied, and report
    /// owned apps whose live state differs from it (`unsaved`). Default true.
    #[serde(default = "default_true")]
    pub save: bool,
}

impl Default for Pm2Section {
    fn default() -> Self {
        Self { home: None, timeout_ms: default_timeout_ms(), save: true }
    }
}

/// `[safety]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetySection {
    /// Delete owned processes that are not desired.
    #[serde(default)]
    pub prune: bool,
    /// Abort a plan that deletes more apps than this.
    #[serde(default = "default_max_deletes")]
    pub max_deletes: usize,
    /// Abort a plan that changes more than this fraction of the owned apps (0..=1).
    #[serde(default = "default_max_changed_fraction")]
    pub max_changed_fraction: f64,
}

impl Default for SafetySection {
    fn default() -> Self {
        Self {
            prune: false,
            max_deletes: default_max_deletes(),
            max_changed_fraction: default_max_changed_fraction(),
        }
    }
}

/// `[policies]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSection {
    /// Extra policy files or directories of them, beside the built-in ones.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Per-rule settings: `severity` and the rule's own parameters.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleSettings>,
}

/// `[policies.rules.<id>]`: a severity and rule parameters (checked against the rule).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleSettings {
    /// `error`, `warning` or `off`.
    pub severity: Option<SeveritySetting>,
    /// The rule's parameters, e.g. `min = 10000` for `min-uptime`.
    #[serde(flatten)]
    pub params: BTreeMap<String, toml::Value>,
}

/// A severity as written in `reconcile.toml` or a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeveritySetting {
    Error,
    Warning,
    Off,
}

/// `[health]`: when `status` (and later `watch`) calls a process crash-looping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// A process with more restarts than this in all is flagged (incident 003's script used 50).
    #[serde(default = "default_crash_restarts")]
    pub crash_restarts: u64,
    /// ... or with more than `crash_window_restarts` within `crash_window_s` seconds.
    #[serde(default = "default_crash_window_restarts")]
    pub crash_window_restarts: u64,
    #[serde(default = "default_crash_window_s")]
    pub crash_window_s: u64,
    /// apply's health gate: after `min_uptime`, a process must not crash for this long.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Per-app overrides (`[health.apps.NAME] settle_ms = ...`).
    #[serde(default)]
    pub apps: BTreeMap<String, AppHealth>,
}

/// `[health.apps.NAME]`: an app's own gate settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppHealth {
    pub settle_ms: Option<u64>,
}

impl HealthSection {
    /// The settle window of `app`: its own, else the project's.
    pub fn settle_ms_for(&self, app: &str) -> u64 {
        self.apps.get(app).and_then(|a| a.settle_ms).unwrap_or(self.settle_ms)
    }
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            crash_restarts: default_crash_restarts(),
            crash_window_restarts: default_crash_window_restarts(),
            crash_window_s: default_crash_window_s(),
            settle_ms: default_settle_ms(),
            apps: BTreeMap::new(),
        }
    }
}

/// `[secrets]`: env keys whose values never appear in output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// Glob patterns on env keys, case-insensitive.
    #[serde(default = "default_secret_patterns")]
    pub patterns: Vec<String>,
}

impl Default for SecretsSection {
    fn default() -> Self {
        Self { patterns: default_secret_patterns() }
    }
}

/// `[journal]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Where apply appends its JSON-lines journal (default `.reconcile/journal.jsonl`).
    pub path: Option<PathBuf>,
}

/// How an app's code revision is read (`[revision]`, and per app
/// `[revision.apps.<name>]`, whose keys override the project's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionSection {
    /// `git` (default), `files` or `off`.
    pub mode: Option<RevisionMode>,
    /// `git`: narrow the revision to these paths (files or directories, relative to
    /// `reconcile.toml`); empty: the whole work tree holding the app's script.
    pub paths: Option<Vec<PathBuf>>,
    /// `files`: globs of the files whose contents make the revision (relative to
    /// `reconcile.toml`, `**` for any depth).
    pub files: Option<Vec<String>>,
    /// `files`: globs left out beside the built-in ones (`**/*.log`, `**/*.pid`, ...).
    pub ignore: Option<Vec<String>>,
    /// Per-app settings, by app name.
    #[serde(default)]
    pub apps: BTreeMap<String, RevisionApp>,
}

/// `[revision.apps.<name>]`: the keys of `[revision]` for one app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionApp {
    pub mode: Option<RevisionMode>,
    pub paths: Option<Vec<PathBuf>>,
    pub files: Option<Vec<String>>,
    pub ignore: Option<Vec<String>>,
}

/// Where a revision comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionMode {
    /// The content of the git work tree (committed and uncommitted), read through libgit2.
    #[default]
    Git,
    /// A digest of the files matched by globs (hosts deployed without git).
    Files,
    /// No revision: code changes are not tracked.
    Off,
}

fn default_true() -> bool {
    true
}
fn default_js_timeout_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_deletes() -> usize {
    2
}
fn default_max_changed_fraction() -> f64 {
    0.5
}
fn default_crash_restarts() -> u64 {
    50
}
fn default_crash_window_restarts() -> u64 {
    5
}
fn default_crash_window_s() -> u64 {
    300
}
/// 5 s: incident 003's gateway crashed *after* its warm-up, when it bound its port;
/// crashes of that kind (a bind, a first connection to a database or an upstream,
/// whose client timeouts are typically a few seconds) come in the first seconds after
/// start-up. 5 s also covers the incident's `restart_delay` of 2000 ms twice over, so a
/// crash is seen restarting, and costs one 5 s wait per apply (processes are gated
/// together), not one per app.
fn default_settle_ms() -> u64 {
    5_000
}
fn default_secret_patterns() -> Vec<String> {
    crate::redact::DEFAULT_PATTERNS.iter().map(|p| (*p).to_string()).collect()
}

/// Why `reconcile.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// `--config` or `-C` named something that is not there, or not a regular file.
    #[error(transparent)]
    Read(#[from] super::read::ReadError),
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}:{line}:{column}: {message}\n  = help: see schemas/reconcile.schema.json for every key")]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
}

impl Project {
    /// Finds the project file: `--config FILE`, else `reconcile.toml` in `dir`.
    /// Returns `Ok(None)` when there is none and none was asked for.
    pub fn discover(config: Option<&Path>, dir: &Path) -> Result<Option<Self>, ProjectError> {
        match config {
            Some(path) => {
                let path = if path.is_absolute() || dir == Path::new(".") { path.to_path_buf() } else { dir.join(path) };
                Self::load(&path).map(Some)
            }
            None => {
                let path = if dir == Path::new(".") { PathBuf::from(FILE_NAME) } else { dir.join(FILE_NAME) };
                // Present in any form (a FIFO, a dangling link) is loaded, so that it is refused
                // with a reason instead of being silently skipped.
                if path.symlink_metadata().is_ok() { Self::load(&path).map(Some) } else { Ok(None) }
            }
        }
    }

    /// Reads and checks one `reconcile.toml`.
    pub fn load(path: &Path) -> Result<Self, ProjectError> {
        Self::load_in(path, None)
    }

    /// [`Self::load`], with symlinks allowed to lead anywhere inside `scope` (pull mode:
    /// the checkout) instead of only inside the file's own directory.
    pub fn load_in(path: &Path, scope: Option<&Path>) -> Result<Self, ProjectError> {
        let text = super::read::read_text(path, scope, MAX_BYTES)?;
        let settings = Self::parse(path, &text)?;
        // The patterns that values are learned by, from here on (see `redact`).
        crate::redact::Redactor::new(&settings.secrets.patterns);
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root };
        let scope = scope.map_or_else(|| root.clone(), Path::to_path_buf);
        Ok(Self { path: path.to_path_buf(), root, settings, scope })
    }

    /// Parses the text of a `reconcile.toml`.
    pub fn parse(path: &Path, text: &str) -> Result<Settings, ProjectError> {
        let settings: Settings = toml::from_str(text).map_err(|err| {
            let source = SourceFile::new(path, text);
            let location = source.location(err.span().map_or(0, |s| s.start));
            ProjectError::Invalid {
                path: path.to_path_buf(),
                line: location.line,
                column: location.column,
                message: err.message().trim().to_string(),
            }
        })?;
        let fraction = settings.safety.max_changed_fraction;
        if !(0.0..=1.0).contains(&fraction) {
            let offset = text.find("max_changed_fraction").unwrap_or(0);
            let location = SourceFile::new(path, text).location(offset);
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                line: location.line,
                column: location.column,
                message: format!("max_changed_fraction is {fraction}; it must be between 0 and 1"),
            });
        }
        if let Some(bad) = revision_glob_error(&settings.revision) {
            let offset = text.find("[revision").unwrap_or(0);
            let location = SourceFile::new(path, text).location(offset);
            return Err(ProjectError::Invalid { path: path.to_path_buf(), line: location.line, column: location.column, message: bad });
        }
        if let Some((app, why)) = settings.revision.apps.iter().find_map(|(name, app)| {
            (app.mode.unwrap_or(settings.revision.mode.unwrap_or_default()) == RevisionMode::Files
                && app.files.as_ref().or(settings.revision.files.as_ref()).is_none_or(Vec::is_empty))
            .then(|| (name.clone(), "mode = \"files\" needs `files` globs"))
        }) {
            let offset = text.find(&format!("[revision.apps.{app}]")).unwrap_or(0);
            let location = SourceFile::new(path, text).location(offset);
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                line: location.line,
                column: location.column,
                message: format!("[revision.apps.{app}]: {why}, e.g. files = [\"dist/**\", \"package.json\"]"),
            });
        }
        if settings.revision.mode == Some(RevisionMode::Files) && settings.revision.files.as_ref().is_none_or(Vec::is_empty) {
            let offset = text.find("[revision]").unwrap_or(0);
            let location = SourceFile::new(path, text).location(offset);
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                line: location.line,
                column: location.column,
                message: "[revision] mode = \"files\" needs `files` globs, e.g. files = [\"dist/**\", \"package.json\"]".into(),
            });
        }
        if let Some(i) = settings.hosts.iter().position(|h| h.selector.is_empty() || h.ecosystem.is_empty()) {
            // The i-th `[[hosts]]` header, for the position.
            let offset = text.match_indices("[[hosts]]").nth(i).map_or(0, |(o, _)| o);
            let location = SourceFile::new(path, text).location(offset);
            return Err(ProjectError::Invalid {
                path: path.to_path_buf(),
                line: location.line,
                column: location.column,
                message: "a [[hosts]] entry needs a non-empty `match` (e.g. match = { role = \"web\" }) and `ecosystem` files".into(),
            });
        }
        Ok(settings)
    }

    /// Adds the `ecosystem` files of every `[[hosts]]` entry that `labels` match to
    /// `[project] ecosystem` (`watch --label`). Returns how many entries matched.
    pub fn select_hosts(&mut self, labels: &BTreeMap<String, String>) -> usize {
        let selected: Vec<PathBuf> = self.settings.hosts.iter().filter(|h| h.matches(labels)).flat_map(|h| h.ecosystem.clone()).collect();
        let matched = self.settings.hosts.iter().filter(|h| h.matches(labels)).count();
        for file in selected {
            if !self.settings.project.ecosystem.contains(&file) {
                self.settings.project.ecosystem.push(file);
            }
        }
        matched
    }

    /// The ecosystem files, resolved against the project directory.
    pub fn ecosystem_paths(&self) -> Vec<PathBuf> {
        let here = self.root == Path::new(".");
        self.settings.project.ecosystem.iter().map(|p| if here { p.clone() } else { self.root.join(p) }).collect()
    }

    /// Whether `namespace` is owned by this project.
    pub fn owns(&self, namespace: &str) -> bool {
        self.settings.project.namespaces.iter().any(|n| n == namespace)
    }
}

/// The first glob of `[revision]` that does not parse, as a message.
fn revision_glob_error(section: &RevisionSection) -> Option<String> {
    let globs = section
        .files
        .iter()
        .chain(&section.ignore)
        .chain(section.apps.values().flat_map(|a| a.files.iter().chain(&a.ignore)))
        .flatten();
    globs.into_iter().find_map(|g| globset::Glob::new(g).err().map(|e| format!("[revision]: bad glob `{g}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let err = Project::parse(Path::new("r.toml"), "[project]\nname = \"x\"\nnamespace = [\"a\"]\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("r.toml:3:1: unknown field `namespace`"), "{text}");
    }

    #[test]
    fn hosts_entries_add_ecosystem_files_for_matching_labels_only() {
        let text = "[project]\necosystem = [\"base.json\"]\nnamespaces = [\"a\"]\n\n[[hosts]]\nmatch = { role = \"web\", region = \"eu\" }\necosystem = [\"web.json\"]\n\n[[hosts]]\nmatch = { role = \"worker\" }\necosystem = [\"worker.json\"]\n";
        let settings = Project::parse(Path::new("r.toml"), text).unwrap();
        let project = Project { path: "r.toml".into(), root: ".".into(), settings, scope: ".".into() };
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let files = |l: &[(&str, &str)]| {
            let mut p = project.clone();
            let n = p.select_hosts(&labels(l));
            (n, p.settings.project.ecosystem.iter().map(|f| f.display().to_string()).collect::<Vec<_>>())
        };
        assert_eq!(files(&[("role", "web"), ("region", "eu")]), (1, vec!["base.json".into(), "web.json".into()]));
        assert_eq!(files(&[("role", "web"), ("region", "us")]), (0, vec!["base.json".into()]), "every label must match");
        assert_eq!(files(&[("role", "worker"), ("zone", "b")]), (1, vec!["base.json".into(), "worker.json".into()]));
        assert_eq!(files(&[]), (0, vec!["base.json".into()]));
        let err = Project::parse(Path::new("r.toml"), "[[hosts]]\nmatch = { role = \"web\" }\necosystem = [\"w.json\"]\nlabels = 1\n").unwrap_err();
        assert!(err.to_string().starts_with("r.toml:4:1: unknown field `labels`"), "{err}");
        let err = Project::parse(Path::new("r.toml"), "[project]\nname = \"x\"\n\n[[hosts]]\nmatch = {}\necosystem = [\"w.json\"]\n").unwrap_err();
        assert!(err.to_string().starts_with("r.toml:4:1: a [[hosts]] entry needs a non-empty `match`"), "{err}");
    }

    #[test]
    fn defaults_apply_when_sections_are_missing() {
        let settings = Project::parse(Path::new("r.toml"), "[project]\nnamespaces = [\"a\"]\n").unwrap();
        assert_eq!(settings.pm2.timeout_ms, 10_000);
        assert!(settings.pm2.save, "the dump is kept by default");
        assert_eq!(settings.safety.max_deletes, 2);
        assert!(settings.project.allow_js);
        assert_eq!(settings.secrets.patterns.len(), crate::redact::DEFAULT_PATTERNS.len());
    }

    #[test]
    fn rule_settings_take_severity_and_parameters() {
        let settings = Project::parse(
            Path::new("r.toml"),
            "[policies.rules.min-uptime]\nseverity = \"warning\"\nmin = 10000\n",
        )
        .unwrap();
        let rule = &settings.policies.rules["min-uptime"];
        assert_eq!(rule.severity, Some(SeveritySetting::Warning));
        assert_eq!(rule.params["min"].as_integer(), Some(10000));
    }

    #[test]
    fn revision_settings_parse_and_files_mode_needs_globs() {
        let settings = Project::parse(
            Path::new("r.toml"),
            "[revision]\npaths = [\"apps/api\"]\n[revision.apps.web]\nmode = \"files\"\nfiles = [\"dist/**\"]\n",
        )
        .unwrap();
        assert_eq!(settings.revision.paths, Some(vec![PathBuf::from("apps/api")]));
        assert_eq!(settings.revision.apps["web"].mode, Some(RevisionMode::Files));
        let err = Project::parse(Path::new("r.toml"), "[project]\n[revision]\nmode = \"files\"\n").unwrap_err();
        assert!(err.to_string().contains("r.toml:2:1: [revision] mode = \"files\" needs `files` globs"), "{err}");
        let err = Project::parse(Path::new("r.toml"), "[revision]\nmode = \"files\"\nfiles = [\"a/{b\"]\n").unwrap_err();
        assert!(err.to_string().contains("bad glob `a/{b`"), "{err}");
        let err = Project::parse(Path::new("r.toml"), "[revision]\nmode = \"svn\"\n").unwrap_err();
        assert!(err.to_string().contains("r.toml:2:8"), "{err}");
    }

    #[test]
    fn pm2_save_is_a_boolean() {
        let settings = Project::parse(Path::new("r.toml"), "[pm2]\nsave = false\n").unwrap();
        assert!(!settings.pm2.save);
        let err = Project::parse(Path::new("r.toml"), "[pm2]\nsave = \"no\"\n").unwrap_err();
        assert!(err.to_string().starts_with("r.toml:2:"), "{err}");
    }

    #[test]
    fn fraction_out_of_range_is_an_error() {
        let err = Project::parse(Path::new("r.toml"), "[safety]\nmax_changed_fraction = 2.0\n").unwrap_err();
        assert!(err.to_string().contains("r.toml:2:1: max_changed_fraction is 2"), "{err}");
    }
}
