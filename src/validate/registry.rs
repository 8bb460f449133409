//! Every rule, built-in or the user's, with its metadata, severity and parameters.
//! Rules are data files (`policies/*.toml`); rules that data cannot express are code
//! but have a file too, so they are listed, re-graded and switched off the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::project::{PoliciesSection, SeveritySetting};
use crate::validate::Severity;

/// The built-in policy files, compiled into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("load.toml", include_str!("../../policies/load.toml")),
    ("schema.toml", include_str!("../../policies/schema.toml")),
    ("unknown-key.toml", include_str!("../../policies/unknown-key.toml")),
    ("duplicate-key.toml", include_str!("../../policies/duplicate-key.toml")),
    ("exec-mode.toml", include_str!("../../policies/exec-mode.toml")),
    ("min-uptime.toml", include_str!("../../policies/min-uptime.toml")),
    ("max-restarts.toml", include_str!("../../policies/max-restarts.toml")),
    ("restart-delay.toml", include_str!("../../policies/restart-delay.toml")),
    ("kill-timeout.toml", include_str!("../../policies/kill-timeout.toml")),
    ("log-files.toml", include_str!("../../policies/log-files.toml")),
    ("owned-namespace.toml", include_str!("../../policies/owned-namespace.toml")),
    ("reserved-name.toml", include_str!("../../policies/reserved-name.toml")),
    ("unique-name.toml", include_str!("../../policies/unique-name.toml")),
    ("unique-port.toml", include_str!("../../policies/unique-port.toml")),
    ("missing-env.toml", include_str!("../../policies/missing-env.toml")),
    ("watch-in-production.toml", include_str!("../../policies/watch-in-production.toml")),
    ("live-name-conflict.toml", include_str!("../../policies/live-name-conflict.toml")),
    ("owns-default.toml", include_str!("../../policies/owns-default.toml")),
    ("pm2-refuses.toml", include_str!("../../policies/pm2-refuses.toml")),
];

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Kebab-case id, unique across all rules.
    pub id: String,
    /// Default severity.
    pub severity: Severity,
    /// What the rule checks and why (one or two sentences).
    pub description: String,
    /// The default help line (the edit that fixes a finding).
    pub help: String,
    /// Which incident or PM2 behaviour the rule traces to.
    #[serde(default)]
    pub origin: Option<String>,
    /// `data` (evaluated from `checks`) or `code` (built into reconcile).
    #[serde(default)]
    pub kind: RuleKind,
    /// Whether `[policies.rules.<id>]` may re-grade or switch it off.
    #[serde(default = "yes")]
    pub configurable: bool,
    /// Parameters, overridable in `reconcile.toml`; `"{name}"` in checks and messages.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// For data rules: conditions each app must meet.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Examples that must pass or fail; run by the test suite.
    #[serde(default)]
    pub tests: Vec<RuleTest>,
}

fn yes() -> bool {
    true
}

/// Data or code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    #[default]
    Data,
    Code,
}

/// One condition of a data rule, evaluated per app after aliases, coercion and env merge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The key the finding points at (`min_uptime`); empty for the app itself.
    #[serde(default)]
    pub key: String,
    /// Only for these env names (`[project] env` / `--env`), e.g. `["production"]`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// JSON Schema: the check applies only to apps that match it.
    #[serde(default)]
    pub when: Option<Value>,
    /// JSON Schema the app must match.
    pub require: Value,
    /// The finding; `{value}` is the key's value (or `not set`), `{name}` the app, `{param}` a parameter.
    pub message: String,
    /// Overrides the rule's help for this check.
    #[serde(default)]
    pub help: Option<String>,
}

/// An example for a rule: an app (or apps, or a whole file's text) and whether the rule fires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    #[serde(default)]
    pub app: Option<Value>,
    #[serde(default)]
    pub apps: Option<Vec<Value>>,
    /// A whole JSON file's text (for rules about the file itself).
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    /// Owned namespaces for the test (default: none, as without reconcile.toml).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Whether the rule must fire.
    pub fails: bool,
}

/// A rule ready to run: its file, where it came from, and its effective settings.
#[derive(Debug, Clone)]
pub struct Rule {
    pub file: RuleFile,
    /// `builtin:min-uptime.toml` or a path.
    pub origin_path: String,
    /// `None` when switched off.
    pub severity: Option<Severity>,
    /// Defaults merged with `reconcile.toml`.
    pub params: BTreeMap<String, Value>,
    /// The checks' schemas with parameters filled in, compiled once.
    pub compiled: Vec<CompiledCheck>,
}

/// A data check's `when` and `require`, compiled.
#[derive(Debug, Clone)]
pub struct CompiledCheck {
    pub when: Option<Arc<jsonschema::Validator>>,
    pub require: Arc<jsonschema::Validator>,
}

impl Rule {
    /// The id.
    pub fn id(&self) -> &str {
        &self.file.id
    }

    /// Replaces `{param}` placeholders in a message.
    pub fn fill(&self, template: &str, extra: &[(&str, String)]) -> String {
        let mut text = template.to_string();
        for (name, value) in &self.params {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            text = text.replace(&format!("{{{name}}}"), &shown);
        }
        for (name, value) in extra {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// Compiles the checks' schemas with the effective parameters.
    fn compile(&self) -> Result<Vec<CompiledCheck>, RegistryError> {
        // Built-in checks are compiled as draft 7 (see `schema::builtin_validator` for
        // why); a user's policy file gets the default, 2020-12.
        let builtin = self.origin_path.starts_with("builtin:");
        let build = |schema: &Value, what: &str, i: usize| {
            let schema = self.instantiate(schema);
            let compiled = if builtin { super::schema::builtin_validator(&schema) } else { jsonschema::validator_for(&schema) };
            compiled.map(Arc::new).map_err(|err| RegistryError::InvalidFile {
                origin: self.origin_path.clone(),
                message: format!("rule `{}` check #{} `{what}` is not a valid JSON Schema: {err}", self.file.id, i + 1),
            })
        };
        self.file
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                Ok(CompiledCheck {
                    when: check.when.as_ref().map(|w| build(w, "when", i)).transpose()?,
                    require: build(&check.require, "require", i)?,
                })
            })
            .collect()
    }

    /// A JSON Schema with every string `"{param}"` replaced by the parameter's value.
    pub fn instantiate(&self, schema: &Value) -> Value {
        match schema {
            Value::String(s) => s
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .and_then(|name| self.params.get(name))
                .cloned()
                .unwrap_or_else(|| schema.clone()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.instantiate(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.instantiate(v))).collect()),
            other => other.clone(),
        }
    }
}

/// Why the rule set could not be built. These stop the command (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{origin}: invalid policy file: {message}")]
    InvalidFile { origin: String, message: String },
    #[error("cannot read policy path {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A policy file that is not a regular file, or a symlink out of the project.
    #[error(transparent)]
    File(#[from] crate::config::read::ReadError),
    #[error("{origin}: rule `{id}` is already defined by {first}; give the new rule another id")]
    DuplicateId { origin: String, id: String, first: String },
    #[error("reconcile.toml: [policies.rules.{id}] names no rule{}; `reconcile lint --list-rules` lists them", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownRule { id: String, suggestion: Option<String> },
    #[error("reconcile.toml: [policies.rules.{id}] sets `{param}`, which the rule does not take; it takes: {known}")]
    UnknownParam { id: String, param: String, known: String },
    #[error("reconcile.toml: [policies.rules.{id}] `{param}` must be {expected}")]
    ParamType { id: String, param: String, expected: &'static str },
    #[error("reconcile.toml: rule `{id}` cannot be re-graded or switched off")]
    NotConfigurable { id: String },
}

/// Policy files over this are refused (a rule file is a few KB).
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// All rules, in a stable order (built-ins first, then user files by path).
#[derive(Debug, Clone)]
pub struct Registry {
    pub rules: Vec<Rule>,
}

impl Registry {
    /// Built-in rules plus the files under `settings.paths` (relative to `root`),
    /// re-graded and parameterized by `settings.rules`.
    pub fn load(settings: &PoliciesSection, root: &Path) -> Result<Self, RegistryError> {
        let mut files: Vec<(String, String)> =
            BUILTIN.iter().map(|(name, text)| (format!("builtin:{name}"), (*text).to_string())).collect();
        for path in &settings.paths {
            let path = root.join(path);
            let mut found = Vec::new();
            if path.is_dir() {
                let entries = std::fs::read_dir(&path).map_err(|source| RegistryError::Read { path: path.clone(), source })?;
                for entry in entries {
                    let entry = entry.map_err(|source| RegistryError::Read { path: path.clone(), source })?;
                    if entry.path().extension().is_some_and(|e| e == "toml") {
                        found.push(entry.path());
                    }
                }
                found.sort();
            } else {
                found.push(path.clone());
            }
            for file in found {
                crate::config::read::confined(&file, root)?;
                let text = crate::config::read::read_text(&file, Some(root), MAX_POLICY_BYTES)?;
                files.push((file.display().to_string(), text));
            }
        }
        let mut rules: Vec<Rule> = Vec::new();
        for (origin, text) in files {
            let file: RuleFile = toml::from_str(&text).map_err(|err| RegistryError::InvalidFile {
                origin: origin.clone(),
                message: locate_toml_error(&text, &err),
            })?;
            validate_rule_file(&origin, &file)?;
            if let Some(first) = rules.iter().find(|r| r.file.id == file.id) {
                return Err(RegistryError::DuplicateId { origin, id: file.id, first: first.origin_path.clone() });
            }
            let params = file.params.clone();
            rules.push(Rule { severity: Some(file.severity), params, origin_path: origin, file, compiled: Vec::new() });
        }
        let mut registry = Self { rules };
        registry.configure(settings)?;
        for rule in &mut registry.rules {
            rule.compiled = rule.compile()?;
        }
        Ok(registry)
    }

    /// Applies `[policies.rules.<id>]`.
    fn configure(&mut self, settings: &PoliciesSection) -> Result<(), RegistryError> {
        for (id, rule_settings) in &settings.rules {
            let Some(rule) = self.rules.iter_mut().find(|r| &r.file.id == id) else {
                let ids: Vec<&str> = self.rules.iter().map(|r| r.file.id.as_str()).collect();
                return Err(RegistryError::UnknownRule { id: id.clone(), suggestion: did_you_mean(id, &ids) });
            };
            if let Some(severity) = rule_settings.severity {
                if !rule.file.configurable {
                    return Err(RegistryError::NotConfigurable { id: id.clone() });
                }
                rule.severity = match severity {
                    SeveritySetting::Error => Some(Severity::Error),
                    SeveritySetting::Warning => Some(Severity::Warning),
                    SeveritySetting::Off => None,
                };
            }
            for (param, value) in &rule_settings.params {
                let Some(default) = rule.file.params.get(param) else {
                    let known = if rule.file.params.is_empty() {
                        "no parameters (only `severity`)".to_string()
                    } else {
                        rule.file.params.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    };
                    return Err(RegistryError::UnknownParam { id: id.clone(), param: param.clone(), known });
                };
                let value = serde_json::to_value(value).unwrap_or(Value::Null);
                let same_type = matches!(
                    (default, &value),
                    (Value::Number(_), Value::Number(_))
                        | (Value::String(_), Value::String(_))
                        | (Value::Bool(_), Value::Bool(_))
                        | (Value::Array(_), Value::Array(_))
                );
                if !same_type {
                    let expected = match default {
                        Value::Number(_) => "a number",
                        Value::String(_) => "a string",
                        Value::Bool(_) => "a boolean",
                        _ => "a list",
                    };
                    return Err(RegistryError::ParamType { id: id.clone(), param: param.clone(), expected });
                }
                rule.params.insert(param.clone(), value);
            }
        }
        Ok(())
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.file.id == id)
    }

    /// The effective severity of a rule; `None` when off or unknown.
    pub fn severity(&self, id: &str) -> Option<Severity> {
        self.get(id).and_then(|r| r.severity)
    }
}

fn validate_rule_file(origin: &str, file: &RuleFile) -> Result<(), RegistryError> {
    let invalid = |message: String| RegistryError::InvalidFile { origin: origin.to_string(), message };
    let id_ok = !file.id.is_empty()
        && file.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !file.id.starts_with('-');
    if !id_ok {
        return Err(invalid(format!("id `{}` must be kebab-case (a-z, 0-9, -)", file.id)));
    }
    if file.kind == RuleKind::Data && file.checks.is_empty() {
        return Err(invalid(format!("data rule `{}` has no [[checks]]", file.id)));
    }
    if file.kind == RuleKind::Code && !origin.starts_with("builtin:") {
        return Err(invalid(format!("rule `{}`: kind = \"code\" is only for built-in rules; write [[checks]]", file.id)));
    }
    Ok(())
}

fn locate_toml_error(text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", err.message().trim())
        }
        None => err.message().trim().to_string(),
    }
}

/// The closest candidate to `word`, if close enough to be a likely typo.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (c, strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase())))
        .filter(|(c, distance)| *distance <= 2.max(c.len() / 5) && *distance < c.len())
        .min_by_key(|(_, distance)| *distance)
        .map(|(c, _)| (*c).to_string())
}
