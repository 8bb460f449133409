//! The apply journal (safety contract, promise 4): append-only JSON lines, each
//! written whole and fsynced before the apply goes on, so that after a crash, a
//! kill or a power cut it still says what was done. Secrets are redacted before
//! a record is built (the plan is already redacted; live env goes through
//! [`redacted_live`]).
//!
//! It is a write-ahead log: the `intent` of each PM2 call is on disk before the call,
//! its `action` (outcome `ok`, `failed` or `unknown`) after. An intent without an
//! outcome (the apply was killed) or with `unknown` (no answer in time) is settled by
//! the next apply from its first read: a `settled` record says whether the call was
//! carried out ([`unsettled`], [`settle`]). A line torn by a kill mid-write is cut
//! off when the journal is next opened, so every line stays valid JSON.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::live::LiveState;
use crate::redact::{self, Redactor};

/// Where the journal goes when `[journal] path` is not set (relative to the project).
pub const DEFAULT_PATH: &str = ".reconcile/journal.jsonl";

/// Why the journal cannot be written. Apply stops: it never acts unrecorded.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the apply journal {path}: fix its directory or permissions, or set [journal] path")]
pub struct JournalError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Identifies this apply's records among others in the same file.
    run: String,
}

impl Journal {
    /// Opens (creating the file and its directory) for appending.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let err = |source| JournalError { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        repair_torn_tail(path).map_err(err)?;
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
        let run = format!("{}-{}", crate::live::client::now_ms(), std::process::id());
        Ok(Self { file, path: path.to_path_buf(), run })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (`event` plus the fields of `body`, an object), then fsyncs.
    pub fn record(&mut self, event: &str, body: Value) -> Result<(), JournalError> {
        let mut line = json!({"event": event, "run": self.run, "at_ms": crate::live::client::now_ms()});
        if let (Some(line), Value::Object(body)) = (line.as_object_mut(), body) {
            line.extend(body);
        }
        // Redacted by key above; by value here (PM2's error text may echo a secret).
        let mut text = redact::scrub(&line.to_string()).into_owned();
        text.push('\n');
        let err = |source| JournalError { path: self.path.clone(), source };
        self.file.write_all(text.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}

/// Cuts off a last line without its newline: a record torn by a kill mid-write, never
/// fsynced, so never relied on. Every line before it is whole.
fn repair_torn_tail(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Look back in chunks for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if end == len && buf[n - 1] == b'\n' {
            return Ok(());
        }
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            file.set_len(start + i as u64 + 1)?;
            return file.sync_data();
        }
        if start == 0 {
            file.set_len(0)?;
            return file.sync_data();
        }
        end = start;
    }
}

/// A call whose outcome the journal does not know: an `intent` without an `action`,
/// or with outcome `unknown`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsettled {
    pub run: String,
    pub seq: u64,
    /// When the intent was written (ms since the epoch).
    pub at_ms: i64,
    pub app: String,
    pub namespace: String,
    pub call: String,
    pub pm_id: Option<u64>,
    pub restarts: Option<u64>,
    pub created_at_ms: Option<i64>,
}

/// How much of the journal's end [`unsettled`] reads: every apply settles what came
/// before it, so an unsettled call is near the end (many applies would have to run
/// since it, each writing megabytes, for it to fall out).
const SETTLE_WINDOW: u64 = 16 * 1024 * 1024;

/// The calls of earlier applies whose outcome is not known yet (read from the last
/// [`SETTLE_WINDOW`] bytes of `path`; lines that are not JSON are skipped).
pub fn unsettled(path: &Path) -> Vec<Unsettled> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(SETTLE_WINDOW);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // Started mid-line: that first piece is not a record.
    let text = if from > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
    let mut open: Vec<Unsettled> = Vec::new();
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<Value>(line) else { continue };
        let str_of = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let seq = r.get("seq").and_then(Value::as_u64);
        match (r.get("event").and_then(Value::as_str), seq) {
            (Some("intent"), Some(seq)) => open.push(Unsettled {
                run: str_of("run"),
                seq,
                at_ms: r.get("at_ms").and_then(Value::as_i64).unwrap_or(0),
                app: str_of("app"),
                namespace: str_of("namespace"),
                call: str_of("call"),
                pm_id: r.get("pm_id").and_then(Value::as_u64),
                restarts: r.get("restarts").and_then(Value::as_u64),
                created_at_ms: r.get("created_at_ms").and_then(Value::as_i64),
            }),
            (Some("action"), Some(seq)) if r.get("outcome").and_then(Value::as_str) != Some("unknown") => {
                let run = str_of("run");
                open.retain(|u| !(u.run == run && u.seq == seq));
            }
            (Some("settled"), Some(seq)) => {
                let run = str_of("of_run");
                open.retain(|u| !(u.run == run && u.seq == seq));
            }
            _ => {}
        }
    }
    open
}

/// Whether an unsettled call was carried out, judged from a read made after it:
/// `done`, `not_done`, or `gone` (its process is no longer there to tell).
pub fn settle(call: &Unsettled, live: &LiveState) -> &'static str {
    let mine = |p: &&crate::live::LiveProcess| p.name == call.app && p.namespace == call.namespace;
    let target = call.pm_id.and_then(|id| live.get(id)).filter(|p| mine(p));
    match call.call.as_str() {
        // A process of the app spawned (created) after the intent was written.
        "start" | "duplicate" => {
            let after = |p: &&crate::live::LiveProcess| p.created_at_ms.is_some_and(|c| c >= call.at_ms) && call.pm_id != Some(p.pm_id);
            if live.processes.iter().filter(mine).any(|p| after(&p)) { "done" } else { "not_done" }
        }
        "delete" if target.is_none() => "done",
        "delete" => "not_done",
        // A restart asked for moves `created_at` (and counts a restart).
        "restart" | "reload" => match target {
            None => "gone",
            Some(p) if p.created_at_ms > call.created_at_ms || call.restarts.is_some_and(|r| p.restarts > r) => "done",
            Some(_) => "not_done",
        },
        "stop" => match target {
            None => "gone",
            Some(p) if p.status == crate::live::ProcessStatus::Stopped => "done",
            Some(_) => "not_done",
        },
        _ => "not_done",
    }
}

/// One process as the journal keeps it: identity, state, and the env it set
/// (secret values hidden).
#[derive(Debug, Serialize)]
struct JournalProcess<'a> {
    pm_id: u64,
    name: &'a str,
    namespace: &'a str,
    status: &'a str,
    pid: Option<u32>,
    restarts: u64,
    exec_mode: &'a str,
    script: Option<&'a Path>,
    cwd: Option<&'a Path>,
    spec_hash: Option<&'a str>,
    env: serde_json::Map<String, Value>,
}

/// The live state for the journal: every process, env values of secret keys hidden.
pub fn redacted_live(live: &LiveState, redactor: &Redactor) -> Value {
    let processes: Vec<JournalProcess<'_>> = live
        .processes
        .iter()
        .map(|p| JournalProcess {
            pm_id: p.pm_id,
            name: &p.name,
            namespace: &p.namespace,
            status: p.status.as_str(),
            pid: p.pid,
            restarts: p.restarts,
            exec_mode: p.exec_mode.as_str(),
            script: p.script.as_deref(),
            cwd: p.cwd.as_deref(),
            spec_hash: p.spec_hash.as_deref(),
            env: p
                .env_set
                .iter()
                .map(|(k, v)| (k.clone(), if redactor.is_secret(k) { json!(redact::HIDDEN) } else { v.clone() }))
                .collect(),
        })
        .collect();
    json!({"read_at_ms": live.read_at_ms, "processes": processes})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_whole_lines_appended_to_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/journal.jsonl");
        Journal::open(&path).unwrap().record("begin", json!({"a": 1})).unwrap();
        let mut second = Journal::open(&path).unwrap();
        second.record("end", json!({"outcome": "success"})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "begin");
        assert_eq!(lines[0]["a"], 1);
        assert_eq!(lines[1]["outcome"], "success");
        assert_ne!(lines[0]["run"], Value::Null);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_unsettled_calls_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let lines = [
            json!({"event": "intent", "run": "a", "seq": 1, "at_ms": 10, "app": "w", "namespace": "mine", "call": "restart", "pm_id": 3, "restarts": 0, "created_at_ms": 5}),
            json!({"event": "action", "run": "a", "seq": 1, "outcome": "unknown"}),
            json!({"event": "intent", "run": "a", "seq": 2, "at_ms": 11, "app": "w", "namespace": "mine", "call": "start"}),
            json!({"event": "action", "run": "a", "seq": 2, "outcome": "ok"}),
            json!({"event": "intent", "run": "a", "seq": 3, "at_ms": 12, "app": "v", "namespace": "mine", "call": "delete", "pm_id": 4}),
        ];
        let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        text.push_str("{\"event\": \"act");
        std::fs::write(&path, text).unwrap();
        let mut j = Journal::open(&path).unwrap();
        j.record("begin", json!({})).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{after}");
        let open = unsettled(&path);
        assert_eq!(open.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 3]);
        j.record("settled", json!({"of_run": "a", "seq": 1})).unwrap();
        assert_eq!(unsettled(&path).len(), 1);
    }

    #[test]
    fn a_call_is_settled_by_what_a_later_read_shows() {
        use crate::testing::{desired, live, live_of};
        let apps = desired(json!([{"name": "w", "namespace": "mine", "script": "s.js"}]));
        let mut p = live_of(&apps[0], 3);
        p.restarts = 0;
        p.created_at_ms = Some(5);
        let call = |call: &str| Unsettled {
            run: "a".into(), seq: 1, at_ms: 10, app: "w".into(), namespace: "mine".into(), call: call.into(),
            pm_id: Some(3), restarts: Some(0), created_at_ms: Some(5),
        };
        let before = live(vec![p.clone()]);
        assert_eq!(settle(&call("restart"), &before), "not_done");
        assert_eq!(settle(&call("delete"), &before), "not_done");
        let mut restarted = p.clone();
        restarted.restarts = 1;
        restarted.created_at_ms = Some(20);
        assert_eq!(settle(&call("restart"), &live(vec![restarted.clone()])), "done");
        assert_eq!(settle(&call("delete"), &live(vec![])), "done");
        assert_eq!(settle(&call("restart"), &live(vec![])), "gone");
        let start = Unsettled { pm_id: None, ..call("start") };
        assert_eq!(settle(&start, &before), "not_done");
        assert_eq!(settle(&start, &live(vec![restarted])), "done");
    }
}
