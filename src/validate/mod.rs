//! Checks before anything runs: the JSON Schema, data policies and code rules, all
//! reported as [`Diagnostic`]s through one [`Registry`](registry::Registry).

pub mod code_rules;
pub mod data_rules;
pub mod diagnostic;
pub mod registry;
pub mod schema;

use std::path::Path;

pub use diagnostic::{Diagnostic, Severity};
pub use registry::{Registry, RegistryError, Rule};

use crate::config::ecosystem::{EcosystemFile, LoadError};
use crate::config::source::Location;
use crate::desired::{AppView, ExtractError, extract_apps};

/// What the checks need besides the files.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub registry: &'a Registry,
    /// The env merged (`[project] env` or `--env`).
    pub env: Option<&'a str>,
    /// The owned namespaces; `None` without a `reconcile.toml` (no ownership check).
    pub owned: Option<&'a [String]>,
}

/// The apps of one loaded file.
#[derive(Debug, Clone)]
pub struct FileApps<'a> {
    pub file: &'a EcosystemFile,
    pub apps: Vec<AppView>,
}

/// Runs every check on the loaded files; returns the apps found and the findings,
/// sorted by file, line, column and rule.
pub fn run<'a>(files: &'a [EcosystemFile], ctx: Context<'_>) -> (Vec<FileApps<'a>>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut found = Vec::new();
    for file in files {
        let mut sink = Sink { file, ctx, out: &mut diagnostics };
        for duplicate in &file.duplicates {
            let key = duplicate.pointer.rsplit('/').next().unwrap_or("");
            sink.emit_at(
                "duplicate-key",
                duplicate.location,
                format!("`{key}` is written twice; PM2 uses the last value and ignores line {}", duplicate.first.line),
                None,
                None,
            );
        }
        if file.esm_default {
            sink.emit_at(
                "pm2-refuses",
                Location { line: 1, column: 1 },
                "the apps are this ES module's `export default`; PM2 7.0.4 loads the file with require(), sees `{ default: ... }` and finds no apps".into(),
                None,
                None,
            );
        }
        match extract_apps(&file.document, ctx.env) {
            Ok(apps) => {
                for app in &apps {
                    check_app_schema(&mut sink, app);
                    data_rules::check(&mut sink, app);
                    check_interpreter(&mut sink, app);
                }
                found.push(FileApps { file, apps });
            }
            Err(error) => {
                let pointer = match error {
                    ExtractError::AppsNotAList { .. } => "/apps".to_string(),
                    ExtractError::AppNotAnObject { index, .. } => format!("/apps/{index}"),
                    ExtractError::NoApps => String::new(),
                };
                sink.emit("schema", &pointer, error.to_string(), None, None);
            }
        }
    }
    code_rules::check(&found, ctx, &mut diagnostics);
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    (found, diagnostics)
}

fn check_app_schema(sink: &mut Sink<'_>, app: &AppView) {
    let name = app.name();
    for violation in schema::check_app(&app.raw) {
        let help = violation.expected.map(|e| format!("expected: {e}"));
        sink.emit("schema", &format!("{}{}", app.pointer, violation.pointer), violation.message, help, name.clone());
    }
    for key in app.raw_keys().filter(|k| !schema::is_known_key(k)) {
        let help = registry::did_you_mean(key, &schema::known_keys())
            .map(|s| format!("did you mean `{s}`? PM2 ignores `{key}`"))
            .unwrap_or_else(|| format!("PM2 ignores `{key}`; remove it, or check the spelling"));
        let pointer = format!("{}/{}", app.pointer, crate::config::source::pointer_segment(key));
        sink.emit("unknown-key", &pointer, format!("unknown key `{key}`"), Some(help), name.clone());
    }
}

/// Collects findings for one file, applying each rule's severity (or dropping it when off).
pub struct Sink<'a> {
    pub file: &'a EcosystemFile,
    pub ctx: Context<'a>,
    out: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    /// A finding at a pointer of the file.
    pub fn emit(&mut self, rule: &str, pointer: &str, message: String, help: Option<String>, app: Option<String>) {
        let location = self.file.map.locate(pointer).unwrap_or(Location { line: 1, column: 1 });
        self.emit_at(rule, location, message, help, app);
    }

    /// A finding at a position.
    pub fn emit_at(&mut self, rule: &str, at: Location, message: String, help: Option<String>, app: Option<String>) {
        if let Some(diagnostic) = make(self.ctx.registry, rule, self.file.source.path(), Some(at), message, help, app) {
            self.out.push(diagnostic);
        }
    }
}

/// Builds a finding for `rule` with its effective severity, or `None` when it is off.
pub fn make(
    registry: &Registry,
    rule: &str,
    file: &Path,
    at: Option<Location>,
    message: String,
    help: Option<String>,
    app: Option<String>,
) -> Option<Diagnostic> {
    let entry = registry.get(rule)?;
    let severity = entry.severity?;
    let at = at.unwrap_or(Location { line: 0, column: 0 });
    Some(Diagnostic {
        rule: rule.to_string(),
        severity,
        file: file.to_path_buf(),
        line: at.line,
        column: at.column,
        message,
        help: help.unwrap_or_else(|| entry.fill(&entry.file.help, &[])),
        app,
    })
}

/// `pm2-refuses`: an interpreter PM2 would not find on this host (`which`, as
/// lib/Common.js does; `node@VERSION` only under nvm's `NVM_DIR`).
fn check_interpreter(sink: &mut Sink<'_>, app: &AppView) {
    let Some(interpreter) = ["interpreter", "exec_interpreter"].iter().find_map(|k| app.fields.get(*k).and_then(serde_json::Value::as_str)) else {
        return;
    };
    if interpreter.is_empty() || interpreter == "none" {
        return;
    }
    let found = if let Some(version) = interpreter.strip_prefix("node@") {
        std::env::var_os("NVM_DIR").is_some_and(|nvm| Path::new(&nvm).join(format!("versions/node/v{version}/bin/node")).is_file())
    } else if interpreter.contains('/') {
        Path::new(interpreter).is_file()
    } else {
        // PM2 falls back to its own node for `node`.
        interpreter == "node"
            || std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(interpreter).is_file()))
    };
    if !found {
        let key = if app.has("interpreter") { "interpreter" } else { "exec_interpreter" };
        let display = app.name().unwrap_or_else(|| format!("app #{}", app.index + 1));
        let why = if interpreter.starts_with("node@") { " (node@VERSION needs nvm: NVM_DIR with that version installed)" } else { "" };
        sink.emit(
            "pm2-refuses",
            &app.pointer_of(key),
            format!("PM2 refuses to start `{display}`: interpreter `{interpreter}` is not available on this host{why}"),
            None,
            app.name(),
        );
    }
}

/// Findings about `reconcile.toml` itself: owning `default` (rule `owns-default`).
pub fn project_findings(registry: &Registry, project: &crate::config::Project) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if project.settings.project.namespaces.iter().any(|n| n == "default") {
        let text = crate::config::read::read_text(&project.path, Some(&project.scope), crate::config::project::MAX_BYTES).unwrap_or_default();
        let source = crate::config::SourceFile::new(&project.path, text.as_str());
        let at = text.find("namespaces").map(|offset| source.location(offset));
        let message = "this project owns the `default` namespace, where every app started by hand without --namespace lands".to_string();
        out.extend(make(registry, "owns-default", &project.path, at, message, None, None));
    }
    out
}

/// A file that could not be loaded, as a `load` finding.
pub fn load_error(error: &LoadError) -> Diagnostic {
    let help = match error {
        LoadError::JsDisabled { .. } => "convert the file to JSON, YAML or TOML, or drop --no-js where running its code is safe",
        LoadError::File(crate::config::read::ReadError::TooLarge { .. }) => {
            "an ecosystem file is a few kilobytes; check that the right file is named"
        }
        LoadError::File(crate::config::read::ReadError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            "check the path: no such file (with no FILE, `reconcile lint` lints the files named in reconcile.toml)"
        }
        LoadError::File(crate::config::read::ReadError::Outside { .. }) => {
            "list only files inside the project directory in reconcile.toml (or lint this one by naming it: `reconcile lint FILE`)"
        }
        LoadError::File(_) => "commit the file itself, inside the project directory, instead of a link or a special file",
        LoadError::JsTimeout { .. } => "the file must return its config without waiting; remove servers, timers and prompts",
        LoadError::NodeMissing { .. } => "install Node.js (PM2 needs it anyway)",
        _ if !error.path().exists() => "check the path: no such file (with no FILE, `reconcile lint` lints the files named in reconcile.toml)",
        _ => "fix the file so that PM2 itself could read it",
    };
    let message = error.to_string();
    let path = error.path().display().to_string();
    // The message repeats the path and position, which the finding already carries.
    let message = message
        .strip_prefix(&path)
        .map(|rest| rest.trim_start_matches(|c: char| c == ':' || c.is_ascii_digit()).trim_start().to_string())
        .unwrap_or(message);
    let at = error.location();
    Diagnostic {
        rule: "load".into(),
        severity: Severity::Error,
        file: error.path().to_path_buf(),
        line: at.map_or(0, |l| l.line),
        column: at.map_or(0, |l| l.column),
        message,
        help: help.to_string(),
        app: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::ecosystem::{Format, LoadOptions};
    use crate::config::project::PoliciesSection;

    fn builtin() -> Registry {
        Registry::load(&PoliciesSection::default(), Path::new(".")).unwrap()
    }

    /// Runs every `[[tests]]` example of every built-in rule through the whole engine.
    #[test]
    fn every_rule_passes_its_own_examples() {
        let registry = builtin();
        let mut ran = 0;
        for rule in &registry.rules {
            for (i, example) in rule.file.tests.iter().enumerate() {
                let text = match (&example.source, &example.app, &example.apps) {
                    (Some(source), _, _) => source.clone(),
                    (None, Some(app), _) => json!({ "apps": [app] }).to_string(),
                    (None, None, Some(apps)) => json!({ "apps": apps }).to_string(),
                    _ => panic!("{}: test {i} has no app, apps or source", rule.id()),
                };
                let diagnostics = match EcosystemFile::parse(Path::new("t.json"), text, Format::Json, &LoadOptions::default()) {
                    Ok(file) => {
                        let owned = example.namespaces.clone();
                        let ctx = Context { registry: &registry, env: example.env.as_deref(), owned: owned.as_deref() };
                        run(std::slice::from_ref(&file), ctx).1
                    }
                    Err(error) => vec![load_error(&error)],
                };
                let fired = diagnostics.iter().any(|d| d.rule == rule.id());
                assert_eq!(fired, example.fails, "rule {} test {i}: {diagnostics:#?}", rule.id());
                ran += 1;
            }
        }
        assert!(ran >= 40, "only {ran} rule examples ran");
    }

    #[test]
    fn every_builtin_rule_has_a_policy_file_and_the_contract_ids_exist() {
        let registry = builtin();
        for id in [
            "schema", "unknown-key", "exec-mode", "min-uptime", "max-restarts", "restart-delay", "kill-timeout",
            "log-files", "owned-namespace", "reserved-name", "unique-name", "unique-port", "watch-in-production",
            "live-name-conflict",
        ] {
            assert!(registry.get(id).is_some(), "missing rule {id}");
        }
        for id in ["unknown-key", "kill-timeout", "log-files", "watch-in-production"] {
            assert_eq!(registry.severity(id), Some(Severity::Warning), "{id}");
        }
        for id in ["schema", "exec-mode", "min-uptime", "max-restarts", "restart-delay", "unique-port"] {
            assert_eq!(registry.severity(id), Some(Severity::Error), "{id}");
        }
    }

    #[test]
    fn rules_are_regraded_parameterized_and_switched_off_from_settings() {
        let settings: crate::config::project::Settings = toml::from_str(
            "[policies.rules.min-uptime]\nmin = 10000\n[policies.rules.kill-timeout]\nseverity = \"off\"\n[policies.rules.restart-delay]\nseverity = \"warning\"\n",
        )
        .unwrap();
        let registry = Registry::load(&settings.policies, Path::new(".")).unwrap();
        let file = EcosystemFile::parse(
            Path::new("t.json"),
            json!({"apps": [{"name": "a", "script": "a.js", "min_uptime": 6000}]}).to_string(),
            Format::Json,
            &LoadOptions::default(),
        )
        .unwrap();
        let (_, diagnostics) = run(std::slice::from_ref(&file), Context { registry: &registry, env: None, owned: None });
        let by_rule = |id: &str| diagnostics.iter().find(|d| d.rule == id);
        assert!(by_rule("min-uptime").unwrap().message.contains("at least 10000 ms"));
        assert!(by_rule("kill-timeout").is_none());
        assert_eq!(by_rule("restart-delay").unwrap().severity, Severity::Warning);
    }

    #[test]
    fn bad_rule_settings_are_errors_with_a_suggestion() {
        let load = |text: &str| {
            let settings: crate::config::project::Settings = toml::from_str(text).unwrap();
            Registry::load(&settings.policies, Path::new(".")).unwrap_err().to_string()
        };
        assert!(load("[policies.rules.min-uptim]\nseverity = \"off\"\n").contains("did you mean `min-uptime`"));
        assert!(load("[policies.rules.min-uptime]\nmax = 3\n").contains("takes: `min`"));
        assert!(load("[policies.rules.min-uptime]\nmin = \"x\"\n").contains("must be a number"));
        assert!(load("[policies.rules.load]\nseverity = \"off\"\n").contains("cannot be re-graded"));
    }

    #[test]
    fn user_policy_files_add_rules() {
        let dir = std::env::temp_dir().join(format!("reconcile-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("no-root.toml"),
            "id = \"no-root\"\nseverity = \"error\"\ndescription = \"d\"\nhelp = \"h\"\n[[checks]]\nkey = \"uid\"\nrequire = { not = { properties = { uid = { const = \"root\" } }, required = [\"uid\"] } }\nmessage = \"`{name}` runs as {value}\"\n",
        )
        .unwrap();
        let section = PoliciesSection { paths: vec![dir.clone()], ..Default::default() };
        let registry = Registry::load(&section, Path::new("/")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let rule = registry.get("no-root").unwrap();
        let app = &crate::desired::extract_apps(&json!([{"name": "a", "user": "root"}]), None).unwrap()[0];
        let (_, message, _) = data_rules::evaluate(rule, &rule.file.checks[0], &rule.compiled[0], app, None).unwrap();
        assert_eq!(message, "`a` runs as \"root\"");
        let _ = Value::Null;
    }
}
