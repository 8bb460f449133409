//! Imported apps as text: a YAML, JSON or JavaScript ecosystem file, and the
//! `reconcile.toml` beside it.
//!
//! YAML and JavaScript are written here rather than through a serializer because
//! they carry [`Note`]s as comments next to the values they are about. Every scalar
//! is written as a JSON literal, which is a valid YAML double-quoted scalar and a
//! valid JavaScript literal, so quoting is never guessed; the tests read each
//! rendering back with the loaders `lint` and `plan` use.

use std::fmt::Write as _;

use serde_json::Value;

use super::check::BrokenRule;
use super::{ImportedApp, Note, NoteAt};

/// The header comment lines (without comment markers).
pub fn header(command: &str, origin: &str, secrets: bool, clean: bool) -> Vec<String> {
    let mut lines = vec![format!("Written by `{command}` from {origin}.")];
    if clean {
        lines.push("Only what each app set is here, not what it inherited; `reconcile plan` against the".to_string());
        lines.push("same daemon shows no changes. Comments mark what needs a look.".to_string());
    } else {
        lines.push("Only what each app set is here, not what it inherited. Some apps cannot be written".to_string());
        lines.push("so that `reconcile plan` shows no change for them (import warned which and why).".to_string());
    }
    if secrets {
        lines.push("It holds real secret values (marked below): keep it private, or move them out".to_string());
        lines.push("of the file before you commit it.".to_string());
    }
    lines
}

/// The apps as YAML, notes as `#` comments.
pub fn yaml(header: &[String], apps: &[ImportedApp]) -> String {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str("apps:\n");
    for app in apps {
        comments(&mut out, "  ", "#", app_notes(app));
        let mut first = true;
        for (key, value) in &app.fields {
            let indent = if first { "  - " } else { "    " };
            if !first {
                comments(&mut out, "    ", "#", key_notes(app, key));
            }
            first = false;
            match (key.as_str(), value) {
                ("env", Value::Object(env)) if !env.is_empty() => {
                    let _ = writeln!(out, "{indent}env:");
                    for (name, value) in env {
                        comments(&mut out, "      ", "#", env_notes(app, name));
                        let _ = writeln!(out, "      {}: {}", yaml_key(name), json_literal(value));
                    }
                }
                (_, Value::Array(items)) if !items.is_empty() && items.iter().all(is_scalar) => {
                    let _ = writeln!(out, "{indent}{}:", yaml_key(key));
                    for item in items {
                        let _ = writeln!(out, "      - {}", yaml_scalar(item));
                    }
                }
                _ => {
                    let _ = writeln!(out, "{indent}{}: {}", yaml_key(key), yaml_scalar(value));
                }
            }
        }
    }
    out
}

/// The apps as a CommonJS module, notes as `//` comments.
pub fn js(header: &[String], apps: &[ImportedApp]) -> String {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "// {line}");
    }
    out.push_str("module.exports = {\n  apps: [\n");
    for app in apps {
        comments(&mut out, "    ", "//", app_notes(app));
        out.push_str("    {\n");
        for (key, value) in &app.fields {
            comments(&mut out, "      ", "//", key_notes(app, key));
            match (key.as_str(), value) {
                ("env", Value::Object(env)) if !env.is_empty() => {
                    out.push_str("      env: {\n");
                    for (name, value) in env {
                        comments(&mut out, "        ", "//", env_notes(app, name));
                        let _ = writeln!(out, "        {}: {},", js_key(name), json_literal(value));
                    }
                    out.push_str("      },\n");
                }
                _ => {
                    let _ = writeln!(out, "      {}: {},", js_key(key), json_literal(value));
                }
            }
        }
        out.push_str("    },\n");
    }
    out.push_str("  ],\n};\n");
    out
}

/// The apps as JSON (no comments: notes go to stderr as warnings).
pub fn json(apps: &[ImportedApp]) -> String {
    let document = super::document(apps);
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

/// What `reconcile.toml` needs to say about the imported state.
#[derive(Debug, Clone)]
pub struct ProjectFile<'a> {
    pub header: &'a [String],
    pub name: &'a str,
    pub ecosystem: &'a str,
    pub namespaces: &'a [String],
    /// `[pm2] home`, when the daemon read is not the default one.
    pub pm2_home: Option<&'a str>,
    /// Rules the apps break today, graded as warnings.
    pub broken: &'a [BrokenRule],
}

/// `reconcile.toml` for the imported apps.
pub fn project(file: &ProjectFile<'_>) -> String {
    let mut out = String::new();
    for line in file.header.iter().take(1) {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str("# Every key: `reconcile schema config`, or the README's reconcile.toml section.\n\n");
    out.push_str("[project]\n");
    let _ = writeln!(out, "name = {}", toml_string(file.name));
    let _ = writeln!(out, "ecosystem = [{}]", toml_string(file.ecosystem));
    let namespaces: Vec<String> = file.namespaces.iter().map(|n| toml_string(n)).collect();
    let _ = writeln!(out, "namespaces = [{}]", namespaces.join(", "));
    out.push_str("\n[pm2]\n");
    match file.pm2_home {
        Some(home) => {
            let _ = writeln!(out, "home = {}", toml_string(home));
        }
        None => out.push_str("# home = \"/home/deploy/.pm2\"   # default: $PM2_HOME, else ~/.pm2\n"),
    }
    if !file.broken.is_empty() {
        out.push_str("\n# The imported apps break these rules as they run today. They are warnings here so\n");
        out.push_str("# that `plan` works from the start; fix the apps (each fix is a change `plan` shows\n");
        out.push_str("# and `apply` makes), then delete the rule's lines to make it an error again.\n");
        for broken in file.broken {
            let _ = writeln!(out, "[policies.rules.{}]", broken.rule);
            let _ = writeln!(out, "severity = \"warning\"   # broken by: {}", one_line(&broken.apps.join(", ")));
        }
    }
    out
}

fn app_notes(app: &ImportedApp) -> impl Iterator<Item = &Note> {
    app.notes.iter().filter(|n| n.at == NoteAt::App)
}

fn key_notes<'a>(app: &'a ImportedApp, key: &'a str) -> impl Iterator<Item = &'a Note> {
    app.notes.iter().filter(move |n| matches!(&n.at, NoteAt::Key(k) if k == key))
}

fn env_notes<'a>(app: &'a ImportedApp, name: &'a str) -> impl Iterator<Item = &'a Note> {
    app.notes.iter().filter(move |n| matches!(&n.at, NoteAt::Env(k) if k == name))
}

fn comments<'a>(out: &mut String, indent: &str, marker: &str, notes: impl Iterator<Item = &'a Note>) {
    for note in notes {
        let _ = writeln!(out, "{indent}{marker} {}", one_line(&note.text));
    }
}

/// A comment must stay on its line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// Any value as a JSON literal (valid JavaScript, and valid YAML flow style).
fn json_literal(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A YAML scalar: plain when it cannot be read as anything but the same string,
/// otherwise a JSON literal.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(s) if plain_yaml(s) => s.clone(),
        other => json_literal(other),
    }
}

fn yaml_key(key: &str) -> String {
    if plain_yaml(key) { key.to_string() } else { json_literal(&Value::String(key.to_string())) }
}

/// Conservative: a letter, `_` or `/` first, then letters, digits and `_./-`, and not
/// a word YAML 1.1 readers take for a boolean or null.
fn plain_yaml(text: &str) -> bool {
    const WORDS: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n"];
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !WORDS.contains(&text.to_ascii_lowercase().as_str())
}

/// A JavaScript property name: bare when it is an identifier.
fn js_key(key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if identifier { key.to_string() } else { json_literal(&Value::String(key.to_string())) }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::config::ecosystem::{EcosystemFile, Format, LoadOptions};
    use crate::config::project::Project;
    use crate::import::NoteKind;

    fn app(fields: Value, notes: Vec<Note>) -> ImportedApp {
        ImportedApp {
            name: fields["name"].as_str().unwrap().to_string(),
            namespace: "shop".into(),
            fields: fields.as_object().unwrap().clone(),
            notes,
        }
    }

    fn sample() -> Vec<ImportedApp> {
        vec![
            app(
                json!({"name": "web", "namespace": "shop", "script": "./server.js", "cwd": "/srv/my app",
                       "args": ["--port", "3000", "yes", "a: b", "#x"], "exec_mode": "cluster", "instances": 2,
                       "env": {"API_TOKEN": "s3cr\"et\n", "PORT": 3000, "weird key": "no", "EMPTY": ""},
                       "max_memory_restart": "200M", "stop_exit_codes": [0], "watch": ["a", "b"], "autorestart": false}),
                vec![
                    Note { at: NoteAt::Env("API_TOKEN".into()), kind: NoteKind::Secret, text: "secret: a\nb".into() },
                    Note { at: NoteAt::App, kind: NoteKind::NotImported, text: "not imported: time = true".into() },
                    Note { at: NoteAt::Key("watch".into()), kind: NoteKind::NotImported, text: "about watch".into() },
                ],
            ),
            app(json!({"name": "sl", "namespace": "shop", "script": "/bin/sleep", "exec_mode": "fork", "interpreter": "none"}), vec![]),
        ]
    }

    fn read_back(text: &str, file: &str, format: Format) -> Value {
        EcosystemFile::parse(Path::new(file), text.to_string(), format, &LoadOptions::default()).unwrap().document
    }

    #[test]
    fn yaml_reads_back_as_the_same_document_with_comments() {
        let apps = sample();
        let text = yaml(&header("reconcile import", "here", true, true), &apps);
        assert_eq!(read_back(&text, "e.yaml", Format::Yaml), crate::import::document(&apps), "{text}");
        assert!(text.contains("      # secret: a b\n      API_TOKEN:"), "{text}");
        assert!(text.contains("  # not imported: time = true\n  - name: web"), "{text}");
        assert!(text.contains("    # about watch\n    watch:"), "{text}");
    }

    #[test]
    fn js_evaluates_to_the_same_document_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecosystem.config.cjs");
        let apps = sample();
        let text = js(&header("reconcile import", "here", true, true), &apps);
        std::fs::write(&path, &text).unwrap();
        let file = EcosystemFile::load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(file.document, crate::import::document(&apps), "{text}");
        assert!(text.contains("        // secret: a b\n        API_TOKEN:"), "{text}");
    }

    #[test]
    fn json_reads_back() {
        let apps = sample();
        assert_eq!(read_back(&json(&apps), "e.json", Format::Json), crate::import::document(&apps));
    }

    #[test]
    fn the_project_file_parses_and_grades_broken_rules_as_warnings() {
        let broken = vec![BrokenRule { rule: "min-uptime".into(), apps: vec!["web".into(), "sl".into()] }];
        let text = project(&ProjectFile {
            header: &header("reconcile import", "x", false, true),
            name: "shop \"main\"",
            ecosystem: "ecosystem.config.yaml",
            namespaces: &["shop".into(), "jobs".into()],
            pm2_home: Some("/tmp/p m2"),
            broken: &broken,
        });
        let settings = Project::parse(Path::new("reconcile.toml"), &text).unwrap();
        assert_eq!(settings.project.name.as_deref(), Some("shop \"main\""));
        assert_eq!(settings.project.namespaces, ["shop", "jobs"]);
        assert_eq!(settings.pm2.home.as_deref(), Some(Path::new("/tmp/p m2")));
        let rule = &settings.policies.rules["min-uptime"];
        assert_eq!(rule.severity, Some(crate::config::project::SeveritySetting::Warning));
        assert!(text.contains("# broken by: web, sl"), "{text}");
    }

    proptest! {
        // Any string survives as a YAML scalar or key, and as a JavaScript key.
        #[test]
        fn any_string_round_trips_through_yaml(key in "\\PC{1,12}", value in "\\PC{0,20}") {
            let apps = vec![app(json!({"name": value.clone(), "env": {key.clone(): value.clone()}, "args": [value.clone()]}), vec![])];
            let text = yaml(&[], &apps);
            prop_assert_eq!(read_back(&text, "e.yaml", Format::Yaml), crate::import::document(&apps));
        }
    }
}
