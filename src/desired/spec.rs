//! A desired app normalized to what the PM2 daemon would report for it once started
//! (`pm_exec_path`, `pm_cwd`, `exec_interpreter`, `exec_mode`, ...), so that it can be
//! compared field by field with a live process, plus a hash of that spec that
//! `apply` stamps on every process it starts.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::app::AppView;
use crate::live::ExecMode;

/// Options that restart/reload can change in place (pm2-internals.md §4), compared
/// when the desired state sets them.
pub const UPDATE_OPTIONS: &[&str] = &[
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "kill_timeout",
    "max_memory_restart",
    "autorestart",
    "cron_restart",
    "wait_ready",
    "listen_timeout",
    "watch",
    "ignore_watch",
    "instance_var",
    "merge_logs",
    "source_map_support",
    "stop_exit_codes",
    "treekill",
    "vizion",
];

/// Interpreters PM2 picks by extension (`lib/API/interpreter.json`).
const INTERPRETERS: &[(&str, &str)] = &[
    ("sh", "bash"),
    ("py", "python"),
    ("rb", "ruby"),
    ("php", "php"),
    ("pl", "perl"),
    ("js", "node"),
    ("ts", "bun"),
    ("tsx", "bun"),
];

/// One desired app, normalized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredApp {
    pub name: String,
    pub namespace: String,
    /// Absolute, as `pm_exec_path`.
    pub script: PathBuf,
    /// Absolute, as `pm_cwd`: the app's `cwd` resolved against the ecosystem file's
    /// directory, or that directory (PM2 would use the shell's; `reconcile` is explicit).
    pub cwd: PathBuf,
    pub args: Vec<String>,
    pub node_args: Vec<String>,
    /// `exec_interpreter` when it can be known without running PM2 (explicit, or by
    /// extension); `None` when PM2 decides at start (binary sniffing, node's path).
    pub interpreter: Option<String>,
    pub exec_mode: ExecMode,
    /// How many processes: `instances` resolved against the CPU count.
    pub instances: u64,
    /// Merged env (`env` + `env_<name>`), values as the app will see them.
    pub env: BTreeMap<String, String>,
    /// Log and pid paths when the file sets them, absolute.
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// [`UPDATE_OPTIONS`] the file sets, coerced.
    pub options: BTreeMap<String, Value>,
    /// The app as written, with canonical keys and merged env: what `apply` starts.
    #[serde(skip)]
    pub spec: Value,
    /// Where it is defined.
    pub file: PathBuf,
    pub line: usize,
    /// sha256 of the normalized spec, hex (first 16 bytes).
    pub hash: String,
    /// The revision of the app's code ([`super::revision`]); `None` when not tracked.
    /// Not part of [`DesiredApp::hash`]: a code change is its own attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When the code the revision covers last changed on disk (ms since the epoch):
    /// compared with the start of a process that carries no revision stamp.
    #[serde(skip)]
    pub code_changed_ms: Option<i64>,
}

/// The facts about the host that normalization needs.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPU count, for `instances: max` / 0 / negative.
    pub cpus: u64,
    /// `$PATH` lookups of bare commands (`sleep` → `/usr/bin/sleep`), as PM2 does.
    pub path: Option<std::ffi::OsString>,
}

impl Host {
    /// This machine.
    pub fn current() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Self { cpus, path: std::env::var_os("PATH") }
    }
}

impl DesiredApp {
    /// Normalizes one app of a file in `base_dir` (the ecosystem file's directory).
    pub fn build(view: &AppView, file: &Path, line: usize, base_dir: &Path, host: &Host) -> Self {
        let fields = &view.fields;
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
        let mut name = view.name().unwrap_or_else(|| format!("app-{}", view.index));
        let mut spec = fields.clone();
        // `append_env_to_name: true` with `--env NAME`: PM2 runs it as `<name>-NAME`
        // (lib/API.js, _startJson). The spec apply resolves carries the final name.
        if fields.get("append_env_to_name").and_then(Value::as_bool) == Some(true)
            && let Some(env) = &view.env_name
        {
            name = format!("{name}-{env}");
            if let Some(object) = spec.as_object_mut() {
                object.insert("name".into(), Value::String(name.clone()));
                object.remove("append_env_to_name");
            }
        }
        let namespace = view.namespace();
        let cwd = normalize(&match text("cwd") {
            Some(cwd) => base_dir.join(expand_home(&cwd)),
            None => base_dir.to_path_buf(),
        });
        let mut args = string_list(fields.get("args"));
        let raw_script = text("script").unwrap_or_default();
        let script = if raw_script.contains(' ') && !cwd.join(&raw_script).exists() {
            // PM2 runs a command line through `bash -c` (Common.verifyConfs).
            let mut with_command = vec!["-c".to_string(), raw_script.clone()];
            with_command.append(&mut args);
            args = with_command;
            lookup("bash", host).unwrap_or_else(|| PathBuf::from("/usr/bin/bash"))
        } else {
            let resolved = resolve_script(&raw_script, &cwd, host);
            // PM2 falls back to `which(script)` from the CLI's directory (the file's)
            // when `cwd + script` does not exist (lib/Common.js, prepareAppConf): e.g.
            // `cwd: 'client', script: 'client/node_modules/.bin/next'`. Only a `cwd`
            // other than the file's directory can make the two differ, so only then is
            // anything looked at on disk.
            let from_cli = normalize(&base_dir.join(expand_home(&raw_script)));
            if cwd != base_dir && raw_script.contains('/') && !Path::new(&raw_script).is_absolute() && !resolved.exists() && from_cli.is_file() {
                from_cli
            } else {
                resolved
            }
        };
        let extension = script.extension().and_then(|e| e.to_str()).unwrap_or("");
        let interpreter = text("exec_interpreter").or_else(|| {
            INTERPRETERS.iter().find(|(ext, _)| *ext == extension).map(|(_, i)| (*i).to_string())
        });
        let instances_set = fields.get("instances").and_then(Value::as_i64);
        let exec_mode = match text("exec_mode").as_deref() {
            Some("cluster" | "cluster_mode") => ExecMode::Cluster,
            Some(_) => ExecMode::Fork,
            None => {
                let node_like = interpreter.as_deref().is_none_or(|i| {
                    let base = i.rsplit('/').next().unwrap_or(i);
                    base.ends_with("node") || base.ends_with("bun")
                });
                if instances_set.is_some() && node_like { ExecMode::Cluster } else { ExecMode::Fork }
            }
        };
        let instances = match instances_set {
            None => 1,
            Some(0) => host.cpus,
            Some(n) if n < 0 => host.cpus.saturating_sub(n.unsigned_abs()).max(1),
            Some(n) => n.unsigned_abs(),
        };
        // `null` is kept, as PM2 keeps it: the daemon stores `N: null` in the app's env
        // and the process sees `N=null` (Node writes `${value}`). Dropping it here made
        // every apply see an env var to remove, and replace the app, forever.
        let mut env: BTreeMap<String, String> = fields
            .get("env")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), env_value(v))).collect())
            .unwrap_or_default();
        if interpreter.as_deref().is_some_and(|i| i.contains("python")) {
            env.entry("PYTHONUNBUFFERED".into()).or_insert_with(|| "1".into());
        }
        if let Some(port) = fields.get("port") {
            env.insert("PORT".into(), env_value(port));
        }
        let path_of = |key: &str| text(key).map(|p| if p == "NULL" { PathBuf::from("/dev/null") } else { normalize(&cwd.join(expand_home(&p))) });
        // PM2's verifyConfs drops numeric options that are 0 (observed on 7.0.4:
        // `restart_delay: 0`, `max_restarts: 0` never reach pm2_env), so they are not
        // part of what the app will run with.
        let options: BTreeMap<String, Value> = UPDATE_OPTIONS
            .iter()
            .filter_map(|k| fields.get(*k).map(|v| ((*k).to_string(), v.clone())))
            .filter(|(_, v)| v.as_f64() != Some(0.0))
            .collect();
        let (out_file, error_file, log_file, pid_file) =
            (path_of("out_file"), path_of("error_file"), path_of("log_file"), path_of("pid_file"));
        let mut app = Self {
            name,
            namespace,
            script,
            cwd,
            args,
            node_args: string_list(fields.get("node_args")),
            interpreter,
            exec_mode,
            instances,
            env,
            out_file,
            error_file,
            log_file,
            pid_file,
            options,
            spec,
            file: file.to_path_buf(),
            line,
            hash: String::new(),
            revision: None,
            code_changed_ms: None,
        };
        app.hash = app.compute_hash();
        app
    }

    /// The hash of everything that defines the app (not where it is written), except
    /// the instance count: that is seen live (how many processes), and a scale must
    /// not leave the processes it kept with a stale stamp.
    fn compute_hash(&self) -> String {
        /// What the hash covers, serialized in this order (the stamp on live processes
        /// depends on these exact bytes: the fields, their order, and their JSON).
        #[derive(Serialize)]
        struct Canonical<'a> {
            name: &'a str,
            namespace: &'a str,
            script: &'a Path,
            cwd: &'a Path,
            args: &'a [String],
            node_args: &'a [String],
            interpreter: &'a Option<String>,
            exec_mode: &'a str,
            env: &'a BTreeMap<String, String>,
            out_file: &'a Option<PathBuf>,
            error_file: &'a Option<PathBuf>,
            log_file: &'a Option<PathBuf>,
            pid_file: &'a Option<PathBuf>,
            options: &'a BTreeMap<String, Value>,
        }
        let canonical = Canonical {
            name: &self.name,
            namespace: &self.namespace,
            script: &self.script,
            cwd: &self.cwd,
            args: &self.args,
            node_args: &self.node_args,
            interpreter: &self.interpreter,
            exec_mode: self.exec_mode.as_str(),
            env: &self.env,
            out_file: &self.out_file,
            error_file: &self.error_file,
            log_file: &self.log_file,
            pid_file: &self.pid_file,
            options: &self.options,
        };
        // Streamed into the digest: no `Value` tree, no intermediate string.
        let mut hasher = Sha256::new();
        // Writing into a hasher cannot fail; a path that is not UTF-8 ends the JSON
        // there, which still hashes the same every time.
        let _ = serde_json::to_writer(&mut hasher, &canonical);
        hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// An env value as the process sees it: strings as they are, everything else as JSON
/// (PM2 JSON-stringifies objects; numbers and booleans become their text).
pub fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `args`/`node_args`: a list, or a string split with shell-like quoting as PM2 does.
pub fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().map(env_value).collect(),
        Some(Value::String(s)) => split_args(s),
        _ => Vec::new(),
    }
}

/// PM2's split of a string into arguments (`Config._valid`): whitespace-separated,
/// with `"…"` and `'…'` kept whole and their quotes removed.
pub fn split_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                started = true;
            }
            None if c.is_whitespace() => {
                if started && !current.trim().is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
                started = false;
            }
            None => {
                current.push(c);
                started = true;
            }
        }
    }
    if started && !current.trim().is_empty() {
        out.push(current);
    }
    out
}

fn resolve_script(script: &str, cwd: &Path, host: &Host) -> PathBuf {
    let candidate = normalize(&cwd.join(expand_home(script)));
    // A path is taken as written (no stat: one per app showed in profiles); a bare
    // name is looked up on PATH unless the cwd has it.
    if script.contains('/') || candidate.exists() {
        return candidate;
    }
    lookup(script, host).unwrap_or(candidate)
}

fn lookup(command: &str, host: &Host) -> Option<PathBuf> {
    let path = host.path.as_ref()?;
    std::env::split_paths(path).map(|dir| dir.join(command)).find(|p| p.is_file())
}

fn expand_home(path: &str) -> PathBuf {
    // HOME is looked up only for a `~/` path: a lookup locks and scans the process
    // environment, and this runs for six paths of every app.
    match path.strip_prefix("~/").and_then(|rest| Some((rest, std::env::var_os("HOME")?))) {
        Some((rest, home)) => PathBuf::from(home).join(rest),
        None => PathBuf::from(path),
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system (like `path.resolve`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::desired::extract_apps;

    fn host() -> Host {
        Host { cpus: 4, path: Some("/usr/bin:/bin".into()) }
    }

    fn build(app: Value) -> DesiredApp {
        let views = extract_apps(&json!([app]), Some("production")).unwrap();
        DesiredApp::build(&views[0], Path::new("/srv/eco.json"), 1, Path::new("/srv/app"), &host())
    }

    /// The stamp on live processes must not change between versions: the hash is the
    /// SHA-256 of exactly this JSON (as the first versions built it with `json!`).
    #[test]
    fn the_spec_hash_is_the_hash_of_the_canonical_json() {
        let app = build(json!({"name": "api", "script": "app.js", "cwd": "/srv/api", "args": "--port 3000", "node_args": ["--max-old-space-size=512"],
            "exec_mode": "cluster", "instances": 2, "env": {"PORT": 3000, "NODE_ENV": "production"}, "out_file": "/l/o.log",
            "pid_file": "p.pid", "kill_timeout": 5000, "min_uptime": "5s"}));
        let canonical = json!({
            "name": app.name, "namespace": app.namespace, "script": app.script, "cwd": app.cwd,
            "args": app.args, "node_args": app.node_args, "interpreter": app.interpreter,
            "exec_mode": app.exec_mode.as_str(), "env": app.env,
            "out_file": app.out_file, "error_file": app.error_file, "log_file": app.log_file,
            "pid_file": app.pid_file, "options": app.options,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        let expected: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(app.hash, expected);
        assert!(!app.options.is_empty() && !app.env.is_empty() && app.out_file.is_some(), "{app:?}");
    }

    #[test]
    fn paths_mode_and_instances_follow_pm2() {
        let app = build(json!({"name": "a", "script": "./dist/server.js", "instances": 1, "args": "--a 1 --b 'x y'"}));
        assert_eq!(app.script, PathBuf::from("/srv/app/dist/server.js"));
        assert_eq!(app.cwd, PathBuf::from("/srv/app"));
        assert_eq!(app.exec_mode, ExecMode::Cluster, "instances set + node = cluster (incident 003)");
        assert_eq!(app.interpreter.as_deref(), Some("node"));
        assert_eq!(app.args, ["--a", "1", "--b", "x y"]);
        let app = build(json!({"name": "a", "script": "sleep", "interpreter": "none", "instances": "max", "cwd": "../x"}));
        assert_eq!(app.script, PathBuf::from("/usr/bin/sleep"));
        assert_eq!(app.cwd, PathBuf::from("/srv/x"));
        assert_eq!(app.exec_mode, ExecMode::Fork);
        assert_eq!(app.instances, 4);
    }

    #[test]
    fn env_is_merged_and_stringified() {
        let app = build(json!({"name": "a", "script": "a.py", "env": {"PORT": 80, "A": "x"}, "env_production": {"A": "y"}}));
        assert_eq!(app.env["PORT"], "80");
        assert_eq!(app.env["A"], "y");
        assert_eq!(app.env["PYTHONUNBUFFERED"], "1");
    }

    #[test]
    fn the_hash_changes_with_the_spec_only() {
        let a = build(json!({"name": "a", "script": "a.js", "env": {"A": "1"}}));
        let b = build(json!({"script": "a.js", "name": "a", "env": {"A": "1"}}));
        let c = build(json!({"name": "a", "script": "a.js", "env": {"A": "2"}}));
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash.len(), 32);
    }

    #[test]
    fn command_lines_run_through_bash() {
        let app = build(json!({"name": "a", "script": "npm run start"}));
        assert_eq!(app.script.file_name().unwrap(), "bash");
        assert_eq!(app.args, ["-c", "npm run start"]);
    }
}
