//! Turning an app spec into the payload PM2's `prepare` expects, exactly as
//! `pm2 start ecosystem --only NAME` would, by running PM2's own JavaScript.
//!
//! # Why a `node` helper plus `prepare`, and not `pm2 start`
//!
//! The CLI resolves an app through ~300 lines of rules (`verifyConfs`,
//! `Config.validateJSON`, `resolveAppAttributes`, `mergeEnvironmentVariables`:
//! aliases, coercions, defaults, interpreter detection, log paths, `bash -c`, ...).
//! Porting them would drift; so a tiny helper `require`s the installed PM2's
//! `lib/Common.js` and runs the same functions, prints the payload, and the client
//! sends it as `prepare` over the socket. Compared with running `pm2 start FILE
//! --only NAME` for the app, measured in-process when this was written (2-core VM
//! shared with other builds, PM2 7.0.4, a daemon with 100 apps, 10 starts each;
//! `cargo bench --bench compare` now times whole applies through the binary):
//!
//! | route | wall time per start, median (min..max) |
//! |---|---|
//! | `node` helper + `prepare` over the socket | 125-133 ms (112..178) |
//! | `pm2 start FILE --only NAME` | 221-287 ms (202..323) |
//!
//! Most of the helper route is Node's start-up and loading PM2's modules (~100 ms
//! for `node -e "require('pm2/lib/Common.js')"`); the rest is the fresh read that
//! proves the name is free, and `prepare`. The CLI route pays for Node plus the
//! whole CLI (commander, the API, its own `getMonitorData`, its table output).
//!
//! Beyond speed the helper route is chosen because it is *safe*: `pm2 start`
//! restarts (and hijacks) any live app with the same name in any namespace
//! (pm2-internals.md §0.2), and starts a new empty daemon if the daemon died since
//! our last read (§7). The helper never connects to the daemon at all; the one
//! mutating call is ours, over the socket, right after a fresh read proved the name
//! is free.
//!
//! # Which PM2
//!
//! `$RECONCILE_PM2` (the pm2 package directory, or its `bin/pm2`) if set; else the
//! `pm2` found on `PATH`, following symlinks (`node_modules/.bin/pm2` →
//! `../pm2/bin/pm2`) to its package directory. `node` must be on `PATH`. `apply`
//! uses [`Resolver::for_daemon`]: the package must be of the daemon's major (the
//! daemon's own package first), or apply refuses naming both versions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::error::LiveError;
use super::home::Pm2Home;
use super::model::{REVISION_KEY, SPEC_HASH_KEY};
use super::rpc::Call;

/// The helper: reads `[{spec, cwd, env_name}, ...]` on stdin and prints, for each,
/// `{"payload": <prepare payload>, "update": <restart env>}` or `{"error": "..."}`.
/// The payload mirrors `API._startJson` + `startApps` for one app (lib/API.js:898-1177);
/// the update env is what the same function sends to `restartProcessId` for an app
/// that is already running: the merged env plus `current_conf` (lib/API.js:1063-1073,
/// `Common.mergeEnvironmentVariables`). One `node` start serves every app of an apply.
const HELPER: &str = r#"
const path = require('path');
const util = require('util');
const lib = path.join(process.argv[1], 'lib');
process.env.PM2_USAGE = 'CLI';
// PM2 prints to stdout while it resolves (`[PM2] Creating folder: .../logs` when a
// log directory does not exist yet): stdout carries only the answer.
const answer = process.stdout.write.bind(process.stdout);
console.log = console.info = (...args) => process.stderr.write(util.format(...args) + '\n');
process.stdout.write = (chunk, ...rest) => process.stderr.write(chunk, ...rest);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  let requests;
  try { requests = JSON.parse(input); } catch (e) { process.stderr.write('bad input: ' + e.message); process.exit(3); }
  const Common = require(path.join(lib, 'Common.js'));
  const Modularizer = require(path.join(lib, 'API', 'Modules', 'Modularizer.js'));
  const cst = require(path.join(process.argv[1], 'constants.js'));
  process.env.PM2_JSON_PROCESSING = true;
  const out = requests.map((req) => {
    try {
      let apps = Common.verifyConfs([req.spec]);
      if (apps instanceof Error) throw apps;
      const app = apps[0];
      if (!app.env) app.env = {};
      app.env.io = app.io;
      if (!app.namespace) app.namespace = 'default';
      app.username = Common.getCurrentUsername();
      // The CLI also sets `updateEnv: true` here, a flag for its own `_operate` that
      // then lands in the app's env; it is not sent.
      const update = Common.mergeEnvironmentVariables(app, req.env_name || undefined, {});
      const resolved = Common.resolveAppAttributes({ cwd: req.cwd, pm2_home: cst.PM2_HOME }, JSON.parse(JSON.stringify(app)));
      if (!resolved.env) resolved.env = {};
      resolved.env['PM2_HOME'] = cst.PM2_HOME;
      Object.assign(resolved.env, Modularizer.getAdditionalConf(resolved.name));
      resolved.env = Common.mergeEnvironmentVariables(resolved, req.env_name || undefined, {});
      delete resolved.env.current_conf;
      resolved.km_link = false;
      return { payload: resolved, update: update };
    } catch (e) {
      return { error: String(e && e.message ? e.message : e) };
    }
  });
  answer(JSON.stringify(out));
});
"#;

/// A payload ready for `prepare`, and the env a restart sends to bring a running
/// process to the same spec: only [`Resolver::resolve`] (or, for a rollback,
/// [`ResolvedApp::from_saved`]) makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedApp {
    payload: Value,
    update: Map<String, Value>,
}

/// One app for [`Resolver::resolve_many`].
#[derive(Debug, Clone)]
pub struct ResolveRequest<'a> {
    /// The app as written (canonical keys, env merged).
    pub spec: &'a Value,
    /// The directory `pm2 start` would run in (relative paths resolve against it).
    pub cwd: &'a Path,
    /// The `env_<name>` block to merge, if the spec still has them.
    pub env_name: Option<&'a str>,
}

impl ResolvedApp {
    /// The app's name.
    pub fn name(&self) -> &str {
        self.payload.get("name").and_then(Value::as_str).unwrap_or_default()
    }

    /// The app's namespace (`"default"` when the spec had none, as the CLI does).
    pub fn namespace(&self) -> &str {
        self.payload.get("namespace").and_then(Value::as_str).unwrap_or("default")
    }

    /// Stamps the spec hash as a custom app attribute; PM2 keeps it across restart,
    /// dump and resurrect (pm2-internals.md §5), and `LiveProcess::spec_hash` reads it.
    /// A restart carries it in `current_conf`, so the stamp follows an update.
    #[must_use]
    pub fn with_spec_hash(mut self, hash: &str) -> Self {
        if let Some(obj) = self.payload.as_object_mut() {
            obj.insert(SPEC_HASH_KEY.to_string(), Value::String(hash.to_string()));
        }
        if let Some(Value::Object(conf)) = self.update.get_mut("current_conf") {
            conf.insert(SPEC_HASH_KEY.to_string(), Value::String(hash.to_string()));
        }
        self
    }

    /// Stamps the code revision (`x_reconcile_revision`) the same way as the spec hash,
    /// so it survives restart, reload, dump and resurrect, and follows an update.
    #[must_use]
    pub fn with_revision(mut self, revision: Option<&str>) -> Self {
        let Some(revision) = revision else { return self };
        if let Some(obj) = self.payload.as_object_mut() {
            obj.insert(REVISION_KEY.to_string(), Value::String(revision.to_string()));
        }
        if let Some(Value::Object(conf)) = self.update.get_mut("current_conf") {
            conf.insert(REVISION_KEY.to_string(), Value::String(revision.to_string()));
        }
        self
    }

    /// A process's `pm2_env` from an earlier read, made ready to `prepare` again, as
    /// `pm2 dump` + `pm2 resurrect` do (lib/API/Startup.js: `instances`, `pm_id` and
    /// `prev_restart_delay` removed; the daemon resets the rest on start). For
    /// `apply --rollback`; `instances` processes are started from it. `None` when the
    /// entry has no usable `pm2_env`.
    pub fn from_saved(entry: &Value, instances: usize) -> Option<Self> {
        let mut env = entry.get("pm2_env")?.as_object()?.clone();
        for key in ["instances", "pm_id", "prev_restart_delay", "unique_id", "created_at", "axm_actions", "axm_monitor", "axm_options", "axm_dynamic"] {
            env.remove(key);
        }
        env.insert("instances".into(), Value::from(instances.max(1)));
        let payload = Value::Object(env);
        Call::prepare(payload.clone()).ok()?;
        Some(Self { payload, update: Map::new() })
    }

    /// The `env` argument of `restartProcessId`/`reloadProcessId` that brings a running
    /// process to this spec: the merged env, and `current_conf` (the app minus
    /// `exec_mode`), exactly as `pm2 restart ecosystem.config.js` sends it.
    pub fn update_env(&self) -> &Map<String, Value> {
        &self.update
    }

    /// The payload as PM2 will receive it.
    pub fn payload(&self) -> &Value {
        &self.payload
    }
}

/// Runs PM2's own app resolution through `node`.
#[derive(Debug, Clone)]
pub struct Resolver {
    pm2_dir: PathBuf,
    node: PathBuf,
    timeout: Duration,
}

impl Resolver {
    /// Finds the PM2 package (see the module docs) and `node`.
    pub fn locate(timeout: Duration) -> Result<Self, LiveError> {
        let explicit = std::env::var_os("RECONCILE_PM2").filter(|v| !v.is_empty()).map(PathBuf::from);
        let candidate = explicit.clone().or_else(|| which("pm2"));
        let looked = match &candidate {
            Some(p) => p.display().to_string(),
            None => "$RECONCILE_PM2 and pm2 on PATH".to_string(),
        };
        let pm2_dir = candidate.and_then(|p| package_dir(&p)).ok_or(LiveError::Pm2LibNotFound { looked })?;
        Ok(Self { pm2_dir, node: which("node").unwrap_or_else(|| PathBuf::from("node")), timeout })
    }

    /// The resolver for a daemon running PM2 `daemon_version`: the package must be
    /// of the same major (`lib/Common.js` resolves apps differently between majors:
    /// docs/pm2-versions.md). `$RECONCILE_PM2`, when set, is the only candidate and
    /// is refused if its major differs. Otherwise the daemon's own package (from its
    /// `getReport().argv`, `.../pm2/lib/Daemon.js`, when readable here) is preferred,
    /// then `pm2` on `PATH`; the first of the daemon's major wins.
    pub fn for_daemon(daemon_version: &str, daemon_script: Option<&Path>, timeout: Duration) -> Result<Self, LiveError> {
        let node = which("node").unwrap_or_else(|| PathBuf::from("node"));
        let explicit = std::env::var_os("RECONCILE_PM2").filter(|v| !v.is_empty()).map(PathBuf::from);
        let candidates: Vec<PathBuf> = match explicit {
            Some(dir) => vec![dir],
            None => daemon_script
                .and_then(|script| script.parent()?.parent().map(Path::to_path_buf))
                .into_iter()
                .chain(which("pm2"))
                .collect(),
        };
        let mut first_found: Option<(PathBuf, String)> = None;
        for candidate in &candidates {
            let Some(pm2_dir) = package_dir(candidate) else { continue };
            let version = package_version(&pm2_dir).unwrap_or_else(|| "an unknown version".into());
            if same_major(&version, daemon_version) {
                return Ok(Self { pm2_dir, node, timeout });
            }
            first_found.get_or_insert((pm2_dir, version));
        }
        match first_found {
            Some((dir, lib_version)) => Err(LiveError::Pm2LibVersion { dir, lib_version, daemon_version: daemon_version.to_string() }),
            None => {
                let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
                let looked = if looked.is_empty() { "$RECONCILE_PM2 and pm2 on PATH".to_string() } else { looked };
                Err(LiveError::Pm2LibNotFound { looked })
            }
        }
    }

    /// The version of the PM2 package in use (its package.json), if it says.
    pub fn pm2_version(&self) -> Option<String> {
        package_version(&self.pm2_dir)
    }

    /// Uses the PM2 package in `pm2_dir` (tests point this at the repo's node_modules).
    pub fn with_pm2_dir(pm2_dir: impl Into<PathBuf>, timeout: Duration) -> Result<Self, LiveError> {
        let dir = pm2_dir.into();
        let pm2_dir = package_dir(&dir).ok_or(LiveError::Pm2LibNotFound { looked: dir.display().to_string() })?;
        Ok(Self { pm2_dir, node: which("node").unwrap_or_else(|| PathBuf::from("node")), timeout })
    }

    /// The PM2 package directory in use.
    pub fn pm2_dir(&self) -> &Path {
        &self.pm2_dir
    }

    /// Resolves one app spec (ecosystem fields as written, `env` already merged or
    /// with `env_<name>` blocks and `env_name`) as `pm2 start` run in `cwd` with
    /// `PM2_HOME` = `home` would.
    pub async fn resolve(
        &self,
        spec: &Value,
        cwd: &Path,
        env_name: Option<&str>,
        home: &Pm2Home,
    ) -> Result<ResolvedApp, LiveError> {
        let name = spec.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        let mut all = self.resolve_many(&[ResolveRequest { spec, cwd, env_name }], home, None).await?;
        all.pop().unwrap_or_else(|| Err(LiveError::Resolve { name, message: "helper printed no app".into() }))
    }

    /// Resolves many apps with one `node` run (start-up is most of the cost). The
    /// outer error is the helper failing as a whole; each app has its own result.
    ///
    /// `base_env` is the environment PM2's code runs in. The CLI copies its whole
    /// shell environment into every app it starts (`Common.prepareAppConf`), so what
    /// an app got would depend on who ran the deploy, from which shell. `apply` passes
    /// the daemon's own environment instead: each app then runs with exactly its
    /// ecosystem env on top of what the daemon gives every child anyway — the same on
    /// every run, whoever runs it. `None` inherits ours (as `pm2 start` would).
    pub async fn resolve_many(
        &self,
        requests: &[ResolveRequest<'_>],
        home: &Pm2Home,
        base_env: Option<&Map<String, Value>>,
    ) -> Result<Vec<Result<ResolvedApp, LiveError>>, LiveError> {
        let names: Vec<String> =
            requests.iter().map(|r| r.spec.get("name").and_then(Value::as_str).unwrap_or("?").to_string()).collect();
        let all = names.join(", ");
        let fail = |message: String| LiveError::Resolve { name: all.clone(), message };
        let input: Vec<Value> = requests
            .iter()
            .map(|r| serde_json::json!({"spec": r.spec, "cwd": r.cwd, "env_name": r.env_name}))
            .collect();
        let cwd = requests.first().map_or(Path::new("/"), |r| r.cwd);
        let mut command = tokio::process::Command::new(&self.node);
        if let Some(env) = base_env {
            command.env_clear();
            command.envs(env.iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v))));
        }
        let mut child = command
            .arg("-e")
            .arg(HELPER)
            .arg(&self.pm2_dir)
            .env("PM2_HOME", &home.dir)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run node: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(Value::Array(input).to_string().as_bytes()).await.map_err(|e| fail(format!("writing to node: {e}")))?;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("node took longer than {} ms", self.timeout.as_millis())))?
            .map_err(|e| fail(format!("node failed: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("node exited with an error");
            return Err(fail(line.trim().to_string()));
        }
        let Ok(Value::Array(results)) = serde_json::from_slice::<Value>(&output.stdout) else {
            return Err(fail("the helper printed no JSON list".into()));
        };
        if results.len() != requests.len() {
            return Err(fail(format!("the helper answered for {} of {} apps", results.len(), requests.len())));
        }
        Ok(results
            .into_iter()
            .zip(names)
            .map(|(result, name)| {
                let message = |m: &str| LiveError::Resolve { name: name.clone(), message: m.to_string() };
                if let Some(error) = result.get("error").and_then(Value::as_str) {
                    return Err(message(error));
                }
                let Value::Object(mut obj) = result else { return Err(message("helper printed no app")) };
                let payload = obj.remove("payload").filter(Value::is_object).ok_or_else(|| message("helper printed no app"))?;
                let update = match obj.remove("update") {
                    Some(Value::Object(update)) => update,
                    _ => return Err(message("helper printed no restart env")),
                };
                Ok(ResolvedApp { payload, update })
            })
            .collect())
    }
}

/// The `version` in a package directory's package.json.
fn package_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    doc.get("version")?.as_str().map(str::to_string)
}

/// Whether two PM2 versions have the same major.
fn same_major(a: &str, b: &str) -> bool {
    let major = |v: &str| super::version::Pm2Version::parse(v).map(|v| v.major);
    major(a).is_some() && major(a) == major(b)
}

/// `bin/pm2`, `.bin/pm2` (symlink) or the package directory → the package directory.
fn package_dir(path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    let has_lib = |d: &Path| d.join("lib").join("Common.js").is_file();
    if real.is_dir() && has_lib(&real) {
        return Some(real);
    }
    // .../pm2/bin/pm2 → .../pm2
    let dir = real.parent()?.parent()?;
    has_lib(dir).then(|| dir.to_path_buf())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
