//! The imported state, checked as `plan` will check it: which rules the apps break as
//! they run today (so `reconcile.toml` can grade them as warnings instead of refusing
//! every plan), and whether the written apps plan clean against the live state read.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::ecosystem::{EcosystemFile, Format, LoadOptions};
use crate::config::project::{PoliciesSection, SafetySection};
use crate::desired::{DesiredApp, Host, extract_apps};
use crate::live::LiveState;
use crate::plan::{self, Action};
use crate::redact::Redactor;
use crate::validate::{self, Context, Registry, Severity};

/// Rules that are about how a file is written, not about the apps: an import that broke
/// them would be a defect to report, never a rule to re-grade.
const NEVER_REGRADED: &[&str] = &["load", "schema", "unknown-key", "duplicate-key"];

/// A rule the imported apps break with the built-in severity `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRule {
    pub rule: String,
    /// The apps that break it, in file order.
    pub apps: Vec<String>,
}

/// Why the imported state could not be checked (a defect of `import`, not bad input).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the built-in rules could not be loaded: {0}")]
    Registry(#[from] validate::RegistryError),
    #[error("the imported file does not read back: {0}")]
    Reload(#[from] crate::config::ecosystem::LoadError),
    #[error("the imported file breaks `{rule}`: {message}")]
    Written { rule: String, message: String },
}

/// Runs every built-in check on `document` (as the file `path` would hold it) with
/// `namespaces` owned, and returns the rules that fail with severity `error`.
pub fn broken_rules(document: &Value, path: &Path, namespaces: &[String]) -> Result<Vec<BrokenRule>, CheckError> {
    let registry = Registry::load(&PoliciesSection::default(), Path::new("."))?;
    // Checked as the JSON rendering of the same document: what the YAML or JavaScript
    // file holds once read (without running node for a .cjs file here).
    let text = serde_json::to_string_pretty(document).unwrap_or_default();
    let file = EcosystemFile::parse(&path.with_extension("json"), text, Format::Json, &LoadOptions::default())?;
    let files = [file];
    let ctx = Context { registry: &registry, env: None, owned: Some(namespaces) };
    let (_, findings) = validate::run(&files, ctx);
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for finding in findings.iter().filter(|f| f.severity == Severity::Error) {
        if NEVER_REGRADED.contains(&finding.rule.as_str()) || registry.get(&finding.rule).is_some_and(|r| !r.file.configurable) {
            return Err(CheckError::Written { rule: finding.rule.clone(), message: finding.message.clone() });
        }
        let apps = broken.entry(finding.rule.clone()).or_default();
        if let Some(app) = &finding.app
            && !apps.contains(app) {
                apps.push(app.clone());
            }
    }
    Ok(broken.into_iter().map(|(rule, apps)| BrokenRule { rule, apps }).collect())
}

/// An app that would not plan as `noop` right after the import, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclean {
    pub app: String,
    pub action: Action,
    /// The attribute paths that differ (`env.X`, `status`, ...).
    pub paths: Vec<String>,
}

/// Plans `document` (written in `dir`) against `live`, as `reconcile plan` will, and
/// returns every app that is not a `noop`.
pub fn unclean(document: &Value, dir: &Path, live: &LiveState, namespaces: &[String], redactor: &Redactor) -> Vec<Unclean> {
    let Ok(views) = extract_apps(document, None) else { return Vec::new() };
    let host = Host::current();
    let desired: Vec<DesiredApp> =
        views.iter().map(|view| DesiredApp::build(view, &dir.join("ecosystem"), 0, dir, &host)).collect();
    match plan::diff(&desired, live, namespaces, &SafetySection::default(), redactor) {
        Ok(plan) => plan
            .changes
            .into_iter()
            .filter(|c| c.action != Action::Noop)
            .map(|c| Unclean { app: c.name, action: c.action, paths: c.attributes.into_iter().map(|a| a.path).collect() })
            .collect(),
        // Conflicts cannot arise: every app is imported from an owned namespace.
        Err(conflicts) => conflicts
            .into_iter()
            .map(|c| Unclean { app: c.app, action: Action::Noop, paths: vec![c.message] })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_broken_by_running_apps_are_listed_per_rule() {
        let doc = json!({"apps": [
            {"name": "a", "namespace": "shop", "script": "/bin/sleep", "exec_mode": "fork"},
            {"name": "b", "namespace": "shop", "script": "/bin/sleep", "exec_mode": "fork",
             "min_uptime": 5000, "max_restarts": 5, "restart_delay": 2000},
        ]});
        let broken = broken_rules(&doc, Path::new("/x/eco.yaml"), &["shop".into()]).unwrap();
        let ids: Vec<&str> = broken.iter().map(|b| b.rule.as_str()).collect();
        assert_eq!(ids, ["max-restarts", "min-uptime", "restart-delay"]);
        assert!(broken.iter().all(|b| b.apps == ["a"]), "{broken:?}");
    }

    #[test]
    fn a_schema_error_is_a_defect_not_a_rule_to_regrade() {
        let doc = json!({"apps": [{"name": "a", "namespace": "shop", "script": "x", "exec_mode": "fork", "instances": "many"}]});
        let err = broken_rules(&doc, Path::new("eco.yaml"), &["shop".into()]).unwrap_err();
        assert!(err.to_string().contains("breaks `schema`"), "{err}");
    }
}
