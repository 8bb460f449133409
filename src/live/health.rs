//! Health of a live process list: crash loops, errored and stopped processes.
//! The incident's health-check script (003: alert on high restart counts), built in.
//! Pure: takes a [`LiveState`] and thresholds, returns findings; no I/O, no printing.

use serde::Serialize;

use super::model::{LiveOrigin, LiveState, ProcessStatus};
use super::{DaemonInfo, ExecMode};

/// When a process counts as crash-looping (`[health]` in reconcile.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// More restarts than this in all.
    pub crash_restarts: u64,
    /// ... or more than this many restarts within `crash_window_s`.
    pub crash_window_restarts: u64,
    pub crash_window_s: u64,
}

/// What is wrong with a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    CrashLoop,
    Errored,
    Stopped,
    WaitingRestart,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthWarning {
    pub kind: WarningKind,
    pub pm_id: u64,
    pub name: String,
    pub namespace: String,
    pub owned: bool,
    pub message: String,
}

/// One row of `reconcile status` (the JSON field names are a contract).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    pub pm_id: u64,
    pub name: String,
    pub namespace: String,
    pub status: ProcessStatus,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub uptime_ms: Option<u64>,
    pub owned: bool,
    pub unstable_restarts: u64,
    pub exec_mode: ExecMode,
    pub memory: Option<u64>,
    pub cpu: Option<f64>,
}

/// Counts for the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct StatusSummary {
    pub total: usize,
    pub owned: usize,
    pub ignored: usize,
    pub online: usize,
    pub warnings: usize,
}

/// What `reconcile status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub source: LiveOrigin,
    pub daemon: Option<DaemonInfo>,
    /// Whether a reconcile.toml named owned namespaces (otherwise nothing is owned).
    pub has_project: bool,
    pub processes: Vec<StatusRow>,
    pub warnings: Vec<HealthWarning>,
    pub summary: StatusSummary,
}

/// Builds the status report: rows in `pm_id` order and the warnings.
pub fn assess(
    state: &LiveState,
    thresholds: HealthThresholds,
    has_project: bool,
    owns: impl Fn(&str) -> bool,
) -> StatusReport {
    let now = state.read_at_ms;
    let mut processes = Vec::with_capacity(state.processes.len());
    let mut warnings = Vec::new();
    for p in &state.processes {
        let owned = owns(&p.namespace);
        processes.push(StatusRow {
            pm_id: p.pm_id,
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            status: p.status.clone(),
            pid: p.pid,
            restarts: p.restarts,
            uptime_ms: p.uptime_ms(now),
            owned,
            unstable_restarts: p.unstable_restarts,
            exec_mode: p.exec_mode,
            memory: p.monit.map(|m| m.memory),
            cpu: p.monit.map(|m| m.cpu),
        });
        let warn = |kind, message: String| HealthWarning {
            kind,
            pm_id: p.pm_id,
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            owned,
            message,
        };
        // Restarts since `created_at` (reset by a manual restart) within the window.
        let age_s = p.created_at_ms.map(|c| now.saturating_sub(c).max(0) / 1000);
        let recent = age_s.is_some_and(|a| u64::try_from(a).unwrap_or(u64::MAX) <= thresholds.crash_window_s);
        if p.restarts > thresholds.crash_restarts {
            warnings.push(warn(
                WarningKind::CrashLoop,
                format!("restarted {} times (more than {}): check its error log", p.restarts, thresholds.crash_restarts),
            ));
        } else if p.unstable_restarts > thresholds.crash_window_restarts
            || (recent && p.restarts > thresholds.crash_window_restarts)
        {
            let n = p.unstable_restarts.max(p.restarts);
            warnings.push(warn(
                WarningKind::CrashLoop,
                format!(
                    "restarted {n} times within {} s (more than {}): it is crash-looping; check its error log",
                    thresholds.crash_window_s, thresholds.crash_window_restarts
                ),
            ));
        }
        match p.status {
            ProcessStatus::Errored => warnings.push(warn(
                WarningKind::Errored,
                "is errored: PM2 gave up restarting it (max_restarts reached, or it failed to start)".into(),
            )),
            ProcessStatus::Stopped => warnings.push(warn(WarningKind::Stopped, "is stopped".into())),
            ProcessStatus::WaitingRestart => {
                warnings.push(warn(WarningKind::WaitingRestart, "exited and is waiting to restart".into()));
            }
            _ => {}
        }
    }
    let summary = StatusSummary {
        total: processes.len(),
        owned: processes.iter().filter(|r| r.owned).count(),
        ignored: processes.iter().filter(|r| !r.owned).count(),
        online: processes.iter().filter(|r| r.status == ProcessStatus::Online).count(),
        warnings: warnings.len(),
    };
    StatusReport {
        source: state.origin.clone(),
        daemon: state.daemon.clone(),
        has_project,
        processes,
        warnings,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::model::normalize_list;
    use serde_json::json;

    const T: HealthThresholds = HealthThresholds { crash_restarts: 50, crash_window_restarts: 5, crash_window_s: 300 };

    fn state(entries: serde_json::Value, now: i64) -> LiveState {
        LiveState {
            origin: LiveOrigin::Snapshot { path: "x".into() },
            daemon: None,
            read_at_ms: now,
            processes: normalize_list(&entries, None).unwrap(),
            adopted: Default::default(),
        }
    }

    #[test]
    fn flags_crash_loops_errored_and_stopped() {
        let s = state(
            json!([
                {"pm_id": 0, "name": "ok", "pid": 1, "pm2_env": {"status": "online", "restart_time": 2, "created_at": 0, "namespace": "mine"}},
                {"pm_id": 1, "name": "loop", "pm2_env": {"status": "online", "restart_time": 3446, "namespace": "mine"}},
                {"pm_id": 2, "name": "fresh-loop", "pm2_env": {"status": "online", "restart_time": 9, "created_at": 990_000}},
                {"pm_id": 3, "name": "dead", "pm2_env": {"status": "errored", "restart_time": 3, "unstable_restarts": 0}},
                {"pm_id": 4, "name": "off", "pm2_env": {"status": "stopped"}},
                {"pm_id": 5, "name": "old", "pm2_env": {"status": "online", "restart_time": 9, "created_at": 0}},
            ]),
            1_000_000,
        );
        let r = assess(&s, T, true, |ns| ns == "mine");
        let kinds: Vec<_> = r.warnings.iter().map(|w| (w.name.as_str(), w.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("loop", WarningKind::CrashLoop),
                ("fresh-loop", WarningKind::CrashLoop),
                ("dead", WarningKind::Errored),
                ("off", WarningKind::Stopped),
            ]
        );
        assert_eq!(r.summary, StatusSummary { total: 6, owned: 2, ignored: 4, online: 4, warnings: 4 });
        assert!(r.processes[0].owned && !r.processes[2].owned);
    }
}
