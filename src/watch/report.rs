//! What the watcher tells, one [`Report`] per line. With `--format json` each is one
//! JSON object with a `"kind"` and `"at_ms"` (ms since the epoch); the field names
//! are a contract (DESIGN.md, Contracts): a drift line is
//! `{"kind": "drift", "app", "namespace", "reason", "detail", "pm_ids", ...}`.

use std::path::PathBuf;

use serde::Serialize;

use super::drift::Drift;
use crate::plan::Change;
use crate::plan::model::Ignored;
use crate::validate::Diagnostic;

/// Why a plan line was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The watcher started.
    Start,
    /// A desired-state file changed.
    Files,
    /// The followed git branch moved.
    Git,
}

/// The followed branch, in the `started` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitInfo {
    pub remote: String,
    pub branch: String,
    pub checkout: PathBuf,
    pub interval_s: u64,
}

/// One line.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// Watching began.
    Started {
        version: &'static str,
        project: Option<String>,
        project_file: PathBuf,
        pm2_home: PathBuf,
        namespaces: Vec<String>,
        /// The files watched (empty in pull mode: the clone changes only by fetch).
        files: Vec<PathBuf>,
        interval_s: u64,
        heal: bool,
        /// The metrics address actually bound (a port of 0 is resolved).
        metrics: Option<String>,
        git: Option<GitInfo>,
    },
    /// Findings of the desired-state checks (after a change, or at start when there
    /// are any). While `errors` > 0 nothing is planned or healed.
    Lint {
        errors: usize,
        warnings: usize,
        diagnostics: Vec<Diagnostic>,
        /// The findings as `lint` prints them (human output only).
        #[serde(skip)]
        human: String,
    },
    /// The plan after a start, a file change or a new commit: its changes (no noops).
    Plan {
        trigger: Trigger,
        changes: Vec<Change>,
        unmanaged: Vec<Ignored>,
        summary: crate::plan::model::Summary,
        #[serde(skip_serializing_if = "Option::is_none")]
        git_commit: Option<String>,
    },
    /// A drift began.
    Drift(Drift),
    /// A drift ended.
    DriftCleared {
        #[serde(flatten)]
        drift: Drift,
        /// How long it lasted.
        lasted_ms: u64,
    },
    /// The daemon does not answer; the watcher retries with backoff.
    DaemonDown { error: String, retry_in_ms: u64 },
    /// The daemon answers again.
    DaemonBack { down_ms: u64 },
    /// A heal starts (the apply pipeline, auto-approved, for these apps).
    Healing { apps: Vec<String> },
    /// A heal ended well: `outcome` is `success`, or `noop` when nothing was left to do.
    Healed { apps: Vec<String>, outcome: &'static str, actions: usize, journal: Option<PathBuf> },
    /// A heal failed (`failed`), was refused by the safety contract (`refused`), or
    /// could not run (`error`). `apps` failed; `healed` (if any) came out fine.
    HealFailed {
        apps: Vec<String>,
        outcome: &'static str,
        reason: String,
        healed: Vec<String>,
        journal: Option<PathBuf>,
    },
    /// A heal waits for the next read: another apply holds the lock.
    HealDeferred { apps: Vec<String>, reason: String },
    /// An app is given up on: no more heals until its spec changes or its drift clears.
    HealGivenUp { app: String, reason: String },
    /// `--heal` broke a crash loop: the owned app's processes were stopped (their
    /// error log is kept) and it is not started again until its desired state or its
    /// code changes.
    CrashLoopStopped {
        app: String,
        namespace: String,
        pm_ids: Vec<u64>,
        /// Whether every process was stopped.
        stopped: bool,
        /// The crash-loop finding (crashes within the window).
        detail: String,
        /// The last lines of its error log.
        log_tail: Vec<String>,
        error_log: Option<PathBuf>,
        journal: Option<PathBuf>,
    },
    /// An app outside the owned namespaces crash-loops (the same rule as `crash_loop`).
    /// Only reported, never acted on; told once when it starts.
    ForeignCrashLoop { app: String, namespace: String, pm_ids: Vec<u64>, detail: String },
    /// The followed branch moved; the clone is at `commit` now.
    Git { remote: String, branch: String, commit: String, previous: Option<String> },
    /// Fetching the branch failed; retried with backoff, the clone unchanged.
    GitError { error: String },
    /// The branch moved to a commit that is not applied (`reason`: `unverified`, not
    /// signed by an allowed key; `rewind`, a force-push back); the agent stays on `current`.
    GitRefused { commit: String, reason: &'static str, current: Option<String>, error: String },
    /// Something that stops part of the watcher until fixed (reconcile.toml unreadable,
    /// a file watch failed); the message says what to do.
    Error { message: String },
    /// A signal asked the watcher to stop; it exits 0.
    Stopping { signal: &'static str },
}

impl Report {
    /// The `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Lint { .. } => "lint",
            Self::Plan { .. } => "plan",
            Self::Drift(_) => "drift",
            Self::DriftCleared { .. } => "drift_cleared",
            Self::DaemonDown { .. } => "daemon_down",
            Self::DaemonBack { .. } => "daemon_back",
            Self::Healing { .. } => "healing",
            Self::Healed { .. } => "healed",
            Self::HealFailed { .. } => "heal_failed",
            Self::HealDeferred { .. } => "heal_deferred",
            Self::HealGivenUp { .. } => "heal_given_up",
            Self::CrashLoopStopped { .. } => "crash_loop_stopped",
            Self::ForeignCrashLoop { .. } => "foreign_crash_loop",
            Self::Git { .. } => "git",
            Self::GitError { .. } => "git_error",
            Self::GitRefused { .. } => "git_refused",
            Self::Error { .. } => "error",
            Self::Stopping { .. } => "stopping",
        }
    }

    /// One JSON line (with `at_ms`), newline included.
    pub fn json_line(&self, at_ms: i64) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({"kind": self.kind()}));
        if let Some(object) = value.as_object_mut() {
            object.insert("at_ms".into(), at_ms.into());
        }
        let mut line = value.to_string();
        line.push('\n');
        line
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::watch::drift::DriftKind;

    #[test]
    fn drift_lines_carry_kind_app_and_reason() {
        let drift = Drift {
            app: "web".into(),
            namespace: "mine".into(),
            reason: DriftKind::CrashLoop,
            detail: "restarted 9 times".into(),
            pm_ids: vec![3],
            attributes: vec![],
            action: None,
        };
        let line: Value = serde_json::from_str(&Report::Drift(drift.clone()).json_line(5)).unwrap();
        assert_eq!((line["kind"].as_str(), line["app"].as_str(), line["reason"].as_str()), (Some("drift"), Some("web"), Some("crash_loop")));
        assert_eq!(line["at_ms"], 5);
        let cleared: Value = serde_json::from_str(&Report::DriftCleared { drift, lasted_ms: 9 }.json_line(6)).unwrap();
        assert_eq!((cleared["kind"].as_str(), cleared["reason"].as_str(), cleared["lasted_ms"].as_u64()), (Some("drift_cleared"), Some("crash_loop"), Some(9)));
        let stopping: Value = serde_json::from_str(&Report::Stopping { signal: "SIGTERM" }.json_line(1)).unwrap();
        assert_eq!(stopping["kind"], Report::Stopping { signal: "x" }.kind());
    }
}
