//! `import`: the live apps of some namespaces, written back as desired state.
//!
//! The reverse of `desired::spec`: each live process group (one name in one
//! namespace) becomes an app object holding only what the app set, in the form
//! `DesiredApp::build` normalizes back to the same live values, so that `plan` right
//! after an import shows no changes. Anything that cannot be written faithfully is
//! said in a [`Note`] (a comment in YAML and JavaScript, a warning for JSON).
//!
//! - [`emit`]: the ecosystem file (YAML, JSON, JavaScript) and `reconcile.toml` as text;
//! - [`check`]: which rules the imported apps break, and whether they plan clean.

pub mod check;
pub mod emit;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::desired::spec::UPDATE_OPTIONS;
use crate::live::model::is_shell_variable;
use crate::live::{ExecMode, LiveOrigin, LiveProcess, LiveState};
use crate::redact::Redactor;
use crate::validate::schema::is_known_key;

/// One imported app: its fields in the order they are written, and what to say about them.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedApp {
    pub name: String,
    pub namespace: String,
    /// The app object as written (keys in writing order).
    pub fields: Map<String, Value>,
    pub notes: Vec<Note>,
}

/// Something the reader of an imported file must know about one app or one of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: NoteAt,
    pub kind: NoteKind,
    pub text: String,
}

/// What a note is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteAt {
    /// The app as a whole.
    App,
    /// A top-level key of the app (`max_memory_restart`).
    Key(String),
    /// An entry of `env`.
    Env(String),
}

/// Why there is a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The env key matches a `[secrets]` pattern: the value is written as it is.
    Secret,
    /// The env key looks inherited from the shell that ran `pm2 start`.
    Inherited,
    /// A live setting `plan` does not compare, left out of the file.
    NotImported,
}

/// Why nothing could be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A namespace asked for has no process.
    #[error(
        "namespace `{namespace}` has no live process ({}); check the spelling, or start its apps first",
        if live.is_empty() { "the daemon runs no process at all".to_string() } else { format!("live namespaces: {}", live.join(", ")) }
    )]
    EmptyNamespace { namespace: String, live: Vec<String> },
}

/// Settings PM2 stores on every app with these values (as JSON) when the app did not set them.
const PM2_DEFAULTS: &[(&str, &str)] = &[
    ("autorestart", "true"),
    ("vizion", "true"),
    ("treekill", "true"),
    ("watch", "false"),
    ("ignore_watch", "[]"),
    ("instance_var", "\"NODE_APP_INSTANCE\""),
    ("automation", "true"),
    ("autostart", "true"),
    ("pmx", "true"),
    ("windowsHide", "true"),
    ("filter_env", "[]"),
    ("kill_retry_time", "100"),
    ("wait_ready", "false"),
];

/// Live fields that describe the process, not a setting (`username` is who runs it).
const RUNTIME_KEYS: &[&str] = &["username"];

/// Builds the imported apps of `namespaces` from the live list, in `pm_id` order.
pub fn from_live(live: &LiveState, namespaces: &[String], redactor: &Redactor) -> Result<Vec<ImportedApp>, ImportError> {
    for namespace in namespaces {
        if !live.processes.iter().any(|p| &p.namespace == namespace) {
            let mut seen: Vec<String> = live.processes.iter().map(|p| p.namespace.clone()).collect();
            seen.sort();
            seen.dedup();
            return Err(ImportError::EmptyNamespace { namespace: namespace.clone(), live: seen });
        }
    }
    let mut groups: Vec<Vec<&LiveProcess>> = Vec::new();
    for process in live.processes.iter().filter(|p| namespaces.contains(&p.namespace)) {
        match groups.iter_mut().find(|g| g[0].name == process.name && g[0].namespace == process.namespace) {
            Some(group) => group.push(process),
            None => groups.push(vec![process]),
        }
    }
    let home = match &live.origin {
        LiveOrigin::Daemon { home } => Some(home.clone()),
        LiveOrigin::Snapshot { .. } => None,
    };
    Ok(groups.iter().map(|group| import_group(group, home.as_deref(), redactor)).collect())
}

/// One app from its processes (the first, in `pm_id` order, speaks for all, as in `plan`).
fn import_group(group: &[&LiveProcess], daemon_home: Option<&Path>, redactor: &Redactor) -> ImportedApp {
    let first = group[0];
    let mut fields = Map::new();
    let mut notes = Vec::new();
    fields.insert("name".into(), json!(first.name));
    fields.insert("namespace".into(), json!(first.namespace));
    let cwd = first.cwd.clone();
    if let Some(script) = &first.script {
        fields.insert("script".into(), json!(script_as_written(script, cwd.as_deref())));
    }
    if let Some(cwd) = &cwd {
        fields.insert("cwd".into(), json!(cwd));
    }
    if !first.args.is_empty() {
        fields.insert("args".into(), json!(first.args));
    }
    if let Some(interpreter) = &first.interpreter {
        let by_extension = first
            .script
            .as_deref()
            .and_then(|s| s.extension())
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "js" | "cjs" | "mjs"));
        if !(interpreter == "node" && by_extension) {
            fields.insert("interpreter".into(), json!(interpreter));
        }
    }
    if !first.node_args.is_empty() {
        fields.insert("node_args".into(), json!(first.node_args));
    }
    fields.insert("exec_mode".into(), json!(first.exec_mode.as_str()));
    let instances_written = first.exec_mode == ExecMode::Cluster || group.len() > 1;
    if instances_written {
        fields.insert("instances".into(), json!(group.len()));
    }

    let mut env = Map::new();
    for (key, value) in &first.env_set {
        // PM2 sets PWD from `cwd` itself; `plan` does not compare it either.
        if key == "PWD" {
            continue;
        }
        env.insert(key.clone(), value.clone());
        if redactor.is_secret(key) {
            notes.push(Note {
                at: NoteAt::Env(key.clone()),
                kind: NoteKind::Secret,
                text: format!("secret: `{key}` matches a [secrets] pattern; its real value is written here, keep this file private or move the value out before committing"),
            });
        } else if is_shell_variable(key) {
            notes.push(Note {
                at: NoteAt::Env(key.clone()),
                kind: NoteKind::Inherited,
                text: format!("`{key}` looks inherited from the shell that ran `pm2 start` (it differs from the daemon's own); removing it replaces the app"),
            });
        }
    }
    if !env.is_empty() {
        fields.insert("env".into(), Value::Object(env));
    }

    let home = first
        .env_inherited
        .get("PM2_HOME")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| daemon_home.map(Path::to_path_buf));
    let merge_logs = first.options.get("merge_logs").and_then(Value::as_bool).unwrap_or(false);
    let log_name = log_file_name(&first.name);
    let logs = home.as_ref().map(|h| h.join("logs"));
    let pids = home.as_ref().map(|h| h.join("pids"));
    // (key, live path, PM2's default directory and file name, whether PM2 added `-<pm_id>`)
    let paths = [
        ("out_file", &first.out_file, logs.as_ref().map(|d| (d, format!("{log_name}-out.log"))), !merge_logs),
        ("error_file", &first.error_file, logs.as_ref().map(|d| (d, format!("{log_name}-error.log"))), !merge_logs),
        ("log_file", &first.log_file, logs.as_ref().map(|d| (d, format!("{log_name}.log"))), !merge_logs),
        ("pid_file", &first.pid_file, pids.as_ref().map(|d| (d, format!("{log_name}.pid"))), true),
    ];
    for (key, live_path, default, suffixed) in paths {
        let Some(live_path) = live_path else { continue };
        let written = if suffixed { strip_pm_id(live_path, first.pm_id) } else { live_path.clone() };
        let is_default = default.is_some_and(|(dir, file)| written == dir.join(file));
        match (key, is_default) {
            ("log_file", true) => {
                fields.insert(key.into(), json!(true));
            }
            (_, true) => {}
            _ => {
                fields.insert(key.into(), json!(written));
            }
        }
    }

    // PM2 sets merge_logs for a fork app written without `instances`.
    if merge_logs && (first.exec_mode == ExecMode::Cluster || instances_written) {
        fields.insert("merge_logs".into(), json!(true));
    }
    for key in UPDATE_OPTIONS.iter().filter(|k| **k != "merge_logs") {
        let Some(value) = first.options.get(*key) else { continue };
        if value.is_null() || is_pm2_default(key, value) {
            continue;
        }
        let value = if *key == "max_memory_restart" { memory_as_written(value) } else { value.clone() };
        fields.insert((*key).to_string(), value);
    }
    for (key, value) in &first.options {
        // A key written above (cwd, script, a log path...) is imported, whatever the
        // options also hold for it.
        if fields.contains_key(key)
            || matches!(key.as_str(), "cwd" | "script" | "name" | "namespace" | "exec_mode" | "instances" | "args" | "node_args" | "interpreter" | "env")
            || UPDATE_OPTIONS.contains(&key.as_str())
            || RUNTIME_KEYS.contains(&key.as_str())
            || !is_known_key(key)
            || value.is_null()
            || is_pm2_default(key, value)
        {
            continue;
        }
        notes.push(Note {
            at: NoteAt::App,
            kind: NoteKind::NotImported,
            text: format!("not imported (plan does not compare it yet): {key} = {value}"),
        });
    }
    ImportedApp { name: first.name.clone(), namespace: first.namespace.clone(), fields, notes }
}

/// The script relative to `cwd` (`./dist/server.js`) when it is inside it, else absolute.
/// A relative script always starts with `./`, so it is never looked up in `$PATH`.
fn script_as_written(script: &Path, cwd: Option<&Path>) -> PathBuf {
    match cwd.and_then(|cwd| script.strip_prefix(cwd).ok()) {
        Some(relative) if !relative.as_os_str().is_empty() => Path::new(".").join(relative),
        _ => script.to_path_buf(),
    }
}

/// The app name as PM2 puts it in default log and pid file names (`Common.prepareAppConf`:
/// every character but `A-Za-z0-9`, `\`, `.` and `-` becomes `-`).
fn log_file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '\\') { c } else { '-' }).collect()
}

/// `x-out-3.log` for pm_id 3 → `x-out.log`: PM2 inserts `-<pm_id>` itself (`God.executeApp`).
fn strip_pm_id(path: &Path, pm_id: u64) -> PathBuf {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else { return path.to_path_buf() };
    let suffix = format!("-{pm_id}");
    let stripped = match file.rsplit_once('.') {
        Some((stem, ext)) => stem.strip_suffix(&suffix).map(|s| format!("{s}.{ext}")),
        None => file.strip_suffix(&suffix).map(str::to_string),
    };
    stripped.map_or_else(|| path.to_path_buf(), |f| path.with_file_name(f))
}

fn is_pm2_default(key: &str, value: &Value) -> bool {
    PM2_DEFAULTS.iter().any(|(k, default)| *k == key && serde_json::from_str::<Value>(default).is_ok_and(|d| d == *value))
}

/// Bytes as PM2's `K`/`M`/`G` form when exact (`209715200` → `"200M"`), else the number.
fn memory_as_written(value: &Value) -> Value {
    let Some(bytes) = value.as_u64().filter(|b| *b > 0) else { return value.clone() };
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes % size == 0 {
            return json!(format!("{}{unit}", bytes / size));
        }
    }
    value.clone()
}

/// The ecosystem document: `{"apps": [...]}`.
pub fn document(apps: &[ImportedApp]) -> Value {
    json!({ "apps": apps.iter().map(|a| Value::Object(a.fields.clone())).collect::<Vec<_>>() })
}

/// Where the live state was read, for the files' header.
pub fn origin_text(live: &LiveState) -> String {
    match &live.origin {
        LiveOrigin::Daemon { home } => format!("the PM2 daemon in {}", home.display()),
        LiveOrigin::Snapshot { path } => format!("the pm2 jlist snapshot {}", path.display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::live::model::normalize_list;

    fn state(list: Value) -> LiveState {
        LiveState {
            origin: LiveOrigin::Daemon { home: PathBuf::from("/h") },
            daemon: None,
            read_at_ms: 0,
            processes: normalize_list(&list, Some(&Map::new())).unwrap(),
            adopted: Default::default(),
        }
    }

    fn process(pm_id: u64, name: &str, namespace: &str, extra: Value) -> Value {
        let mut env = json!({
            "name": name, "namespace": namespace, "status": "online", "pm_id": pm_id,
            "exec_mode": "fork_mode", "pm_exec_path": "/srv/app/server.js", "pm_cwd": "/srv/app",
            "exec_interpreter": "node", "node_args": [], "instances": 1, "merge_logs": true,
            "autorestart": true, "vizion": true, "treekill": true, "watch": false, "instance_var": "NODE_APP_INSTANCE",
            "username": "deploy", "kill_retry_time": 100, "automation": true, "pmx": true,
            "pm_out_log_path": format!("/h/logs/{name}-out.log"), "pm_err_log_path": format!("/h/logs/{name}-error.log"),
            "pm_pid_path": format!("/h/pids/{name}-{pm_id}.pid"),
            "env": {"PM2_HOME": "/h", "unique_id": "u", name: "{}", "PWD": "/srv/app"}
        });
        for (k, v) in extra.as_object().unwrap() {
            env[k] = v.clone();
        }
        json!({"pid": 100 + pm_id, "name": name, "pm_id": pm_id, "pm2_env": env})
    }

    fn redactor() -> Redactor {
        Redactor::new(&["*TOKEN*".into()])
    }

    #[test]
    fn a_plain_fork_app_is_written_with_what_it_set_only() {
        let live = state(json!([process(0, "api", "shop", json!({}))]));
        let apps = from_live(&live, &["shop".into()], &redactor()).unwrap();
        assert_eq!(
            Value::Object(apps[0].fields.clone()),
            json!({"name": "api", "namespace": "shop", "script": "./server.js", "cwd": "/srv/app", "exec_mode": "fork"})
        );
        assert!(apps[0].notes.is_empty(), "{:?}", apps[0].notes);
    }

    /// Keys written as fields are never also noted as "not imported", whatever PM2's
    /// env holds under the same name (`cwd`, `script`).
    #[test]
    fn imported_keys_are_not_noted_as_not_imported() {
        let live = state(json!([process(0, "api", "shop", json!({"cwd": "/srv/app", "script": "server.js", "name": "api"}))]));
        let app = &from_live(&live, &["shop".into()], &redactor()).unwrap()[0];
        assert!(app.fields.contains_key("cwd") && app.fields.contains_key("script"));
        let notes: Vec<&str> = app.notes.iter().map(|n| n.text.as_str()).collect();
        assert!(!notes.iter().any(|n| n.contains(": cwd =") || n.contains(": script =") || n.contains(": name =")), "{notes:?}");
    }

    #[test]
    fn cluster_groups_count_their_processes_and_strip_pm_id_from_custom_logs() {
        let extra = |id: u64| {
            json!({"exec_mode": "cluster_mode", "instances": 2, "merge_logs": null,
                   "pm_out_log_path": format!("/var/log/web-{id}.log"), "pm_err_log_path": format!("/h/logs/web-error-{id}.log"),
                   "max_memory_restart": 209_715_200, "kill_timeout": 3000, "autorestart": false})
        };
        let live = state(json!([process(3, "web", "shop", extra(3)), process(4, "web", "shop", extra(4))]));
        let app = &from_live(&live, &["shop".into()], &redactor()).unwrap()[0];
        assert_eq!(app.fields["exec_mode"], "cluster");
        assert_eq!(app.fields["instances"], 2);
        assert_eq!(app.fields["out_file"], "/var/log/web.log");
        assert!(!app.fields.contains_key("error_file"), "the default error log is not written");
        assert_eq!(app.fields["max_memory_restart"], "200M");
        assert_eq!(app.fields["kill_timeout"], 3000);
        assert_eq!(app.fields["autorestart"], false);
        assert!(!app.fields.contains_key("vizion") && !app.fields.contains_key("merge_logs"));
    }

    #[test]
    fn env_keeps_what_the_app_set_and_flags_secrets_and_shell_variables() {
        let live = state(json!([process(0, "api", "shop", json!({"env": {
            "PM2_HOME": "/h", "unique_id": "u", "api": "{}", "PWD": "/x", "API_TOKEN": "s3cret", "PORT": 80, "SSH_TTY": "/dev/pts/1"
        }}))]));
        let app = &from_live(&live, &["shop".into()], &redactor()).unwrap()[0];
        assert_eq!(app.fields["env"], json!({"API_TOKEN": "s3cret", "PORT": 80, "SSH_TTY": "/dev/pts/1"}));
        let kinds: BTreeMap<String, NoteKind> = app
            .notes
            .iter()
            .filter_map(|n| match &n.at {
                NoteAt::Env(k) => Some((k.clone(), n.kind)),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, BTreeMap::from([("API_TOKEN".into(), NoteKind::Secret), ("SSH_TTY".into(), NoteKind::Inherited)]));
    }

    #[test]
    fn binaries_keep_their_interpreter_and_absolute_script() {
        let live = state(json!([process(0, "sl", "jobs", json!({
            "pm_exec_path": "/bin/sleep", "exec_interpreter": "none", "args": ["3600"], "log_date_format": "YYYY"
        }))]));
        let app = &from_live(&live, &["jobs".into()], &redactor()).unwrap()[0];
        assert_eq!(app.fields["script"], "/bin/sleep");
        assert_eq!(app.fields["interpreter"], "none");
        assert_eq!(app.fields["args"], json!(["3600"]));
        assert_eq!(app.notes.len(), 1);
        assert_eq!(app.notes[0].kind, NoteKind::NotImported);
        assert!(app.notes[0].text.contains("log_date_format = \"YYYY\""), "{:?}", app.notes);
    }

    #[test]
    fn other_namespaces_are_left_out_and_empty_ones_refused() {
        let live = state(json!([process(0, "a", "shop", json!({})), process(1, "b", "other", json!({}))]));
        let apps = from_live(&live, &["shop".into()], &redactor()).unwrap();
        assert_eq!(apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a"]);
        let err = from_live(&live, &["shpo".into()], &redactor()).unwrap_err();
        assert_eq!(err.to_string(), "namespace `shpo` has no live process (live namespaces: other, shop); check the spelling, or start its apps first");
    }

    #[test]
    fn helpers_follow_pm2() {
        assert_eq!(log_file_name("my app@2"), "my-app-2");
        assert_eq!(strip_pm_id(Path::new("/l/x-out-12.log"), 12), PathBuf::from("/l/x-out.log"));
        assert_eq!(strip_pm_id(Path::new("/l/x-out.log"), 12), PathBuf::from("/l/x-out.log"));
        assert_eq!(memory_as_written(&json!(1_073_741_824)), json!("1G"));
        assert_eq!(memory_as_written(&json!(1000)), json!(1000));
        assert_eq!(script_as_written(Path::new("/a/b/c.js"), Some(Path::new("/a"))), PathBuf::from("./b/c.js"));
        assert_eq!(script_as_written(Path::new("/bin/sleep"), Some(Path::new("/a"))), PathBuf::from("/bin/sleep"));
    }
}
