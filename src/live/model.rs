//! The live process list, typed and normalized so it can be compared with desired
//! state: `fork_mode` becomes `fork`, `pm_exec_path` becomes `script`, env the app set
//! is kept apart from env it inherited, and every other `pm2_env` field is kept in
//! `options` for later comparisons (`min_uptime`, `kill_timeout`, ...).
//!
//! Built from `getMonitorData` (over the socket) or `pm2 jlist` output (a snapshot):
//! both are the same list, so one normalizer serves both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

/// The env key (and custom app attribute) `apply` stamps a spec hash into.
pub const SPEC_HASH_KEY: &str = "x_reconcile_hash";
/// The same stamp in `env`, for apps the CLI created (the CLI drops unknown keys).
pub const SPEC_HASH_ENV: &str = "RECONCILE_SPEC_HASH";

/// `exec_mode`, normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    Fork,
    Cluster,
}

impl ExecMode {
    fn from_pm2(value: Option<&str>) -> Self {
        match value {
            Some("cluster_mode" | "cluster") => ExecMode::Cluster,
            _ => ExecMode::Fork,
        }
    }

    /// As written in ecosystem files.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Fork => "fork",
            ExecMode::Cluster => "cluster",
        }
    }
}

/// PM2's process status (`constants.js`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessStatus {
    Online,
    Launching,
    Stopping,
    Stopped,
    Errored,
    WaitingRestart,
    OneLaunch,
    /// Anything else a future PM2 may report.
    Other(String),
}

impl ProcessStatus {
    /// Parses PM2's status string.
    pub fn parse(value: &str) -> Self {
        match value {
            "online" => Self::Online,
            "launching" => Self::Launching,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "errored" => Self::Errored,
            "waiting restart" => Self::WaitingRestart,
            "one-launch-status" => Self::OneLaunch,
            other => Self::Other(other.to_string()),
        }
    }

    /// PM2's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Online => "online",
            Self::Launching => "launching",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Errored => "errored",
            Self::WaitingRestart => "waiting restart",
            Self::OneLaunch => "one-launch-status",
            Self::Other(s) => s,
        }
    }
}

impl Serialize for ProcessStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// CPU and memory as sampled by the daemon (pidusage).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Monit {
    pub memory: u64,
    pub cpu: f64,
}

/// One live PM2 process, normalized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveProcess {
    pub pm_id: u64,
    pub name: String,
    /// `"default"` when PM2 left it unset (a raw prepare may).
    pub namespace: String,
    pub status: ProcessStatus,
    /// The OS pid; `None` when not running (PM2 reports 0 or nothing).
    pub pid: Option<u32>,
    /// `restart_time`.
    pub restarts: u64,
    pub unstable_restarts: u64,
    /// `pm_uptime`: when the current (or last) process was spawned, ms since the epoch.
    pub started_at_ms: Option<i64>,
    /// `created_at`, ms since the epoch (reset on restart, null after restart overlimit).
    pub created_at_ms: Option<i64>,
    pub exec_mode: ExecMode,
    /// `pm_exec_path`, absolute.
    pub script: Option<PathBuf>,
    /// `pm_cwd`, absolute.
    pub cwd: Option<PathBuf>,
    pub args: Vec<String>,
    pub node_args: Vec<String>,
    /// `exec_interpreter`: `"node"`, `"none"`, or a path.
    pub interpreter: Option<String>,
    pub instances: Option<u64>,
    /// `pm_out_log_path`.
    pub out_file: Option<PathBuf>,
    /// `pm_err_log_path`.
    pub error_file: Option<PathBuf>,
    /// `pm_log_path`.
    pub log_file: Option<PathBuf>,
    /// `pm_pid_path`.
    pub pid_file: Option<PathBuf>,
    /// Env the app set (heuristic: see [`split_env`]).
    pub env_set: BTreeMap<String, Value>,
    /// Env inherited from the shell that started it or the daemon, or added by PM2.
    pub env_inherited: BTreeMap<String, Value>,
    /// The spec hash `apply` stamped, from `x_reconcile_hash` or `env.RECONCILE_SPEC_HASH`.
    pub spec_hash: Option<String>,
    pub monit: Option<Monit>,
    /// Every other `pm2_env` field, as PM2 reports it (top-level copies of env vars left out).
    pub options: BTreeMap<String, Value>,
}

impl LiveProcess {
    /// Milliseconds since the current process was spawned; `None` unless online.
    pub fn uptime_ms(&self, now_ms: i64) -> Option<u64> {
        match (&self.status, self.started_at_ms) {
            (ProcessStatus::Online, Some(start)) => u64::try_from(now_ms.saturating_sub(start)).ok(),
            _ => None,
        }
    }

    /// An option from `pm2_env` as a number (e.g. `kill_timeout`, `min_uptime`).
    pub fn option_u64(&self, key: &str) -> Option<u64> {
        self.options.get(key).and_then(as_u64)
    }
}

/// Facts about the daemon itself.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DaemonInfo {
    pub version: String,
    /// `getReport().started_at`, ms since the epoch.
    pub started_at_ms: Option<i64>,
    /// The daemon's pid, from `pm2.pid` (informational: PM2 writes it before binding).
    pub pid: Option<u32>,
}

/// Where a [`LiveState`] came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LiveOrigin {
    /// Read over the daemon's socket.
    Daemon { home: PathBuf },
    /// A `pm2 jlist` file (`--live FILE`).
    Snapshot { path: PathBuf },
}

/// The whole live process list at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveState {
    pub origin: LiveOrigin,
    /// `None` for snapshots.
    pub daemon: Option<DaemonInfo>,
    /// When the list was read, ms since the epoch.
    pub read_at_ms: i64,
    /// In `pm_id` order.
    pub processes: Vec<LiveProcess>,
}

impl LiveState {
    /// The process with this `pm_id`.
    pub fn get(&self, pm_id: u64) -> Option<&LiveProcess> {
        self.processes.iter().find(|p| p.pm_id == pm_id)
    }

    /// Every process with this name, in any namespace (PM2 names are global).
    pub fn by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a LiveProcess> + 'a {
        self.processes.iter().filter(move |p| p.name == name)
    }
}

/// Why one entry of the list could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("process list is not an array")]
    NotAList,
    #[error("entry {index} has no pm2_env object")]
    NoEnv { index: usize },
    #[error("entry {index} has no numeric pm_id")]
    NoId { index: usize },
    #[error("entry {index} has no name")]
    NoName { index: usize },
}

/// Fields lifted out of `pm2_env` into typed ones (so not repeated in `options`).
const LIFTED: &[&str] = &[
    "pm_id",
    "name",
    "namespace",
    "status",
    "restart_time",
    "unstable_restarts",
    "pm_uptime",
    "created_at",
    "exec_mode",
    "pm_exec_path",
    "pm_cwd",
    "args",
    "node_args",
    "exec_interpreter",
    "instances",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_log_path",
    "pm_pid_path",
    "env",
    SPEC_HASH_KEY,
];

/// Env keys PM2 itself adds to every app (pm2-internals.md §5).
/// `PM2_INTERACTOR_PROCESSING` leaks from the CLI run that launched the daemon (its
/// pm2-io-agent sets it in its own env) into the apps that run started.
const PM2_ADDED_ENV: &[&str] = &[
    "PM2_HOME",
    "PM2_USAGE",
    "PM2_JSON_PROCESSING",
    "PM2_INTERACTOR_PROCESSING",
    "unique_id",
    "NODE_APP_INSTANCE",
    "PM2_PROGRAMMATIC",
];

/// Shell variables that are never an app's own setting; used when the daemon's env
/// is unknown (snapshots).
const SHELL_ENV: &[&str] = &[
    "_", "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "TERM", "LANG", "LANGUAGE",
    "HOSTNAME", "MAIL", "LS_COLORS", "TMPDIR", "TZ", "DISPLAY", "EDITOR", "PAGER", "COLORTERM", "TERM_PROGRAM",
];
const SHELL_ENV_PREFIXES: &[&str] = &["LC_", "XDG_", "SSH_", "NVM_", "npm_", "DBUS_", "CARGO_", "RUSTUP_"];

/// Whether an env key is one a login shell sets (`PATH`, `HOME`, `LC_*`, `SSH_*`, ...):
/// never an app's own setting, though an app started from a shell carries it.
pub fn is_shell_variable(key: &str) -> bool {
    SHELL_ENV.contains(&key) || SHELL_ENV_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Normalizes a whole `getMonitorData` / `pm2 jlist` list.
///
/// `daemon_env` is `getReport().env` when known; it sharpens the set/inherited split.
pub fn normalize_list(list: &Value, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ModelError> {
    normalize_owned(list.clone(), daemon_env)
}

/// [`normalize_list`], consuming the list (moves values instead of cloning them:
/// the list for 100 apps is ~400 KB of JSON, mostly env).
pub fn normalize_owned(list: Value, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ModelError> {
    let Value::Array(items) = list else { return Err(ModelError::NotAList) };
    let mut out = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| normalize_one(index, item, daemon_env))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|p| p.pm_id);
    Ok(out)
}

fn normalize_one(index: usize, item: Value, daemon_env: Option<&Map<String, Value>>) -> Result<LiveProcess, ModelError> {
    let Value::Object(mut item) = item else { return Err(ModelError::NoEnv { index }) };
    let Some(Value::Object(mut pm2_env)) = item.remove("pm2_env") else { return Err(ModelError::NoEnv { index }) };
    let pm_id = item.get("pm_id").or_else(|| pm2_env.get("pm_id")).and_then(as_u64).ok_or(ModelError::NoId { index })?;
    let name = item
        .get("name")
        .or_else(|| pm2_env.get("name"))
        .and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_number().map(ToString::to_string)))
        .ok_or(ModelError::NoName { index })?;
    let pid = item.get("pid").and_then(as_u64).and_then(|p| u32::try_from(p).ok()).filter(|&p| p != 0);
    let monit = item.get("monit").and_then(|m| {
        Some(Monit { memory: m.get("memory").and_then(as_u64)?, cpu: m.get("cpu").and_then(Value::as_f64).unwrap_or(0.0) })
    });
    let env = match pm2_env.remove("env") {
        Some(Value::Object(env)) => env,
        _ => Map::new(),
    };
    let mut take = |key: &str| pm2_env.remove(key);
    let string = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let path = |v: Option<Value>| string(v).map(PathBuf::from);
    let status = ProcessStatus::parse(take("status").as_ref().and_then(Value::as_str).unwrap_or("stopped"));
    let namespace = string(take("namespace")).unwrap_or_else(|| "default".to_string());
    let restarts = take("restart_time").as_ref().and_then(as_u64).unwrap_or(0);
    let unstable_restarts = take("unstable_restarts").as_ref().and_then(as_u64).unwrap_or(0);
    let started_at_ms = take("pm_uptime").as_ref().and_then(as_i64);
    let created_at_ms = take("created_at").as_ref().and_then(as_i64);
    let exec_mode = ExecMode::from_pm2(take("exec_mode").as_ref().and_then(Value::as_str));
    let script = path(take("pm_exec_path"));
    let cwd = path(take("pm_cwd"));
    let args = string_list(take("args").as_ref());
    let node_args = string_list(take("node_args").as_ref());
    let interpreter = string(take("exec_interpreter"));
    let instances = take("instances").as_ref().and_then(as_u64);
    let out_file = path(take("pm_out_log_path"));
    let error_file = path(take("pm_err_log_path"));
    let log_file = path(take("pm_log_path"));
    let pid_file = path(take("pm_pid_path"));
    let spec_hash =
        string(take(SPEC_HASH_KEY)).or_else(|| env.get(SPEC_HASH_ENV).and_then(Value::as_str).map(str::to_string));
    let options = pm2_env
        .into_iter()
        .filter(|(k, _)| !LIFTED.contains(&k.as_str()))
        // executeApp copies every scalar env entry to the top level of pm2_env: those
        // copies are env, not options.
        .filter(|(k, v)| env.get(k.as_str()) != Some(v))
        .collect();
    let (env_set, env_inherited) = split_env_owned(&name, env, daemon_env);
    Ok(LiveProcess {
        pm_id,
        name,
        namespace,
        status,
        pid,
        restarts,
        unstable_restarts,
        started_at_ms,
        created_at_ms,
        exec_mode,
        script,
        cwd,
        args,
        node_args,
        interpreter,
        instances,
        out_file,
        error_file,
        log_file,
        pid_file,
        env_set,
        env_inherited,
        spec_hash,
        monit,
        options,
    })
}

/// Splits an app's `pm2_env.env` into what the app set and what it inherited.
///
/// No PM2 field records where a variable came from (pm2-internals.md §5), so this is
/// a heuristic. Inherited: the keys PM2 adds (`PM2_HOME`, `unique_id`, the
/// `<name>: "{}"` module-config marker, ...), and any key whose value equals the
/// daemon's own env (`getReport().env`). Without the daemon's env (a snapshot), common
/// shell variables (`PATH`, `HOME`, `LC_*`, ...) count as inherited. Everything else
/// is taken as set by the app.
pub fn split_env(
    name: &str,
    env: &Map<String, Value>,
    daemon_env: Option<&Map<String, Value>>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    split_env_owned(name, env.clone(), daemon_env)
}

fn split_env_owned(
    name: &str,
    env: Map<String, Value>,
    daemon_env: Option<&Map<String, Value>>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut set = BTreeMap::new();
    let mut inherited = BTreeMap::new();
    for (key, value) in env {
        let pm2_added = PM2_ADDED_ENV.contains(&key.as_str())
            || key == SPEC_HASH_ENV
            || (key == name && is_module_marker(&value))
            // An object is never an env var the process sees (PM2 stringifies the
            // app's own; executeApp copies only scalars).
            || value.is_object();
        let from_daemon = match daemon_env {
            Some(denv) => denv.get(&key).is_some_and(|d| same_env_value(d, &value)),
            None => is_shell_variable(&key),
        };
        if pm2_added || from_daemon {
            inherited.insert(key, value);
        } else {
            set.insert(key, value);
        }
    }
    (set, inherited)
}

/// The `<name>` env entry PM2 adds for module config: `{}`, an empty object in PM2 7's
/// lists (an older client may show the string `"{}"`).
fn is_module_marker(value: &Value) -> bool {
    value.as_str() == Some("{}") || value.as_object().is_some_and(Map::is_empty)
}

/// Env values from the daemon are strings; an app's may be numbers or booleans.
fn same_env_value(daemon: &Value, app: &Value) -> bool {
    match (daemon, app) {
        (Value::String(d), Value::String(a)) => d == a,
        (Value::String(d), Value::Number(n)) => d.parse::<serde_json::Number>().is_ok_and(|dn| dn == *n) || *d == n.to_string(),
        (Value::String(d), Value::Bool(b)) => *d == if *b { "true" } else { "false" },
        (d, a) => d == a,
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A number or a numeric string as `u64` (PM2 stores some ids and counts as either).
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "pid": 4242, "name": "api", "pm_id": 3, "monit": {"memory": 1024, "cpu": 0.5},
            "pm2_env": {
                "name": "api", "namespace": "shop", "status": "online", "pm_id": 3,
                "restart_time": 7, "unstable_restarts": 1, "pm_uptime": 1000, "created_at": 900,
                "exec_mode": "cluster_mode", "pm_exec_path": "/srv/api/app.js", "pm_cwd": "/srv/api",
                "args": ["--port", 3000], "node_args": [], "exec_interpreter": "node", "instances": 2,
                "pm_out_log_path": "/l/o.log", "pm_err_log_path": "/l/e.log", "pm_pid_path": "/p/api-3.pid",
                "min_uptime": 5000, "kill_timeout": 3000, "PORT": 3000, "PATH": "/usr/bin",
                "x_reconcile_hash": "abc",
                "env": {"PORT": 3000, "PATH": "/usr/bin", "PM2_HOME": "/h", "api": "{}", "unique_id": "u", "TOKEN": "t"}
            }
        })
    }

    #[test]
    fn normalizes_an_entry() {
        let procs = normalize_list(&json!([entry()]), None).unwrap();
        let p = &procs[0];
        assert_eq!((p.pm_id, p.name.as_str(), p.namespace.as_str()), (3, "api", "shop"));
        assert_eq!(p.status, ProcessStatus::Online);
        assert_eq!(p.pid, Some(4242));
        assert_eq!(p.exec_mode, ExecMode::Cluster);
        assert_eq!(p.args, vec!["--port", "3000"]);
        assert_eq!(p.instances, Some(2));
        assert_eq!(p.spec_hash.as_deref(), Some("abc"));
        assert_eq!(p.option_u64("kill_timeout"), Some(3000));
        assert!(!p.options.contains_key("PORT"), "env copies are not options");
        assert_eq!(p.env_set.keys().collect::<Vec<_>>(), ["PORT", "TOKEN"]);
        assert!(p.env_inherited.contains_key("PATH") && p.env_inherited.contains_key("api"));
        assert_eq!(p.uptime_ms(1500), Some(500));
    }

    #[test]
    fn daemon_env_decides_inheritance() {
        let denv = json!({"PORT": "3000", "PATH": "/other"});
        let procs = normalize_list(&json!([entry()]), denv.as_object()).unwrap();
        assert!(procs[0].env_inherited.contains_key("PORT"));
        assert!(procs[0].env_set.contains_key("PATH"));
    }

    #[test]
    fn pm2_additions_are_inherited_whatever_the_daemon_env() {
        let mut e = entry();
        e["pm2_env"]["env"] = json!({"api": {}, "PM2_INTERACTOR_PROCESSING": "true", "other": {}, "A": "1"});
        let procs = normalize_list(&json!([e]), Some(&Map::new())).unwrap();
        // An object never reaches the child (PM2 stringifies an app's own objects).
        assert_eq!(procs[0].env_set.keys().collect::<Vec<_>>(), ["A"]);
        assert!(procs[0].env_inherited.contains_key("api") && procs[0].env_inherited.contains_key("PM2_INTERACTOR_PROCESSING"));
    }

    #[test]
    fn stopped_apps_without_pid_or_counters_are_fine() {
        let v = json!([{"name": "x", "pm_id": 0, "pm2_env": {"status": "stopped", "created_at": null}}]);
        let p = &normalize_list(&v, None).unwrap()[0];
        assert_eq!(p.pid, None);
        assert_eq!(p.namespace, "default");
        assert_eq!(p.exec_mode, ExecMode::Fork);
        assert_eq!(p.uptime_ms(10), None);
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert_eq!(normalize_list(&json!({}), None), Err(ModelError::NotAList));
        assert_eq!(normalize_list(&json!([{"name": "x"}]), None), Err(ModelError::NoEnv { index: 0 }));
        assert_eq!(normalize_list(&json!([{"pm2_env": {}}]), None), Err(ModelError::NoId { index: 0 }));
    }
}
