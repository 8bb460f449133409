//! The apply journal (safety contract, promise 4): append-only JSON lines, each
//! written whole and fsynced before the apply goes on, so that after a crash, a
//! kill or a power cut it still says what was done. Secrets are redacted before
//! a record is built (the plan is already redacted; live env goes through
//! [`redacted_live`]).

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
}
