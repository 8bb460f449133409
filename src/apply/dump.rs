//! PM2's dump: reboot safety (DESIGN.md, Apply — promise 10).
//!
//! At boot, `pm2 startup` runs `pm2 resurrect`, which `prepare`s every entry of
//! `$PM2_HOME/dump.pm2` (or of `dump.pm2.bak` when `dump.pm2` cannot be read). After
//! a successful apply, [`save`] rewrites the entries of the owned apps from the
//! daemon's live list, exactly as `pm2 save` writes them (PM2 7.0.4,
//! `lib/API/Startup.js`, `CLI.prototype.dump`): for each process of `getMonitorData`,
//! its `pm2_env` without `instances`, `pm_id` and `prev_restart_delay`, modules
//! (`pmx_module`) left out, in `pm_id` order, as `JSON.stringify(list, '', 2)`. Every
//! other entry (another namespace's app) stays as the operator last saved it: one
//! started since the last `pm2 save` is not added, one saved is kept.
//!
//! Where `pm2 save` copies `dump.pm2` to `dump.pm2.bak` and then rewrites `dump.pm2`
//! in place (a crash in between leaves it truncated), both files are replaced here
//! by a temporary file in the same directory, synced, renamed over the old one, and
//! the directory synced. A `dump.pm2` that is not a JSON list of apps is never
//! overwritten: the save fails with what to do.
//!
//! [`check`] answers the opposite question for `status` and `watch`: which owned
//! apps would a reboot bring back differently from how they run now (`unsaved`)?
//! Entries are compared as `pm2 resurrect` would restore them: fields PM2 sets anew
//! on every start (`pm_uptime`, `restart_time`, `unique_id`, `axm_*`, ...) are left
//! out, and so are the `-<pm_id>` suffixes PM2 rewrites in pid and log paths.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, Metadata};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::live::{LiveError, Pm2Client};

/// One entry of the dump: a process's `pm2_env`, as `pm2 save` writes it.
pub type Entry = Map<String, Value>;

/// The dump's file name in `PM2_HOME` (PM2's `paths.js`, `DUMP_FILE_PATH`).
pub const DUMP_FILE: &str = "dump.pm2";
/// The previous dump (`DUMP_BACKUP_FILE_PATH`), which `pm2 resurrect` falls back to.
pub const BACKUP_FILE: &str = "dump.pm2.bak";

/// Fields `pm2 save` deletes from each `pm2_env`.
const STRIPPED_BY_SAVE: [&str; 3] = ["instances", "pm_id", "prev_restart_delay"];

/// Fields the daemon sets anew whenever it starts a process (`God.prepare`,
/// `executeApp`), or that only report on it: they say nothing about what a
/// resurrect brings back, so they do not make an app `unsaved`. `status` is
/// compared as "stopped or not" (a stopped entry is resurrected stopped).
const VOLATILE: [&str; 21] = [
    "instances",
    "pm_id",
    "prev_restart_delay",
    "status",
    "pm_uptime",
    "created_at",
    "restart_time",
    "unstable_restarts",
    "exit_code",
    "unique_id",
    "axm_actions",
    "axm_monitor",
    "axm_options",
    "axm_dynamic",
    "vizion_running",
    "versioning",
    "version",
    "node_version",
    "_pm2_version",
    "km_link",
    "_tree_pids",
];

/// Which apps a save writes and a check compares: the owned namespaces, or (for
/// `apply` restricted to some apps) only those apps in them.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub namespaces: &'a [String],
    pub only: Option<&'a BTreeSet<String>>,
}

impl Scope<'_> {
    /// Whether the app of this entry is in scope.
    pub fn contains(&self, entry: &Entry) -> bool {
        self.holds(namespace(entry), name(entry))
    }

    fn holds(&self, namespace: &str, name: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace) && self.only.is_none_or(|o| o.contains(name))
    }
}

/// An entry's namespace (`"default"` when absent, as PM2 treats it).
pub fn namespace(entry: &Entry) -> &str {
    entry.get("namespace").and_then(Value::as_str).unwrap_or("default")
}

/// An entry's app name.
pub fn name(entry: &Entry) -> &str {
    entry.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Why the dump could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// `dump.pm2` is not JSON.
    #[error(
        "PM2's dump {path}:{line}:{column} cannot be read ({message}), so it was not overwritten\n  = help: {help}",
        path = path.display(), help = unreadable_help(path)
    )]
    Unparsable { path: PathBuf, line: usize, column: usize, message: String },
    /// `dump.pm2` is JSON, but not a list of apps.
    #[error("PM2's dump {path} is not a list of apps ({what}), so it was not overwritten\n  = help: {help}", path = path.display(), help = unreadable_help(path))]
    NotAList { path: PathBuf, what: String },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}\n  = help: the dump was left as it was; check that this user may write in the PM2 home (its owner runs the daemon)", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's list could not be read to save it.
    #[error("cannot read the daemon's process list to save it: {0}")]
    Live(#[from] LiveError),
}

fn unreadable_help(path: &Path) -> String {
    let shown = path.display();
    format!(
        "at boot, `pm2 resurrect` skips an unreadable dump and restores {BACKUP_FILE} instead. Look at {shown}; \
         to discard it, move it aside (`mv {shown} {shown}.broken`) and run `reconcile apply` again: it then writes a \
         new dump from the owned apps and the other namespaces' entries of {BACKUP_FILE}, if any"
    )
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> DumpError + 'p {
    move |source| DumpError::Io { action, path: path.to_path_buf(), source }
}

/// The entry `pm2 save` writes for one item of `getMonitorData` (`{pm_id, name,
/// pm2_env, ...}`), with its `pm_id`; `None` for a PM2 module or an item without
/// `pm2_env`. Key order is kept (`pm2 save` writes `pm2_env` as the daemon has it).
pub fn live_entry(item: &Value) -> Option<(u64, Entry)> {
    let env = item.get("pm2_env")?.as_object()?;
    let pm_id = item.get("pm_id").and_then(Value::as_u64);
    saved_form(pm_id, env.clone())
}

/// A `pm2_env` made into its dump entry (`None` for a module), with its `pm_id`.
fn saved_form(pm_id: Option<u64>, mut entry: Entry) -> Option<(u64, Entry)> {
    if entry.get("pmx_module").is_some_and(truthy) {
        return None;
    }
    let pm_id = pm_id.or_else(|| entry.get("pm_id").and_then(Value::as_u64)).unwrap_or(u64::MAX);
    for key in STRIPPED_BY_SAVE {
        entry.shift_remove(key);
    }
    Some((pm_id, entry))
}

/// JavaScript truthiness, for `if (!pm2_env.pmx_module)`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Just enough of an entry to decide whether to read all of it.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

impl Head<'_> {
    fn in_scope(&self, scope: &Scope<'_>) -> bool {
        scope.holds(self.namespace.as_deref().unwrap_or("default"), self.name.as_deref().unwrap_or_default())
    }
}

/// The in-scope live entries of `getMonitorData`'s JSON text (as
/// [`crate::live::Fetched::list_text`] gives it), in `pm_id` order. Entries out of
/// scope are skipped without being read into values.
pub fn live_entries_from_text(text: &str, scope: &Scope<'_>) -> Result<Vec<(u64, Entry)>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(default)]
        pm_id: Option<u64>,
        #[serde(borrow, default)]
        pm2_env: Option<&'a RawValue>,
    }
    let items: Vec<Item<'_>> = serde_json::from_str(text)?;
    let mut out = Vec::new();
    for item in items {
        let Some(env) = item.pm2_env else { continue };
        let head: Head<'_> = serde_json::from_str(env.get())?;
        if !head.in_scope(scope) {
            continue;
        }
        out.extend(saved_form(item.pm_id, serde_json::from_str(env.get())?));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// The in-scope entries of a raw `getMonitorData` list, in `pm_id` order.
pub fn live_entries(items: &[Value], scope: &Scope<'_>) -> Vec<(u64, Entry)> {
    let mut out: Vec<(u64, Entry)> = items.iter().filter_map(live_entry).filter(|(_, e)| scope.contains(e)).collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// The dump as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// Neither `dump.pm2` nor a readable `dump.pm2.bak`: PM2 never saved here.
    Absent,
    /// The entries `pm2 resurrect` would restore, and the file they came from
    /// (`dump.pm2.bak` when `dump.pm2` is missing, as resurrect falls back).
    Found { path: PathBuf, entries: Vec<Entry> },
}

/// Reads the dump in `dir` (a PM2 home). With `keep`, only the entries it accepts
/// are read into values (the others are checked for shape and skipped).
pub fn read_saved(dir: &Path, keep: Option<&Scope<'_>>) -> Result<Saved, DumpError> {
    let dump = dir.join(DUMP_FILE);
    match std::fs::read(&dump) {
        Ok(bytes) => return parse_saved(&dump, &bytes, keep).map(|entries| Saved::Found { path: dump, entries }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("read", &dump)(e)),
    }
    let backup = dir.join(BACKUP_FILE);
    match std::fs::read(&backup) {
        Ok(bytes) => match parse_saved(&backup, &bytes, keep) {
            Ok(entries) => Ok(Saved::Found { path: backup, entries }),
            Err(e) => {
                tracing::warn!(error = %e, "{BACKUP_FILE} is unreadable and {DUMP_FILE} absent: taken as no dump");
                Ok(Saved::Absent)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::Absent),
        Err(e) => Err(io_error("read", &backup)(e)),
    }
}

/// Parses a dump: a JSON array of objects, each with a string `name`.
fn parse_saved(path: &Path, bytes: &[u8], keep: Option<&Scope<'_>>) -> Result<Vec<Entry>, DumpError> {
    let unparsable = |e: serde_json::Error| DumpError::Unparsable {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
    };
    let not_a_list = |what: String| DumpError::NotAList { path: path.to_path_buf(), what };
    let whole: &RawValue = serde_json::from_slice(bytes).map_err(unparsable)?;
    if !whole.get().starts_with('[') {
        return Err(not_a_list("the file holds no JSON array".into()));
    }
    let items: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(unparsable)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let head: Head<'_> = serde_json::from_str(item.get())
            .map_err(|_| not_a_list(format!("entry {} is not an app object", i + 1)))?;
        if head.name.is_none() {
            return Err(not_a_list(format!("entry {} has no name", i + 1)));
        }
        if keep.is_some_and(|scope| !head.in_scope(scope)) {
            continue;
        }
        let entry: Entry = serde_json::from_str(item.get()).map_err(unparsable)?;
        out.push(entry);
    }
    Ok(out)
}

/// The new dump: `saved` with its in-scope entries replaced by `live` (already in
/// scope, in `pm_id` order), placed where the first in-scope entry was (else at the
/// end). Returns the entries and how many out-of-scope entries were kept.
pub fn merge(saved: &[Entry], live: Vec<Entry>, scope: &Scope<'_>) -> (Vec<Entry>, usize) {
    let mut out = Vec::with_capacity(saved.len() + live.len());
    let mut live = Some(live);
    let mut kept = 0;
    for entry in saved {
        if scope.contains(entry) {
            if let Some(live) = live.take() {
                out.extend(live);
            }
        } else {
            out.push(entry.clone());
            kept += 1;
        }
    }
    out.extend(live.into_iter().flatten());
    (out, kept)
}

/// What a resurrect restores from an entry, for comparisons: the entry without
/// [`VOLATILE`] fields, borrowed (entries hold the whole env, twice: no copies).
#[derive(Debug, Clone, PartialEq)]
struct View<'e> {
    stopped: bool,
    fields: BTreeMap<&'e str, Field<'e>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field<'e> {
    Value(&'e Value),
    /// A pid or log path without PM2's `-<pm_id>` suffix.
    Path(&'e str),
    /// `env` without `unique_id` and `vizion_running`.
    Env(BTreeMap<&'e str, &'e Value>),
}

fn view(entry: &Entry) -> View<'_> {
    let stopped = entry.get("status").and_then(Value::as_str) == Some("stopped");
    // PM2 rewrites `-<pm_id>` in the pid path on every prepare, and in log paths
    // unless logs are merged (`executeApp`): a resurrect gives new pm_ids.
    let merged_logs = entry.get("merge_logs").is_some_and(truthy);
    let suffix = |key: &str| match key {
        "pm_pid_path" => Some(".pid"),
        "pm_log_path" | "pm_out_log_path" | "pm_err_log_path" if !merged_logs => Some(".log"),
        _ => None,
    };
    let fields = entry
        .iter()
        .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
        .map(|(k, v)| {
            let field = match (k.as_str(), v) {
                ("env", Value::Object(env)) => Field::Env(
                    env.iter().filter(|(k, _)| !matches!(k.as_str(), "unique_id" | "vizion_running")).map(|(k, v)| (k.as_str(), v)).collect(),
                ),
                (key, Value::String(path)) => match suffix(key) {
                    Some(ext) => Field::Path(without_id_suffix(path, ext)),
                    None => Field::Value(v),
                },
                _ => Field::Value(v),
            };
            (k.as_str(), field)
        })
        .collect();
    View { stopped, fields }
}

/// `x-3.pid` and `x.pid` → `x` (PM2's `/-[0-9]+\.pid$|\.pid$/`).
fn without_id_suffix<'a>(path: &'a str, ext: &str) -> &'a str {
    let Some(stem) = path.strip_suffix(ext) else { return path };
    let digits = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    match digits.strip_suffix('-') {
        Some(base) if digits.len() < stem.len() => base,
        _ => stem,
    }
}

/// The top-level fields (and `env.KEY`s) two views differ in, for the message.
fn differences<'a>(live: &'a View<'_>, saved: &'a View<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if live.stopped != saved.stopped {
        out.push(if live.stopped { "status (stopped now, running in the dump)" } else { "status (running now, stopped in the dump)" }.into());
    }
    let empty = BTreeMap::new();
    let env_of = |v: &'a View<'_>| match v.fields.get("env") {
        Some(Field::Env(env)) => env,
        _ => &empty,
    };
    let (live_env, saved_env) = (env_of(live), env_of(saved));
    let keys: BTreeSet<&str> = live.fields.keys().chain(saved.fields.keys()).copied().collect();
    for key in keys {
        if key == "env" || live_env.contains_key(key) || saved_env.contains_key(key) {
            continue; // env vars are also copied to the top level: told once, as env.KEY
        }
        if live.fields.get(key) != saved.fields.get(key) {
            out.push(key.to_string());
        }
    }
    let env_keys: BTreeSet<&str> = live_env.keys().chain(saved_env.keys()).copied().collect();
    for key in env_keys {
        if live_env.get(key) != saved_env.get(key) {
            out.push(format!("env.{key}"));
        }
    }
    out
}

/// An owned app whose live state differs from what a reboot would bring back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsaved {
    pub name: String,
    pub namespace: String,
    /// Its live processes (empty when it is only in the dump).
    pub pm_ids: Vec<u64>,
    /// In words: what differs, and what a reboot would do.
    pub detail: String,
}

/// Compares the in-scope `live` entries with the in-scope entries of `saved`
/// (`None`: no dump at all), app by app (name and namespace).
pub fn unsaved(saved: Option<&[Entry]>, live: &[(u64, Entry)], scope: &Scope<'_>) -> Vec<Unsaved> {
    type Live<'e> = (Vec<u64>, Vec<View<'e>>);
    let mut apps: BTreeMap<(&str, &str), (Live<'_>, Vec<View<'_>>)> = BTreeMap::new();
    for (pm_id, entry) in live.iter().filter(|(_, e)| scope.contains(e)) {
        let ((ids, views), _) = apps.entry((namespace(entry), name(entry))).or_default();
        ids.push(*pm_id);
        views.push(view(entry));
    }
    for entry in saved.unwrap_or_default().iter().filter(|e| scope.contains(e)) {
        apps.entry((namespace(entry), name(entry))).or_default().1.push(view(entry));
    }
    let mut out = Vec::new();
    for ((namespace, name), ((pm_ids, live), saved_views)) in apps {
        let detail = if saved.is_none() {
            "PM2 has no dump yet: a reboot (pm2 resurrect) would not bring it back".to_string()
        } else if saved_views.is_empty() {
            "not in PM2's dump: a reboot (pm2 resurrect) would not bring it back".to_string()
        } else if live.is_empty() {
            format!("not running, but in PM2's dump ({} process(es)): a reboot (pm2 resurrect) would start it", saved_views.len())
        } else if live.len() != saved_views.len() {
            format!("{} process(es) running, {} in PM2's dump: a reboot would bring back the saved count", live.len(), saved_views.len())
        } else {
            let mut left: Vec<&View> = saved_views.iter().collect();
            let mut unmatched = Vec::new();
            for v in &live {
                match left.iter().position(|s| *s == v) {
                    Some(i) => {
                        left.swap_remove(i);
                    }
                    None => unmatched.push(v),
                }
            }
            let (Some(live_view), Some(saved_view)) = (unmatched.first(), left.first()) else { continue };
            let mut paths = differences(live_view, saved_view);
            if paths.len() > 6 {
                let more = paths.len() - 5;
                paths.truncate(5);
                paths.push(format!("{more} more"));
            }
            format!("differs from PM2's dump in {}: a reboot would bring back the saved state", paths.join(", "))
        };
        out.push(Unsaved { name: name.to_string(), namespace: namespace.to_string(), pm_ids, detail });
    }
    out
}

/// The state of the dump for `status` and `watch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpCheck {
    /// `dump.pm2` (or `dump.pm2.bak` when only that one is there).
    pub path: PathBuf,
    /// `current`, `unsaved`, `absent` (never saved; nothing owned runs) or `unreadable`.
    pub state: &'static str,
    /// Owned apps a reboot would not bring back as they run now.
    pub unsaved: Vec<Unsaved>,
    /// Why the dump could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Compares the owned live entries with the dump in `dir`.
pub fn check(dir: &Path, live: &[(u64, Entry)], scope: &Scope<'_>) -> DumpCheck {
    check_saved(dir, read_saved(dir, Some(scope)), live, scope)
}

/// [`check`] with the dump already read (`watch` keeps it between reads).
pub fn check_saved(dir: &Path, saved: Result<Saved, DumpError>, live: &[(u64, Entry)], scope: &Scope<'_>) -> DumpCheck {
    let dump = dir.join(DUMP_FILE);
    match saved {
        Err(e) => DumpCheck { path: dump, state: "unreadable", unsaved: Vec::new(), error: Some(e.to_string()) },
        Ok(Saved::Absent) => {
            let unsaved = unsaved(None, live, scope);
            DumpCheck { path: dump, state: if unsaved.is_empty() { "absent" } else { "unsaved" }, unsaved, error: None }
        }
        Ok(Saved::Found { path, entries }) => {
            let unsaved = unsaved(Some(&entries), live, scope);
            DumpCheck { path, state: if unsaved.is_empty() { "current" } else { "unsaved" }, unsaved, error: None }
        }
    }
}

/// The dump read once and kept while its file does not change (`watch`).
#[derive(Debug, Default)]
pub struct SavedCache {
    stamp: Option<Stamp>,
    saved: Option<Saved>,
}

type Stamp = (PathBuf, Option<SystemTime>, u64, u64);

fn stamp(dir: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    [DUMP_FILE, BACKUP_FILE].into_iter().find_map(|f| {
        let path = dir.join(f);
        let m = std::fs::metadata(&path).ok()?;
        Some((path, m.modified().ok(), m.len(), m.ino()))
    })
}

impl SavedCache {
    /// The owned entries of the dump in `dir`, read again only when the file changed.
    pub fn read(&mut self, dir: &Path, scope: &Scope<'_>) -> Result<Saved, DumpError> {
        let now = stamp(dir);
        if let (Some(saved), true) = (&self.saved, now == self.stamp && now.is_some()) {
            return Ok(saved.clone());
        }
        let saved = read_saved(dir, Some(scope));
        (self.stamp, self.saved) = match &saved {
            Ok(s) => (now, Some(s.clone())),
            Err(_) => (None, None),
        };
        saved
    }
}

/// What [`save`] did.
#[derive(Debug)]
pub enum SaveOutcome {
    /// The dump was rewritten.
    Written {
        path: PathBuf,
        /// Owned apps and processes written.
        apps: usize,
        processes: usize,
        /// Entries of other namespaces (or apps out of scope) kept as saved.
        kept: usize,
        /// Where the previous dump was copied (`None`: there was no `dump.pm2`).
        backup: Option<PathBuf>,
    },
    /// The dump already held the live state of every app in scope; not rewritten.
    Current { path: PathBuf, apps: usize },
    /// `[pm2] save = false`.
    Off,
    /// Not attempted: the apply did not succeed.
    Skipped { reason: String },
    /// Could not be written; the dump on disk is as it was.
    Failed(DumpError),
}

impl SaveOutcome {
    /// The journal's `dump` record (no entry contents: they hold env values).
    pub fn journal_value(&self) -> Value {
        match self {
            Self::Written { path, apps, processes, kept, backup } => json!({
                "outcome": "written", "path": path, "apps": apps, "processes": processes, "kept": kept, "backup": backup,
            }),
            Self::Current { path, apps } => json!({"outcome": "current", "path": path, "apps": apps}),
            Self::Off => json!({"outcome": "off", "reason": "[pm2] save = false"}),
            Self::Skipped { reason } => json!({"outcome": "skipped", "reason": reason}),
            Self::Failed(e) => json!({"outcome": "failed", "reason": e.to_string()}),
        }
    }

    /// One line for people (`None` when there is nothing worth saying).
    pub fn human(&self) -> Option<String> {
        match self {
            Self::Written { path, apps, processes, kept, backup } => Some(format!(
                "Saved to PM2's dump {}: {apps} owned app(s), {processes} process(es); {kept} other entr{} kept as last saved{}.",
                path.display(),
                if *kept == 1 { "y" } else { "ies" },
                backup.as_ref().map(|b| format!("; the previous dump is {}", b.display())).unwrap_or_default()
            )),
            Self::Current { apps: 0, .. } => None,
            Self::Current { path, .. } => Some(format!("PM2's dump {} already holds the owned apps as they run.", path.display())),
            Self::Off | Self::Skipped { .. } => None,
            Self::Failed(e) => Some(format!("the processes are as applied, but PM2's dump was not saved: {e}")),
        }
    }

    /// Whether the dump could not be written (the apply then exits non-zero).
    pub fn failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

/// Saves the in-scope apps of the daemon `client` talks to into the dump in `dir`.
pub async fn save(client: &mut Pm2Client, dir: &Path, scope: &Scope<'_>) -> SaveOutcome {
    let items = match client.list_with_raw().await {
        Ok((_, items)) => items,
        Err(e) => return SaveOutcome::Failed(DumpError::Live(e)),
    };
    match save_entries(dir, live_entries(&items, scope), scope) {
        Ok(outcome) => outcome,
        Err(e) => SaveOutcome::Failed(e),
    }
}

/// [`save`] with the live entries already read (in scope, `pm_id` order).
pub fn save_entries(dir: &Path, live: Vec<(u64, Entry)>, scope: &Scope<'_>) -> Result<SaveOutcome, DumpError> {
    let dump = dir.join(DUMP_FILE);
    let saved = read_saved(dir, None)?;
    let apps = live.iter().map(|(_, e)| (namespace(e), name(e))).collect::<BTreeSet<_>>().len();
    let processes = live.len();
    let (entries, from) = match &saved {
        Saved::Absent => (&[][..], None),
        Saved::Found { path, entries } => (entries.as_slice(), Some(path.clone())),
    };
    if unsaved(from.as_ref().map(|_| entries), &live, scope).is_empty() && (from.is_some() || live.is_empty()) {
        return Ok(SaveOutcome::Current { path: from.unwrap_or(dump), apps });
    }
    let (merged, kept) = merge(entries, live.into_iter().map(|(_, e)| e).collect(), scope);
    // `JSON.stringify(list, '', 2)`: two-space indent, no trailing newline.
    let text = serde_json::to_vec_pretty(&merged).map_err(|e| io_error("serialize the dump for", &dump)(std::io::Error::other(e)))?;
    let target = resolve_link(&dump);
    let backup = match std::fs::read(&target) {
        Ok(previous) => {
            let bak = resolve_link(&dir.join(BACKUP_FILE));
            let like = std::fs::metadata(&target).ok();
            replace(&bak, &previous, like.as_ref()).map_err(io_error("back up the dump to", &bak))?;
            Some(bak)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", &target)(e)),
    };
    let like = std::fs::metadata(&target).ok();
    replace(&target, &text, like.as_ref()).map_err(io_error("write", &target))?;
    Ok(SaveOutcome::Written { path: dump, apps, processes, kept, backup })
}

/// The file a symlink points to (so the link stays a link), else the path itself.
fn resolve_link(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, synced,
/// with the old file's mode and owner (else 0600 and the directory's owner),
/// renamed over it; then the directory is synced so the rename survives a crash.
fn replace(path: &Path, bytes: &[u8], like: Option<&Metadata>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or(DUMP_FILE);
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{file_name}.")).suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    let mode = like.map_or(0o600, |m| m.mode() & 0o7777);
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    let owner = match like {
        Some(m) => Some((m.uid(), m.gid())),
        None => std::fs::metadata(dir).ok().map(|m| (m.uid(), m.gid())),
    };
    let tmp_meta = tmp.as_file().metadata()?;
    if let Some((uid, gid)) = owner
        && (uid, gid) != (tmp_meta.uid(), tmp_meta.gid())
    {
        // Root writing a user's PM2 home: the file stays the user's, so `pm2 save`
        // can still rewrite it. Anyone else cannot give files away: keep ours.
        if let Err(e) = std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))
            && tmp_meta.uid() == 0
        {
            return Err(e);
        }
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: Value) -> Entry {
        v.as_object().cloned().expect("object")
    }

    fn ns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    fn app(name: &str, namespace: &str, foo: &str) -> Entry {
        entry(json!({
            "name": name, "namespace": namespace, "env": {"FOO": foo, "unique_id": "u1"}, "FOO": foo,
            "status": "online", "pm_uptime": 1, "restart_time": 0, "merge_logs": true,
            "pm_pid_path": format!("/h/pids/{name}-0.pid"), "axm_monitor": {"Heap Size": {"value": 1}},
        }))
    }

    #[test]
    fn live_entry_drops_what_pm2_save_drops_and_keeps_key_order() {
        let item = json!({"pid": 7, "name": "a", "pm_id": 3, "monit": {"cpu": 0}, "pm2_env": {
            "name": "a", "instances": 2, "namespace": "n", "pm_id": 3, "prev_restart_delay": 0, "zeta": 1, "alpha": 2}});
        let (id, e) = live_entry(&item).unwrap();
        assert_eq!(id, 3);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["name", "namespace", "zeta", "alpha"]);
        let module = json!({"pm_id": 4, "pm2_env": {"name": "pm2-logrotate", "pmx_module": true}});
        assert!(live_entry(&module).is_none(), "modules are never dumped");
    }

    #[test]
    fn merge_replaces_owned_entries_and_keeps_foreign_ones_in_place() {
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let saved = vec![app("stock", "theirs", "s"), app("web", "mine", "old"), app("gone", "mine", "x"), app("late", "other", "l")];
        let live = vec![app("web", "mine", "new"), app("api", "mine", "a")];
        let (merged, kept) = merge(&saved, live, &scope);
        let names: Vec<(&str, &str)> = merged.iter().map(|e| (name(e), namespace(e))).collect();
        assert_eq!(names, [("stock", "theirs"), ("web", "mine"), ("api", "mine"), ("late", "other")]);
        assert_eq!(kept, 2);
        assert_eq!(merged[1]["env"]["FOO"], "new", "the owned entry is the live one");
        assert_eq!(merged[0], saved[0], "a foreign entry is kept byte for byte");
    }

    #[test]
    fn merge_appends_when_nothing_owned_was_saved_and_respects_only() {
        let owned = ns(&["mine"]);
        let only: BTreeSet<String> = ["web".to_string()].into();
        let scope = Scope { namespaces: &owned, only: Some(&only) };
        let saved = vec![app("other", "theirs", "o"), app("api", "mine", "saved")];
        let (merged, kept) = merge(&saved, vec![app("web", "mine", "new")], &scope);
        let names: Vec<&str> = merged.iter().map(name).collect();
        assert_eq!(names, ["other", "api", "web"], "api is out of scope: kept as saved");
        assert_eq!(kept, 2);
        let (merged, _) = merge(&[], vec![app("web", "mine", "n")], &scope);
        assert_eq!(merged.len(), 1);
    }

    #[test]
    fn a_foreign_app_never_enters_the_dump_from_live() {
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let items = vec![
            json!({"pm_id": 0, "pm2_env": app("late", "theirs", "x")}),
            json!({"pm_id": 1, "pm2_env": app("web", "mine", "y")}),
            json!({"pm_id": 2, "pm2_env": app("nons", "default", "y")}),
        ];
        let live = live_entries(&items, &scope);
        assert_eq!(live.iter().map(|(id, e)| (*id, name(e))).collect::<Vec<_>>(), [(1, "web")]);
        let text = serde_json::to_string(&items).unwrap();
        let from_text = live_entries_from_text(&text, &scope).unwrap();
        assert_eq!(from_text, live, "the text reader agrees with the value reader");
    }

    #[test]
    fn unsaved_ignores_what_every_start_changes() {
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let saved = vec![app("web", "mine", "a")];
        let mut restarted = app("web", "mine", "a");
        restarted.insert("pm_uptime".into(), json!(99));
        restarted.insert("restart_time".into(), json!(4));
        restarted.insert("axm_monitor".into(), json!({"Heap Size": {"value": 2}}));
        restarted.insert("pm_pid_path".into(), json!("/h/pids/web-5.pid"));
        restarted["env"]["unique_id"] = json!("u2");
        restarted.insert("status".into(), json!("launching"));
        assert_eq!(unsaved(Some(&saved), &[(5, restarted)], &scope), []);
    }

    #[test]
    fn unsaved_names_what_differs() {
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let saved = vec![app("web", "mine", "a"), app("old", "mine", "a"), app("stock", "theirs", "a")];
        let mut stopped = app("api", "mine", "a");
        stopped.insert("status".into(), json!("stopped"));
        let live = vec![(0, app("web", "mine", "b")), (1, stopped), (2, app("late", "theirs", "x"))];
        let found = unsaved(Some(&saved), &live, &scope);
        let by_name: BTreeMap<&str, &str> = found.iter().map(|u| (u.name.as_str(), u.detail.as_str())).collect();
        assert_eq!(by_name.len(), 3, "{found:?}");
        assert!(by_name["web"].contains("env.FOO") && !by_name["web"].contains(" FOO"), "{}", by_name["web"]);
        assert!(by_name["api"].contains("not in PM2's dump"), "{}", by_name["api"]);
        assert!(by_name["old"].contains("not running, but in PM2's dump"), "{}", by_name["old"]);
        let none = unsaved(None, &[(0, app("web", "mine", "a"))], &scope);
        assert!(none[0].detail.contains("no dump yet"), "{none:?}");
    }

    #[test]
    fn a_stopped_app_differs_from_a_running_saved_one_and_counts_matter() {
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let saved = vec![app("web", "mine", "a")];
        let mut stopped = app("web", "mine", "a");
        stopped.insert("status".into(), json!("stopped"));
        let found = unsaved(Some(&saved), &[(0, stopped)], &scope);
        assert!(found[0].detail.contains("status (stopped now"), "{found:?}");
        let two = unsaved(Some(&saved), &[(0, app("web", "mine", "a")), (1, app("web", "mine", "a"))], &scope);
        assert!(two[0].detail.contains("2 process(es) running, 1 in PM2's dump"), "{two:?}");
    }

    #[test]
    fn id_suffixes_are_stripped_like_pm2_does() {
        assert_eq!(without_id_suffix("/p/web-12.pid", ".pid"), "/p/web");
        assert_eq!(without_id_suffix("/p/web.pid", ".pid"), "/p/web");
        assert_eq!(without_id_suffix("/p/web-.pid", ".pid"), "/p/web-");
        assert_eq!(without_id_suffix("/p/v2.pid", ".pid"), "/p/v2");
        assert_eq!(without_id_suffix("/p/out.txt", ".log"), "/p/out.txt");
    }

    #[test]
    fn save_writes_atomically_keeps_a_backup_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let foreign = vec![app("stock", "theirs", "s"), app("web", "mine", "old")];
        let before = serde_json::to_vec_pretty(&foreign).unwrap();
        std::fs::write(dir.path().join(DUMP_FILE), &before).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join(DUMP_FILE), std::fs::Permissions::from_mode(0o640)).unwrap();
        let outcome = save_entries(dir.path(), vec![(0, app("web", "mine", "new"))], &scope).unwrap();
        assert!(matches!(outcome, SaveOutcome::Written { apps: 1, processes: 1, kept: 1, backup: Some(_), .. }), "{outcome:?}");
        assert_eq!(std::fs::read(dir.path().join(BACKUP_FILE)).unwrap(), before, "the previous dump is the backup");
        let text = std::fs::read_to_string(dir.path().join(DUMP_FILE)).unwrap();
        assert!(text.starts_with("[\n  {\n    \"name\": \"stock\""), "{text}");
        let written: Vec<Entry> = serde_json::from_str(&text).unwrap();
        assert_eq!(written[1]["env"]["FOO"], "new");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "no temporary file left");
        let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(DUMP_FILE), mode(BACKUP_FILE)), (0o640, 0o640), "the old file's mode is kept");
        let again = save_entries(dir.path(), vec![(3, app("web", "mine", "new"))], &scope).unwrap();
        assert!(matches!(again, SaveOutcome::Current { .. }), "{again:?}");
    }

    #[test]
    fn an_unreadable_dump_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        for (bad, expect) in [(&b"[{\"name\": \"x\","[..], "cannot be read"), (b"{\"name\": \"x\"}", "not a list"), (b"[1]", "entry 1")] {
            std::fs::write(dir.path().join(DUMP_FILE), bad).unwrap();
            let err = save_entries(dir.path(), vec![(0, app("web", "mine", "new"))], &scope).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect) && text.contains("mv ") && text.contains(DUMP_FILE), "{text}");
            assert_eq!(std::fs::read(dir.path().join(DUMP_FILE)).unwrap(), bad, "left as it was");
            assert!(!dir.path().join(BACKUP_FILE).exists());
        }
    }

    #[test]
    fn the_cache_reads_again_only_when_the_file_changes_and_keeps_only_owned_entries() {
        let dir = tempfile::tempdir().unwrap();
        let owned = ns(&["mine"]);
        let scope = Scope { namespaces: &owned, only: None };
        let mut cache = SavedCache::default();
        assert_eq!(cache.read(dir.path(), &scope).unwrap(), Saved::Absent);
        std::fs::write(dir.path().join(DUMP_FILE), serde_json::to_vec(&[app("web", "mine", "a"), app("s", "theirs", "b")]).unwrap()).unwrap();
        let first = cache.read(dir.path(), &scope).unwrap();
        let Saved::Found { entries, .. } = &first else { panic!("{first:?}") };
        assert_eq!(entries.iter().map(name).collect::<Vec<_>>(), ["web"], "foreign entries are not read");
        let live = vec![(0, app("web", "mine", "b"))];
        assert_eq!(unsaved(Some(entries), &live, &scope).len(), 1);
        // Replaced as `reconcile` and editors do (a new inode): seen at once.
        let tmp = dir.path().join("x.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&[app("web", "mine", "b")]).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.path().join(DUMP_FILE)).unwrap();
        let Saved::Found { entries, .. } = cache.read(dir.path(), &scope).unwrap() else { panic!("found") };
        assert!(unsaved(Some(&entries), &live, &scope).is_empty());
        std::fs::write(dir.path().join(DUMP_FILE), b"not json").unwrap();
        assert!(cache.read(dir.path(), &scope).is_err(), "a broken dump is an error, not the cached one");
    }

    #[test]
    fn without_dump_pm2_the_backup_is_what_resurrect_uses() {
        let dir = tempfile::tempdir().unwrap();
        let saved = vec![app("stock", "theirs", "s")];
        std::fs::write(dir.path().join(BACKUP_FILE), serde_json::to_vec(&saved).unwrap()).unwrap();
        let found = read_saved(dir.path(), None).unwrap();
        assert_eq!(found, Saved::Found { path: dir.path().join(BACKUP_FILE), entries: saved });
        std::fs::write(dir.path().join(BACKUP_FILE), b"garbage").unwrap();
        assert_eq!(read_saved(dir.path(), None).unwrap(), Saved::Absent);
    }
}
