//! The live process list, typed and normalized so it can be compared with desired
//! state: `fork_mode` becomes `fork`, `pm_exec_path` becomes `script`, env the app set
//! is kept apart from env it inherited, and every other `pm2_env` field is kept in
//! `options` for later comparisons (`min_uptime`, `kill_timeout`, ...).
//!
//! Built from `getMonitorData` (over the socket) or `pm2 jlist` output (a snapshot):
//! both are the same list, so one normalizer serves both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The env key (and custom app attribute) `apply` stamps a spec hash into.
pub const SPEC_HASH_KEY: &str = "x_reconcile_hash";
/// The same stamp in `env`, for apps the CLI created (the CLI drops unknown keys).
pub const SPEC_HASH_ENV: &str = "RECONCILE_SPEC_HASH";
/// The custom app attribute `apply` stamps the code revision into (kept by PM2
/// across restart, reload, dump and resurrect, as the spec hash is).
pub const REVISION_KEY: &str = "x_reconcile_revision";

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
    /// Env the app set (heuristic: see [`split_env`]), including variables a restart
    /// removed from `env` that the process still has (see `is_leftover_env`).
    pub env_set: BTreeMap<String, Value>,
    /// Env inherited from the shell that started it or the daemon, or added by PM2.
    pub env_inherited: InheritedEnv,
    /// The spec hash `apply` stamped, from `x_reconcile_hash` or `env.RECONCILE_SPEC_HASH`.
    pub spec_hash: Option<String>,
    /// The code revision `apply` stamped (`x_reconcile_revision`); `None` for processes
    /// started by hand or by a version of `reconcile` before revisions.
    pub revision: Option<String>,
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
    /// The `pm_id`s the project's adoption ledger vouches for (see
    /// `apply::adopted`); empty until the ledger is read.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub adopted: std::collections::BTreeSet<u64>,
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
    REVISION_KEY,
];

/// Env keys PM2 itself adds to every app (pm2-internals.md §5).
///
/// `PM2_INTERACTOR_PROCESSING`: when a `pm2` command has to launch the daemon first
/// (`pm2 start eco.config.js` on a fresh host), the CLI sets it in its own env
/// (`InteractorClient.launchAndInteract`) after the daemon was spawned and before the
/// apps are sent, so every app of that first start carries it and the daemon does not
/// (observed with pm2 7.0.4).
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

/// Visitor methods that accept any scalar (and null) as `$none`.
macro_rules! lenient_scalars {
    ($none:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
    };
}

/// Normalizes a whole `getMonitorData` / `pm2 jlist` list.
///
/// `daemon_env` is `getReport().env` when known; it sharpens the set/inherited split.
pub fn normalize_list(list: &Value, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ModelError> {
    normalize_owned(list.clone(), daemon_env)
}

/// [`normalize_list`], consuming the list.
pub fn normalize_owned(list: Value, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ModelError> {
    let Value::Array(items) = list else { return Err(ModelError::NotAList) };
    let entries = items
        .into_iter()
        .map(|item| ObjectSeed::<RawEntry>::new(Ctx::plain(Detail::Full)).deserialize(item).map(|e| e.0))
        .collect::<Result<Vec<_>, _>>()
        // Every value is accepted by the lenient readers below; this cannot fail.
        .map_err(|_| ModelError::NotAList)?;
    normalize_raw(RawList(Some(entries)), daemon_env)
}

/// The process list as it arrives (`getMonitorData`'s reply, or `pm2 jlist`), read
/// straight from the bytes by `serde` without building a `Value` tree first.
///
/// Why: for 100 apps the list is ~430 KB, mostly env (every variable twice: in
/// `pm2_env.env` and copied to the top of `pm2_env`). Parsing it into `Value`
/// (an insertion-ordered hash map per object) and then picking it apart took 3-5 ms
/// of the ~15 ms `reconcile status` run, as long as the daemon's own work; reading
/// into these types takes less than half (measured in-process: 3.7 ms to 1.7 ms
/// warm for 100 apps; `cargo bench --bench compare` times the commands).
///
/// The readers are lenient where the normalizer was: an entry that is not an object,
/// or a `pm2_env` that is not one, is kept as "missing" so that [`normalize_raw`]
/// reports it with its index; any other value shape is kept as a `Value`.
#[derive(Debug)]
pub struct RawList(Option<Vec<Option<RawEntry>>>);

impl Default for RawList {
    /// An empty list (what a daemon that sent no list has).
    fn default() -> Self {
        RawList(Some(Vec::new()))
    }
}

/// How much of each process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Everything the model has (what `plan` compares).
    Full,
    /// Only what `status` shows: `env_set`, `env_inherited` and `options` are left
    /// empty, and env is not parsed at all (it is most of the list's bytes).
    Summary,
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ListSeed(Detail::Full).deserialize(d)
    }
}

/// Reads a [`RawList`] with the given [`Detail`].
#[derive(Debug, Clone, Copy)]
pub struct ListSeed(pub Detail);

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = RawList;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawList, D::Error> {
        struct ListVisitor(Detail);
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = RawList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a process list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawList, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16));
                while let Some(IfObject(entry)) = seq.next_element_seed(ObjectSeed::<RawEntry>::new(Ctx::plain(self.0)))? {
                    items.push(entry);
                }
                Ok(RawList(Some(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawList, A::Error> {
                skip_map(map)?;
                Ok(RawList(None))
            }
            lenient_scalars!(RawList(None));
        }
        d.deserialize_any(ListVisitor(self.0))
    }
}

/// One entry of the list: the fields reconcile reads, by name.
#[derive(Debug, Default)]
pub struct RawEntry {
    pm_id: Option<Value>,
    name: Option<Value>,
    pid: Option<Value>,
    monit: Option<Value>,
    pm2_env: Option<RawPm2Env>,
}

impl<'de> FromObject<'de> for RawEntry {
    fn from_map<A: MapAccess<'de>>(mut map: A, ctx: Ctx<'_>) -> Result<Self, A::Error> {
        let mut entry = RawEntry::default();
        while let Some(key) = map.next_key::<KeyName<'de>>()? {
            match key.as_str() {
                "pm_id" => entry.pm_id = Some(map.next_value()?),
                "name" => entry.name = Some(map.next_value()?),
                "pid" => entry.pid = Some(map.next_value()?),
                "monit" => entry.monit = Some(map.next_value()?),
                "pm2_env" => entry.pm2_env = map.next_value_seed(ObjectSeed::<RawPm2Env>::new(ctx))?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(entry)
    }
}

/// `pm2_env`: the [`LIFTED`] fields in slots, `env` sorted by key, the rest in order.
#[derive(Debug)]
pub struct RawPm2Env {
    lifted: [Option<Value>; LIFTED.len()],
    env: SortedEnv,
    rest: Vec<(String, Value)>,
    /// How many of `rest` were read before `env` (and so not compared with it yet).
    rest_before_env: usize,
}

impl<'de> FromObject<'de> for RawPm2Env {
    fn from_map<A: MapAccess<'de>>(mut map: A, ctx: Ctx<'_>) -> Result<Self, A::Error> {
        let full = ctx.detail == Detail::Full;
        let mut raw = RawPm2Env {
            lifted: [const { None }; LIFTED.len()],
            env: SortedEnv::default(),
            rest: Vec::with_capacity(if full { 96 } else { 0 }),
            rest_before_env: 0,
        };
        while let Some(key) = map.next_key::<KeyName<'de>>()? {
            if !full && (key.as_str() == "env" || lifted_slot(key.as_str()).is_none()) {
                map.next_value::<IgnoredAny>()?;
            } else if key.as_str() == "env" {
                raw.env = map.next_value_seed(ObjectSeed::<SortedEnv>::new(ctx))?.0.unwrap_or_default();
                raw.rest_before_env = raw.rest.len();
            } else if let Some(slot) = lifted_slot(key.as_str()) {
                raw.lifted[slot] = Some(map.next_value()?);
            } else if let Some(copy_of) = raw.env.copy_of(key.as_str()) {
                // executeApp copies every scalar env entry to the top level of pm2_env
                // (after `env`, in PM2's order): compare such a copy in place instead of
                // allocating it, and keep it only if it differs (then it is an option).
                if let Some(value) = map.next_value_seed(UnlessEqual(copy_of))? {
                    raw.rest.push((key.into_string(), value));
                }
            } else {
                raw.rest.push((key.into_string(), map.next_value()?));
            }
        }
        Ok(raw)
    }
}

impl RawPm2Env {
    fn take(&mut self, key: &str) -> Option<Value> {
        lifted_slot(key).and_then(|slot| self.lifted[slot].take())
    }

    fn get(&self, key: &str) -> Option<&Value> {
        lifted_slot(key).and_then(|slot| self.lifted[slot].as_ref())
    }
}

/// The index of a key in [`LIFTED`] (a `match`: this runs for each of the ~80 keys
/// of every `pm2_env`, where a linear search of string compares showed in profiles).
fn lifted_slot(key: &str) -> Option<usize> {
    Some(match key {
        "pm_id" => 0,
        "name" => 1,
        "namespace" => 2,
        "status" => 3,
        "restart_time" => 4,
        "unstable_restarts" => 5,
        "pm_uptime" => 6,
        "created_at" => 7,
        "exec_mode" => 8,
        "pm_exec_path" => 9,
        "pm_cwd" => 10,
        "args" => 11,
        "node_args" => 12,
        "exec_interpreter" => 13,
        "instances" => 14,
        "pm_out_log_path" => 15,
        "pm_err_log_path" => 16,
        "pm_log_path" => 17,
        "pm_pid_path" => 18,
        "env" => 19,
        SPEC_HASH_KEY => 20,
        REVISION_KEY => 21,
        _ => return None,
    })
}

/// `pm2_env.env` as read: the entries PM2 wrote, less those equal to the daemon's own
/// env (kept as indices into it, see [`InheritedEnv`]), with an index of the rest
/// sorted by key (unique keys: the last one written wins). Cheaper to build than a
/// tree; searched by bisection; turned into the maps of [`LiveProcess`] by a bulk build.
#[derive(Debug, Default)]
struct SortedEnv {
    /// The entries not recorded in `from_daemon`.
    entries: Vec<(String, Value)>,
    sorted: Vec<usize>,
    /// The daemon's env, when the list was read with it.
    daemon: Option<Arc<DaemonEnv>>,
    /// The daemon's entries this env has, with the daemon's value.
    from_daemon: DaemonSet,
    /// Every key in the order PM2 wrote it, for [`SortedEnv::copy_of`].
    order: Vec<EnvRef>,
    /// Where in `order` the next top-level copy is expected.
    cursor: usize,
}

/// One key of an env, in [`SortedEnv::order`].
#[derive(Debug, Clone, Copy)]
enum EnvRef {
    Own(usize),
    Daemon(usize),
}

impl SortedEnv {
    fn from_entries(entries: Vec<(String, Value)>) -> Self {
        let order = (0..entries.len()).map(EnvRef::Own).collect();
        let mut env = SortedEnv { entries, order, ..SortedEnv::default() };
        env.sort();
        env
    }

    fn sort(&mut self) {
        let entries = &self.entries;
        let mut sorted: Vec<usize> = (0..entries.len()).rev().collect();
        // Stable sort of the reversed positions, then dedup: the last duplicate survives.
        sorted.sort_by(|&a, &b| entries[a].0.cmp(&entries[b].0));
        sorted.dedup_by(|later, earlier| entries[*later].0 == entries[*earlier].0);
        self.sorted = sorted;
    }

    /// This env's value of `key`.
    fn get(&self, key: &str) -> Option<&Value> {
        if let Ok(at) = self.sorted.binary_search_by(|&i| self.entries[i].0.as_str().cmp(key)) {
            return Some(&self.entries[self.sorted[at]].1);
        }
        let daemon = self.daemon.as_ref().filter(|_| !self.from_daemon.is_empty())?;
        daemon.find(key).filter(|&i| self.from_daemon.contains(i)).map(|i| &daemon.entries[i].1)
    }

    fn key_of(&self, at: EnvRef) -> Option<(&str, &Value)> {
        match at {
            EnvRef::Own(i) => self.entries.get(i).map(|(k, v)| (k.as_str(), v)),
            EnvRef::Daemon(i) => self.daemon.as_ref()?.entries.get(i).map(|(k, v)| (k.as_str(), v)),
        }
    }

    /// The env value a top-level `pm2_env` key copies, if it is one. PM2 copies env
    /// to the top level in env's own order, so the entry after the last copy is tried
    /// first (one compare instead of a bisection: this lookup ran for every key of
    /// every process and showed in profiles).
    fn copy_of(&mut self, key: &str) -> Option<&Value> {
        let unique = self.sorted.len() == self.entries.len();
        match self.order.get(self.cursor).copied().and_then(|at| self.key_of(at).map(|(k, _)| (at, k == key))) {
            Some((at, true)) if unique => {
                self.cursor += 1;
                self.key_of(at).map(|(_, v)| v)
            }
            _ => self.get(key),
        }
    }

    /// This env with more entries (later, so they win over equal keys).
    fn with(mut self, more: Vec<(String, Value)>) -> Self {
        for (key, value) in more {
            if let Some(i) = self.daemon.as_ref().and_then(|d| d.find(&key)) {
                self.from_daemon.remove(i);
            }
            self.order.push(EnvRef::Own(self.entries.len()));
            self.entries.push((key, value));
        }
        self.sort();
        self
    }

    /// The entries not taken from the daemon, in key order.
    fn into_sorted(self) -> (impl Iterator<Item = (String, Value)>, Option<Arc<DaemonEnv>>, DaemonSet) {
        let mut slots: Vec<Option<(String, Value)>> = self.entries.into_iter().map(Some).collect();
        let own = self.sorted.into_iter().filter_map(move |i| slots.get_mut(i).and_then(Option::take));
        (own, self.daemon, self.from_daemon)
    }
}

impl<'de> FromObject<'de> for SortedEnv {
    fn from_map<A: MapAccess<'de>>(mut map: A, ctx: Ctx<'_>) -> Result<Self, A::Error> {
        let mut env = SortedEnv { daemon: ctx.daemon.cloned(), ..SortedEnv::default() };
        let capacity = map.size_hint().unwrap_or(48);
        env.order.reserve(capacity);
        let Some(daemon) = ctx.daemon else {
            env.entries.reserve(capacity);
            while let Some(key) = map.next_key::<String>()? {
                env.order.push(EnvRef::Own(env.entries.len()));
                env.entries.push((key, map.next_value()?));
            }
            env.sort();
            return Ok(env);
        };
        env.from_daemon = DaemonSet::with_len(daemon.entries.len());
        // Apps inherit the daemon's env in its own order: try the entry after the last
        // one found before bisecting.
        let mut next = 0;
        let mut duplicates = false;
        while let Some(key) = map.next_key::<KeyName<'de>>()? {
            let found = daemon.locate(key.as_str(), &mut next);
            let value = match found {
                // Only an identical value is recorded as the daemon's; one that is the same
                // only as the process sees it (`3000` for `"3000"`) is kept as written,
                // and `split_sorted` decides.
                Some(i) => map.next_value_seed(UnlessEqual(&daemon.entries[i].1))?,
                None => Some(map.next_value()?),
            };
            match (found, value) {
                (Some(i), None) => {
                    duplicates |= env.from_daemon.contains(i) || env.entries.iter().any(|(k, _)| k == key.as_str());
                    env.from_daemon.insert(i);
                    env.order.push(EnvRef::Daemon(i));
                }
                (found, Some(value)) => {
                    if let Some(i) = found {
                        duplicates |= env.from_daemon.contains(i);
                        env.from_daemon.remove(i);
                    }
                    env.order.push(EnvRef::Own(env.entries.len()));
                    env.entries.push((key.into_string(), value));
                }
                (None, None) => {}
            }
        }
        if duplicates {
            // A key written twice (JSON.stringify never does; a hand-made list may):
            // the last one wins, as in a JSON object.
            let mut last: BTreeMap<String, EnvRef> = BTreeMap::new();
            for &at in &env.order {
                if let Some((key, _)) = env.key_of(at) {
                    last.insert(key.to_string(), at);
                }
            }
            let mut entries = Vec::new();
            let mut from_daemon = DaemonSet::with_len(daemon.entries.len());
            for at in last.into_values() {
                match at {
                    EnvRef::Own(i) => entries.push(std::mem::take(&mut env.entries[i])),
                    EnvRef::Daemon(i) => from_daemon.insert(i),
                }
            }
            let mut rebuilt = SortedEnv::from_entries(entries);
            rebuilt.daemon = env.daemon;
            rebuilt.from_daemon = from_daemon;
            // No order to follow any more: copies are looked up.
            rebuilt.order.clear();
            return Ok(rebuilt);
        }
        env.sort();
        Ok(env)
    }
}

/// The daemon's own env (`getReport().env`), shared by every process of one read.
#[derive(Debug, PartialEq)]
struct DaemonEnv {
    /// In the daemon's order.
    entries: Vec<(String, Value)>,
    /// Positions in `entries`, by key.
    sorted: Vec<usize>,
    /// Two bits per key (see [`key_bits`]): a key with either bit clear is not here.
    /// Most lookups are of PM2's own fields (`restart_delay`, ...) in every process,
    /// which are not env; this answers them without a bisection.
    bloom: [u64; 8],
}

/// Two bit positions in a 512-bit filter, from an FNV-1a hash of the key.
fn key_bits(key: &str) -> [usize; 2] {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    [(hash % 512) as usize, ((hash >> 32) % 512) as usize]
}

impl DaemonEnv {
    /// The daemon's env from `getReport().env`.
    pub fn new(env: &Map<String, Value>) -> Self {
        let entries: Vec<(String, Value)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut sorted: Vec<usize> = (0..entries.len()).collect();
        sorted.sort_by(|&a, &b| entries[a].0.cmp(&entries[b].0));
        let mut bloom = [0u64; 8];
        for (key, _) in &entries {
            for bit in key_bits(key) {
                bloom[bit / 64] |= 1 << (bit % 64);
            }
        }
        DaemonEnv { entries, sorted, bloom }
    }

    fn find(&self, key: &str) -> Option<usize> {
        if key_bits(key).iter().any(|&bit| self.bloom[bit / 64] & (1 << (bit % 64)) == 0) {
            return None;
        }
        self.sorted.binary_search_by(|&i| self.entries[i].0.as_str().cmp(key)).ok().map(|at| self.sorted[at])
    }

    /// [`DaemonEnv::find`], trying `*next` first; `*next` becomes the position after it.
    fn locate(&self, key: &str, next: &mut usize) -> Option<usize> {
        let found = match self.entries.get(*next) {
            Some((k, _)) if k == key => Some(*next),
            _ => self.find(key),
        }?;
        *next = found + 1;
        Some(found)
    }

    /// The entries in key order.
    fn by_key(&self) -> impl Iterator<Item = (usize, &str, &Value)> {
        self.sorted.iter().map(|&i| (i, self.entries[i].0.as_str(), &self.entries[i].1))
    }
}

/// A set of positions in a [`DaemonEnv`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DaemonSet(Vec<u64>);

impl DaemonSet {
    fn with_len(len: usize) -> Self {
        DaemonSet(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    fn remove(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word &= !(1 << (i % 64));
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }
}

/// Env a process inherited: the daemon's own entries it has with the daemon's value
/// (shared with the daemon's env, not copied: they are most of every process's env,
/// and copying them was the largest part of reading a list), and the keys PM2 adds.
#[derive(Debug, Clone, Default)]
pub struct InheritedEnv {
    own: BTreeMap<String, Value>,
    daemon: Option<Arc<DaemonEnv>>,
    from_daemon: DaemonSet,
}

impl InheritedEnv {
    /// The value of `key`, if inherited.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.own.get(key).or_else(|| {
            let daemon = self.daemon.as_ref()?;
            daemon.find(key).filter(|&i| self.from_daemon.contains(i)).map(|i| &daemon.entries[i].1)
        })
    }

    /// Whether `key` is inherited.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut own = self.own.iter().map(|(k, v)| (k.as_str(), v)).peekable();
        let mut daemon = self
            .daemon
            .iter()
            .flat_map(|d| d.by_key())
            .filter(|(i, _, _)| self.from_daemon.contains(*i))
            .map(|(_, k, v)| (k, v))
            .peekable();
        std::iter::from_fn(move || match (own.peek(), daemon.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => daemon.next(),
            (Some(_), _) => own.next(),
            (None, _) => daemon.next(),
        })
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.from_daemon.is_empty()
    }

    /// Sets an entry (for tests and hand-built states).
    pub fn insert(&mut self, key: String, value: Value) {
        if let Some(i) = self.daemon.as_ref().and_then(|d| d.find(&key)) {
            self.from_daemon.remove(i);
        }
        self.own.insert(key, value);
    }
}

impl PartialEq for InheritedEnv {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Serialize for InheritedEnv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl FromIterator<(String, Value)> for InheritedEnv {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(entries: I) -> Self {
        InheritedEnv { own: entries.into_iter().collect(), ..InheritedEnv::default() }
    }
}

/// Reads a value unless it equals the given one (strings are compared without
/// allocating); `None` when equal.
struct UnlessEqual<'a>(&'a Value);

impl<'de> DeserializeSeed<'de> for UnlessEqual<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        let Value::String(expected) = self.0 else {
            let value = Value::deserialize(d)?;
            return Ok((value != *self.0).then_some(value));
        };
        struct StrVisitor<'a>(&'a str);
        impl<'de> Visitor<'de> for StrVisitor<'_> {
            type Value = Option<Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<Value>, E> {
                Ok((v != self.0).then(|| Value::String(v.to_string())))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Option<Value>, E> {
                Ok(Some(Value::Bool(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<Value>, E> {
                Ok(Some(Value::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<Value>, E> {
                Ok(Some(Value::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Option<Value>, E> {
                Ok(Some(Value::from(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Option<Value>, E> {
                Ok(Some(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
                let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Some(value))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Value>, A::Error> {
                let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Some(value))
            }
        }
        d.deserialize_any(StrVisitor(expected))
    }
}

/// What a reader needs besides the input: how much to read, and the daemon's env
/// (entries equal to it are recorded, not copied; see [`InheritedEnv`]).
#[derive(Debug, Clone, Copy)]
struct Ctx<'c> {
    detail: Detail,
    daemon: Option<&'c Arc<DaemonEnv>>,
}

impl Ctx<'_> {
    fn plain(detail: Detail) -> Self {
        Ctx { detail, daemon: None }
    }
}

/// A type read from a JSON object.
trait FromObject<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A, ctx: Ctx<'_>) -> Result<Self, A::Error>;
}

/// `Some(T)` from an object; `None` from any other JSON value (which is consumed).
struct IfObject<T>(Option<T>);

/// Reads an [`IfObject`] in the given [`Ctx`].
struct ObjectSeed<'c, T>(Ctx<'c>, std::marker::PhantomData<T>);

impl<'c, T> ObjectSeed<'c, T> {
    fn new(ctx: Ctx<'c>) -> Self {
        ObjectSeed(ctx, std::marker::PhantomData)
    }
}

impl<'de, T: FromObject<'de>> DeserializeSeed<'de> for ObjectSeed<'_, T> {
    type Value = IfObject<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<IfObject<T>, D::Error> {
        struct ObjectVisitor<'c, T>(Ctx<'c>, std::marker::PhantomData<T>);
        impl<'de, T: FromObject<'de>> Visitor<'de> for ObjectVisitor<'_, T> {
            type Value = IfObject<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IfObject<T>, A::Error> {
                T::from_map(map, self.0).map(|t| IfObject(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IfObject<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IfObject(None))
            }
            lenient_scalars!(IfObject(None));
        }
        d.deserialize_any(ObjectVisitor(self.0, self.1))
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum KeyName<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyName<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyName::Borrowed(s) => s,
            KeyName::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            KeyName::Borrowed(s) => s.to_string(),
            KeyName::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<KeyName<'de>, E> {
                Ok(KeyName::Borrowed(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyName<'de>, E> {
                Ok(KeyName::Owned(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<KeyName<'de>, E> {
                Ok(KeyName::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Normalizes a list read by [`RawList`].
pub fn normalize_raw(list: RawList, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ModelError> {
    let Some(items) = list.0 else { return Err(ModelError::NotAList) };
    let daemon_env = daemon_env.map(|env| Arc::new(DaemonEnv::new(env)));
    let mut out = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| normalize_one(index, item, daemon_env.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|p| p.pm_id);
    Ok(out)
}

/// Reads and normalizes the entries of a process list given as JSON text, on two
/// threads when the list is long.
///
/// Why: reading and normalizing 100 entries in full is ~3.5 ms of a fresh `plan`, on
/// its critical path, while the other core idles (the daemon has answered). The list
/// is first split into its entries' raw text (a validating scan, no allocation per
/// value), and each half is read on its own thread.
pub fn normalize_text(list: &str, detail: Detail, daemon_env: Option<&Map<String, Value>>) -> Result<Vec<LiveProcess>, ListError> {
    let entries: Vec<&RawValue> = match serde_json::from_str::<Vec<&RawValue>>(list) {
        Ok(entries) => entries,
        Err(err) if err.is_data() => return Err(ListError::Model(ModelError::NotAList)),
        Err(err) => return Err(ListError::Json(err)),
    };
    let daemon_env = daemon_env.map(|env| Arc::new(DaemonEnv::new(env)));
    let denv = daemon_env.as_ref();
    let ctx = Ctx { detail, daemon: denv };
    let read = |from: usize, part: &[&RawValue]| -> Result<Vec<LiveProcess>, ListError> {
        part.iter()
            .enumerate()
            .map(|(i, raw)| {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let IfObject(entry) = ObjectSeed::<RawEntry>::new(ctx).deserialize(&mut de).map_err(ListError::Json)?;
                normalize_one(from + i, entry, denv).map_err(ListError::Model)
            })
            .collect()
    };
    let half = entries.len() / 2;
    let mut out = if entries.len() >= PARALLEL_FROM {
        let (first, second) = entries.split_at(half);
        std::thread::scope(|scope| {
            let other = std::thread::Builder::new().spawn_scoped(scope, || read(half, second));
            let mine = read(0, first);
            match other {
                Ok(handle) => {
                    let theirs = handle.join().unwrap_or_else(|_| read(half, second));
                    mine.and_then(|mut a| theirs.map(|b| { a.extend(b); a }))
                }
                // No thread to be had: read the second half here too.
                Err(_) => mine.and_then(|mut a| read(half, second).map(|b| { a.extend(b); a })),
            }
        })?
    } else {
        read(0, &entries)?
    };
    out.sort_by_key(|p| p.pm_id);
    Ok(out)
}

/// Below this many entries a list is read on one thread (a thread costs more than it saves).
const PARALLEL_FROM: usize = 32;

/// Why a list given as text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Model(ModelError),
    #[error("the list is not valid JSON: {0}")]
    Json(serde_json::Error),
}

fn normalize_one(index: usize, item: Option<RawEntry>, daemon_env: Option<&Arc<DaemonEnv>>) -> Result<LiveProcess, ModelError> {
    let Some(item) = item else { return Err(ModelError::NoEnv { index }) };
    let Some(mut pm2_env) = item.pm2_env else { return Err(ModelError::NoEnv { index }) };
    let pm_id = item.pm_id.as_ref().or_else(|| pm2_env.get("pm_id")).and_then(as_u64).ok_or(ModelError::NoId { index })?;
    let name = item
        .name
        .as_ref()
        .or_else(|| pm2_env.get("name"))
        .and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_number().map(ToString::to_string)))
        .ok_or(ModelError::NoName { index })?;
    let pid = item.pid.as_ref().and_then(as_u64).and_then(|p| u32::try_from(p).ok()).filter(|&p| p != 0);
    let monit = item.monit.as_ref().and_then(|m| {
        Some(Monit { memory: m.get("memory").and_then(as_u64)?, cpu: m.get("cpu").and_then(Value::as_f64).unwrap_or(0.0) })
    });
    let env = std::mem::take(&mut pm2_env.env);
    let mut take = |key: &str| pm2_env.take(key);
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
    let revision = string(take(REVISION_KEY));
    let unchecked = pm2_env.rest_before_env;
    let (leftover_env, options): (Vec<_>, Vec<_>) = std::mem::take(&mut pm2_env.rest)
        .into_iter()
        .enumerate()
        // executeApp copies every scalar env entry to the top level of pm2_env: those
        // copies are env, not options. Those read after `env` were dropped while reading.
        .filter(|(i, (k, v))| *i >= unchecked || env.get(k.as_str()) != Some(v))
        .map(|(_, kv)| kv)
        // `is_leftover_env` first: it rejects PM2's own fields (most entries) without
        // the bisection of env.
        .partition(|(k, v)| is_leftover_env(k, v) && env.get(k.as_str()).is_none());
    let options = options.into_iter().collect();
    let env = if leftover_env.is_empty() { env } else { env.with(leftover_env) };
    let (env_set, env_inherited) = split_sorted(&name, env, daemon_env);
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
        revision,
        monit,
        options,
    })
}

/// Every field PM2 7.0.4 keeps at the top of `pm2_env` itself: the app options of
/// `lib/API/schema.json`, and the runtime fields `God.executeApp` and the action
/// methods add (pm2-internals.md §5).
const PM2_FIELDS: &[&str] = &[
    // lib/API/schema.json and the runtime fields; sorted, for a binary search (this
    // runs for every option of every process).
    "_km_monitored", "_pm2_version", "_tree_pids", "append_env_to_name", "args", "automation", "autorestart",
    "autostart", "axm_actions", "axm_dynamic", "axm_monitor", "axm_options", "created_at", "cron_restart",
    "current_conf", "cwd", "deep_monitoring", "disable_logs", "disable_source_map_support", "disable_trace", "env",
    "error_file", "event_loop_inspector", "exec_interpreter", "exec_mode", "execute_command", "exit_code",
    "exp_backoff_restart_delay", "filter_env", "force", "gid", "ignore_watch", "increment_var", "install_url",
    "instance_var", "instances", "io", "kill_retry_time", "kill_timeout", "km_link", "listen_timeout",
    "log_date_format", "log_file", "log_type", "max_memory_restart", "max_restarts", "merge_logs", "min_uptime",
    "name", "name_prefix", "namespace", "node_args", "node_version", "out_file", "pid_file", "pm_cwd",
    "pm_err_log_path", "pm_exec_path", "pm_id", "pm_log_path", "pm_out_log_path", "pm_pid_path", "pm_uptime", "pmx",
    "port", "post_update", "prev_restart_delay", "restart_delay", "restart_task", "restart_time", "script",
    "shutdown_with_message", "source_map_support", "status", "stop_exit_codes", "time", "trace", "treekill", "uid",
    "unique_id", "unstable_restarts", "updateEnv", "username", "v8", "version", "versioning", "vizion",
    "vizion_running", "wait_ready", "watch", "watch_delay", "watch_options", "windowsHide", "write",
    "x_reconcile_hash", "x_reconcile_revision",
];

/// Whether a top-level `pm2_env` entry that `env` does not list is an env var the
/// process still has. The fork child's environment is every scalar field of `pm2_env`
/// (`God/ForkMode.js`), and a restart merges a new env in but never deletes the old
/// top-level copy: after `pm2 restart eco.config.js` without `DROP`, `env` no longer
/// has it while the process still runs with `DROP` (observed, and re-checked by
/// `live_write::restart_applies_update_attributes_in_place_and_never_replace_attributes`).
/// Such an entry is neither one of PM2's own fields nor an `env_<name>` block.
fn is_leftover_env(key: &str, value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
        && !key.starts_with("env_")
        && PM2_FIELDS.binary_search(&key).is_err()
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
    let env = SortedEnv::from_entries(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let (set, inherited) = split_sorted(name, env, daemon_env.map(|env| Arc::new(DaemonEnv::new(env))).as_ref());
    (set, inherited.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn split_sorted(name: &str, env: SortedEnv, daemon_env: Option<&Arc<DaemonEnv>>) -> (BTreeMap<String, Value>, InheritedEnv) {
    let mut set = Vec::new();
    let mut inherited = Vec::new();
    let (own, read_with, from_daemon) = env.into_sorted();
    // Both lists are sorted: walk the daemon's env alongside (a merge, not a search).
    // (Entries equal to the daemon's were set apart while reading, when it was known
    // then; these are the rest, and any read without it.)
    let mut daemon = daemon_env.map(|d| d.by_key().peekable());
    for (key, value) in own {
        let pm2_added = PM2_ADDED_ENV.contains(&key.as_str())
            || key == SPEC_HASH_ENV
            || (key == name && is_module_marker(&value))
            // An object is never an env var the process sees (PM2 stringifies the
            // app's own; executeApp copies only scalars).
            || value.is_object();
        let from_daemon = match daemon.as_mut() {
            Some(daemon) => {
                while daemon.next_if(|(_, k, _)| *k < key.as_str()).is_some() {}
                daemon.peek().is_some_and(|(_, k, d)| *k == key.as_str() && same_env_value(d, &value))
            }
            None => is_shell_variable(&key),
        };
        if pm2_added || from_daemon {
            inherited.push((key, value));
        } else {
            set.push((key, value));
        }
    }
    // Both are sorted already: collecting is a bulk build.
    let mut inherited: InheritedEnv = inherited.into_iter().collect();
    if !from_daemon.is_empty() {
        inherited.daemon = read_with;
        inherited.from_daemon = from_daemon;
    }
    (set.into_iter().collect(), inherited)
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
        // Without their top-level copies, which the process would still see.
        for copy in ["PORT", "PATH"] {
            e["pm2_env"].as_object_mut().unwrap().remove(copy);
        }
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
    fn an_env_var_left_at_the_top_of_pm2_env_is_still_the_processs() {
        // After an in-place restart without DROP: env lost it, its top-level copy stays.
        let list = json!([{"name": "a", "pm_id": 1, "pm2_env": {"env": {"KEEP": "1"}, "KEEP": "1", "DROP": "x",
            "kill_timeout": 3000, "km_link": false, "env_production": {"A": "1"}, "axm_options": {}, "pm_cwd": "/srv"}}]);
        let p = &normalize_list(&list, None).unwrap()[0];
        assert_eq!(p.env_set.get("DROP"), Some(&json!("x")));
        assert!(!p.options.contains_key("DROP"));
        for key in ["kill_timeout", "km_link", "env_production", "axm_options"] {
            assert!(p.options.contains_key(key), "{key} is PM2's own field");
        }
    }

    #[test]
    fn a_summary_read_skips_env_and_options_only() {
        let text = json!([entry()]).to_string();
        let full = normalize_raw(serde_json::from_str(&text).unwrap(), None).unwrap();
        let mut de = serde_json::Deserializer::from_str(&text);
        let summary = normalize_raw(ListSeed(Detail::Summary).deserialize(&mut de).unwrap(), None).unwrap();
        let (f, s) = (&full[0], &summary[0]);
        assert!(s.env_set.is_empty() && s.env_inherited.is_empty() && s.options.is_empty());
        assert!(!f.env_set.is_empty() && !f.options.is_empty());
        let strip = |p: &LiveProcess| LiveProcess { env_set: BTreeMap::new(), env_inherited: InheritedEnv::default(), options: BTreeMap::new(), ..p.clone() };
        assert_eq!(strip(f), strip(s), "every other field is read alike");
    }

    /// Entries equal to the daemon's env are recorded while reading the text, not
    /// copied; the result is what the split of a whole `Value` gives.
    #[test]
    fn env_equal_to_the_daemons_is_inherited_by_reference_and_reads_alike() {
        let denv = json!({"PATH": "/usr/bin", "HOME": "/root", "PORT": "3000", "LANG": "C", "DEBUG": "0"});
        let mut e = entry();
        // In the daemon's order, as PM2 writes an app's env; PORT as a number, DEBUG changed,
        // SHELL not the daemon's, LANG as a leftover top-level copy only.
        e["pm2_env"]["env"] = json!({"PATH": "/usr/bin", "HOME": "/root", "PORT": 3000, "DEBUG": "1", "SHELL": "/bin/sh",
            "PM2_HOME": "/h", "api": {}});
        e["pm2_env"]["HOME"] = json!("/root");
        e["pm2_env"]["LANG"] = json!("C");
        let list = json!([e]);
        let from_text = normalize_text(&list.to_string(), Detail::Full, denv.as_object()).unwrap();
        let from_value = normalize_list(&list, denv.as_object()).unwrap();
        assert_eq!(from_text, from_value);
        let p = &from_text[0];
        assert_eq!(p.env_set.keys().collect::<Vec<_>>(), ["DEBUG", "SHELL"]);
        assert_eq!(p.env_inherited.keys().collect::<Vec<_>>(), ["HOME", "LANG", "PATH", "PM2_HOME", "PORT", "api"]);
        assert_eq!(p.env_inherited.get("PORT"), Some(&json!(3000)), "as written");
        assert_eq!(p.env_inherited.get("HOME"), Some(&json!("/root")));
        assert!(p.env_inherited.get("DEBUG").is_none() && !p.env_inherited.is_empty());
        assert!(!p.options.contains_key("HOME"), "a top-level copy of an inherited var is not an option");
        assert_eq!(serde_json::to_value(&p.env_inherited).unwrap()["PATH"], "/usr/bin");
        // Inserting over a daemon entry replaces it.
        let mut inherited = p.env_inherited.clone();
        inherited.insert("PATH".into(), json!("/bin"));
        assert_eq!(inherited.get("PATH"), Some(&json!("/bin")));
        assert_eq!(inherited.len(), p.env_inherited.len());
    }

    /// JSON.stringify never writes a key twice, but a hand-made list may: the last wins.
    #[test]
    fn a_key_written_twice_in_env_keeps_the_last_value_with_a_daemon_env() {
        let denv = json!({"A": "1", "B": "2"});
        let text = r#"[{"name": "x", "pm_id": 0, "pm2_env": {"env": {"A": "1", "B": "9", "A": "5", "B": "2"}}}]"#;
        let p = &normalize_text(text, Detail::Full, denv.as_object()).unwrap()[0];
        assert_eq!(p.env_set.get("A"), Some(&json!("5")));
        assert_eq!(p.env_inherited.get("B"), Some(&json!("2")));
        assert!(p.env_inherited.get("A").is_none() && !p.env_set.contains_key("B"));
    }

    #[test]
    fn a_long_list_read_on_two_threads_is_the_list_read_on_one() {
        let entries: Vec<Value> = (0..PARALLEL_FROM as u64 * 2 + 1)
            .map(|i| {
                let mut e = entry();
                e["pm_id"] = json!(i);
                e["pm2_env"]["pm_id"] = json!(i);
                e["name"] = json!(format!("app-{i}"));
                e
            })
            .collect();
        let text = Value::Array(entries.clone()).to_string();
        let threaded = normalize_text(&text, Detail::Full, None).unwrap();
        assert_eq!(threaded, normalize_list(&Value::Array(entries), None).unwrap());
        assert_eq!(threaded.iter().map(|p| p.pm_id).collect::<Vec<_>>(), (0..PARALLEL_FROM as u64 * 2 + 1).collect::<Vec<_>>());
        // Errors keep the index of the entry, in either half.
        let mut bad: Vec<Value> = (0..40).map(|i| json!({"pm_id": i, "name": "x", "pm2_env": {}})).collect();
        bad[37] = json!({"name": "y"});
        assert!(matches!(normalize_text(&Value::Array(bad).to_string(), Detail::Full, None), Err(ListError::Model(ModelError::NoEnv { index: 37 }))));
        assert!(matches!(normalize_text("{}", Detail::Full, None), Err(ListError::Model(ModelError::NotAList))));
        assert!(matches!(normalize_text("[{", Detail::Full, None), Err(ListError::Json(_))));
    }

    #[test]
    fn pm2_fields_are_sorted_for_bisection() {
        assert!(PM2_FIELDS.windows(2).all(|w| w[0] < w[1]));
        assert!(PM2_FIELDS.contains(&SPEC_HASH_KEY));
    }

    #[test]
    fn lifted_slots_match_the_list() {
        for (i, key) in LIFTED.iter().enumerate() {
            assert_eq!(lifted_slot(key), Some(i), "{key}");
        }
        assert_eq!(lifted_slot("PATH"), None);
    }

    #[test]
    fn env_copies_that_differ_are_options_and_duplicates_keep_the_last() {
        let list = br#"[{"name": "a", "pm_id": 1, "pm2_env": {"env": {"A": "1", "B": "x", "B": "y", "N": 5},
            "A": "1", "B": "other", "N": 5, "kill_timeout": 3000}}]"#;
        let raw: RawList = serde_json::from_slice(list).unwrap();
        let p = &normalize_raw(raw, None).unwrap()[0];
        assert_eq!(p.env_set.get("B"), Some(&json!("y")));
        assert_eq!(p.options.get("B"), Some(&json!("other")), "a top-level value unlike env's is an option");
        assert!(!p.options.contains_key("A") && !p.options.contains_key("N"), "copies of env are not options");
        assert_eq!(p.option_u64("kill_timeout"), Some(3000));
    }

    #[test]
    fn bytes_and_values_normalize_alike() {
        let text = json!([entry()]).to_string();
        let from_bytes = normalize_raw(serde_json::from_str(&text).unwrap(), None).unwrap();
        assert_eq!(from_bytes, normalize_list(&json!([entry()]), None).unwrap());
        let odd: RawList = serde_json::from_str(r#"[1, {"pm2_env": "x"}]"#).unwrap();
        assert_eq!(normalize_raw(odd, None), Err(ModelError::NoEnv { index: 0 }));
        let not_a_list: RawList = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(normalize_raw(not_a_list, None), Err(ModelError::NotAList));
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert_eq!(normalize_list(&json!({}), None), Err(ModelError::NotAList));
        assert_eq!(normalize_list(&json!([{"name": "x"}]), None), Err(ModelError::NoEnv { index: 0 }));
        assert_eq!(normalize_list(&json!([{"pm2_env": {}}]), None), Err(ModelError::NoId { index: 0 }));
    }
}
