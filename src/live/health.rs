//! Health of live processes, three pure judgements (no I/O, no printing):
//!
//! - [`assess`]: one read's warnings for `reconcile status` — the health-check script
//!   of incident 003 (alert on high restart counts), built in;
//! - [`CrashCounter`] and [`CrashRule`]: the one crash-loop rule — crashes (restarts
//!   that no call asked for) over a window of time, as `watch` and its breaker see them;
//! - [`GateWatch`]: apply's health gate — whether a process it started or restarted is
//!   healthy, judged from the samples of successive reads.

use std::collections::{BTreeMap, VecDeque};

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
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Spelled `crash_loop`, as `watch` spells the drift.
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
    /// For an owned process, whether its app differs from PM2's dump (what a reboot
    /// brings back); absent when the dump is not compared (`[pm2] save = false`, no
    /// project, a snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsaved: Option<bool>,
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
            unsaved: None,
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

// ---------------------------------------------------------------------------
// The crash-loop rule: crashes over a window of time.

/// When restarts make a crash loop (`[health] crash_window_restarts` within
/// `crash_window_s`): more than `max_crashes` crashes within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashRule {
    pub max_crashes: u64,
    pub window_ms: i64,
}

impl CrashRule {
    /// The rule of a `[health]` section.
    pub fn from_settings(health: &crate::config::project::HealthSection) -> Self {
        Self {
            max_crashes: health.crash_window_restarts,
            window_ms: i64::try_from(health.crash_window_s.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }
}

/// Crashes over time, per process, from successive reads of the list.
///
/// A crash is a restart that no call asked for. PM2 counts both in `restart_time`,
/// but every restart a client asks for (`pm2 restart`, `pm2 reload`, an apply, a heal)
/// first resets the process's `created_at` to the time of the call (`God.resetState`),
/// while the daemon's own restart after an exit keeps it. So between two reads the
/// crashes are the new restarts, less one if `created_at` moved. This counts restarts
/// PM2 itself does not count toward `max_restarts` (those after `min_uptime`), and
/// never counts a human's restarts. (Two human restarts between two reads would count
/// as one crash; `watch` reads at every bus event, a few hundred ms apart.)
#[derive(Debug, Default)]
pub struct CrashCounter {
    tracks: BTreeMap<u64, Track>,
}

#[derive(Debug)]
struct Track {
    name: String,
    restarts: u64,
    created_at: Option<i64>,
    /// (ms since the epoch, crashes seen then).
    seen: VecDeque<(i64, u64)>,
}

impl CrashCounter {
    /// Takes in one read, keeping what was seen within `keep_ms`. Processes gone from
    /// the list are forgotten; a `pm_id` that now has another name starts afresh (PM2
    /// reuses ids).
    pub fn observe(&mut self, live: &LiveState, keep_ms: i64) {
        let now = live.read_at_ms;
        self.tracks.retain(|id, t| live.get(*id).is_some_and(|p| p.name == t.name));
        for p in &live.processes {
            let track = self.tracks.entry(p.pm_id).or_insert_with(|| Track {
                name: p.name.clone(),
                restarts: p.restarts,
                created_at: p.created_at_ms,
                seen: VecDeque::new(),
            });
            let crashes = crashes_between(track.restarts, track.created_at, p.restarts, p.created_at_ms);
            if asked_between(track.created_at, p.created_at_ms) {
                // A restart asked for (a fix, a heal, a deploy) starts the count afresh.
                track.seen.clear();
            }
            if crashes > 0 {
                track.seen.push_back((now, crashes));
            }
            track.restarts = p.restarts;
            track.created_at = p.created_at_ms;
            while track.seen.front().is_some_and(|(at, _)| now - at > keep_ms) {
                track.seen.pop_front();
            }
        }
    }

    /// Crashes of `pm_id` seen within `window_ms` before `now`.
    pub fn recent(&self, pm_id: u64, now: i64, window_ms: i64) -> u64 {
        self.tracks.get(&pm_id).map_or(0, |t| t.seen.iter().filter(|(at, _)| now - at <= window_ms).map(|(_, n)| n).sum())
    }
}

/// Crashes between two observations of one process (see [`CrashCounter`]).
pub fn crashes_between(restarts: u64, created_at: Option<i64>, now_restarts: u64, now_created_at: Option<i64>) -> u64 {
    let new = now_restarts.saturating_sub(restarts);
    if asked_between(created_at, now_created_at) { new.saturating_sub(1) } else { new }
}

/// Whether a restart was asked for between two observations: `created_at` moved to a
/// later time. (`null` after "restart overlimit" is PM2 giving up, not a call.)
fn asked_between(created_at: Option<i64>, now_created_at: Option<i64>) -> bool {
    matches!((created_at, now_created_at), (Some(a), Some(b)) if b > a) || (created_at.is_none() && now_created_at.is_some())
}

// ---------------------------------------------------------------------------
// The health gate.

/// PM2's `listen_timeout` when the app sets none (`GRACEFUL_LISTEN_TIMEOUT`, constants.js).
pub const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 3000;
/// PM2's `min_uptime` when the app sets none (constants.js).
pub const DEFAULT_MIN_UPTIME_MS: u64 = 1000;

/// What the gate asks of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateRule {
    /// The app's `min_uptime`: time online (not launching, not waiting to restart).
    pub min_uptime_ms: u64,
    /// The app's `wait_ready`: it must signal ready (`process.send('ready')`).
    pub wait_ready: bool,
    /// The app's `listen_timeout`: after it PM2 marks a `wait_ready` app online
    /// without the signal. The gate does not.
    pub listen_timeout_ms: u64,
    /// `[health] settle_ms`: after `min_uptime`, no crash for this long.
    pub settle_ms: u64,
    /// The app's `autorestart` (an exit of an app without it is final).
    pub autorestart: bool,
}

impl GateRule {
    /// The rule for an app's options (`min_uptime`, `wait_ready`, `listen_timeout`,
    /// `autorestart`, as PM2 reads them) and a settle window.
    pub fn for_options(options: &BTreeMap<String, serde_json::Value>, settle_ms: u64) -> Self {
        use super::model::as_u64;
        let flag = |key: &str, default: bool| match options.get(key) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s != "false",
            Some(serde_json::Value::Null) | None => default,
            Some(_) => true,
        };
        Self {
            min_uptime_ms: options.get("min_uptime").and_then(as_u64).unwrap_or(DEFAULT_MIN_UPTIME_MS),
            wait_ready: flag("wait_ready", false),
            listen_timeout_ms: options.get("listen_timeout").and_then(as_u64).unwrap_or(DEFAULT_LISTEN_TIMEOUT_MS),
            settle_ms,
            autorestart: flag("autorestart", true),
        }
    }

    /// How long the gate may take at most, beyond `slack`: the listen timeout (for a
    /// `wait_ready` app), `min_uptime` and the settle window.
    pub fn budget_ms(&self, slack_ms: u64) -> u64 {
        let listen = if self.wait_ready { self.listen_timeout_ms } else { 0 };
        listen.saturating_add(self.min_uptime_ms).saturating_add(self.settle_ms).saturating_add(slack_ms)
    }
}

/// One observation of a process, from one read of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the list was read (ms since the epoch; the daemon runs on this host).
    pub at_ms: i64,
    pub status: ProcessStatus,
    pub pid: Option<u32>,
    pub restarts: u64,
    /// `pm_uptime`: when this process was spawned.
    pub started_at_ms: Option<i64>,
    /// `created_at`: moved by every restart a client asks for, kept by a crash.
    pub created_at_ms: Option<i64>,
}

impl Sample {
    /// The sample of `pm_id` in a read, if it is there with the expected name.
    pub fn of(state: &LiveState, pm_id: u64, name: &str) -> Option<Self> {
        state.get(pm_id).filter(|p| p.name == name).map(|p| Self {
            at_ms: state.read_at_ms,
            status: p.status.clone(),
            pid: p.pid,
            restarts: p.restarts,
            started_at_ms: p.started_at_ms,
            created_at_ms: p.created_at_ms,
        })
    }
}

/// Why a process failed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateFault {
    /// It is no longer in the list.
    Gone,
    /// It exited and PM2 restarted it (or is about to). `online_ms`: how long the
    /// generation that died had been online when last seen.
    Crashed { crashes: u64, online_ms: Option<u64>, min_uptime_ms: u64, settle_ms: u64 },
    /// PM2 gave up on it (`errored`).
    Errored,
    /// Someone stopped it (`pm2 stop`: its pid cleared, no restart): not a crash.
    StoppedByHand,
    /// Someone restarted it (`pm2 restart`: its `created_at` moved): not a crash.
    RestartedByHand,
    /// It exited and `autorestart` is off.
    Exited,
    /// A `wait_ready` app that did not signal ready within `listen_timeout`.
    NotReady { listen_timeout_ms: u64 },
    /// It did not get through the gate in time (launching, stopping...).
    TooSlow { status: String, waited_ms: u64 },
}

impl GateFault {
    /// Whether the process crashed (as opposed to being stopped or never ready).
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed { .. } | Self::Errored | Self::Exited)
    }

    /// A short label: `crashed`, `errored`, `stopped`, `exited`, `not ready`, `gone`, `too slow`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Crashed { .. } => "crashed",
            Self::Errored => "errored",
            Self::StoppedByHand => "stopped",
            Self::RestartedByHand => "restarted",
            Self::Exited => "exited",
            Self::NotReady { .. } => "not ready",
            Self::TooSlow { .. } => "too slow",
        }
    }
}

impl std::fmt::Display for GateFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => write!(f, "gone: the process disappeared from the list"),
            Self::Crashed { crashes, online_ms, min_uptime_ms, settle_ms } => {
                write!(f, "crashed: restarted {crashes} time(s)")?;
                match online_ms {
                    Some(ms) if ms >= min_uptime_ms => write!(
                        f,
                        " after {ms} ms online, past its min_uptime ({min_uptime_ms} ms) but within the settle window ({settle_ms} ms); PM2 does not count such restarts toward max_restarts"
                    ),
                    Some(ms) => write!(f, " after {ms} ms online, within its min_uptime ({min_uptime_ms} ms)"),
                    None => write!(f, " before it stayed online"),
                }
            }
            Self::Errored => write!(f, "errored: PM2 gave up restarting it"),
            Self::StoppedByHand => write!(f, "stopped by someone else during the gate (not a crash)"),
            Self::RestartedByHand => write!(f, "restarted by someone else during the gate (not a crash); judge it with another apply"),
            Self::Exited => write!(f, "exited (autorestart is off)"),
            Self::NotReady { listen_timeout_ms } => write!(
                f,
                "not ready: wait_ready is set and it did not signal ready (process.send('ready')) within its listen_timeout ({listen_timeout_ms} ms); PM2 marks it online anyway, the gate does not"
            ),
            Self::TooSlow { status, waited_ms } => write!(f, "did not pass the gate within {waited_ms} ms (still {status})"),
        }
    }
}

/// The gate's verdict on one process after a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    Wait,
    /// Online for `min_uptime` plus the settle window without a crash (and ready).
    Healthy { online_ms: u64 },
    Failed(GateFault),
}

/// What the gate has seen of one process: fed each read's [`Sample`] (and any
/// `ready` signal from the bus), it says when the process is healthy or why not.
///
/// The rule: healthy once it has been **online** — not launching, not waiting to
/// restart — for `min_uptime` plus `settle_ms`, without a crash; a `wait_ready` app
/// only counts as online once it has signalled ready. Time online is measured from the
/// process's own `pm_uptime` (the daemon's spawn time); when it was seen `launching`
/// first (a `wait_ready` app, a cluster worker), from the ready signal or the first
/// read that showed it online.
#[derive(Debug, Clone)]
pub struct GateWatch {
    rule: GateRule,
    /// The restart count right after the call; more means it crashed since.
    baseline: Option<u64>,
    /// ms since the epoch after which it fails as too slow.
    deadline_ms: i64,
    started_ms: i64,
    /// `pm_uptime` of the process being judged.
    generation: Option<i64>,
    /// `created_at` at the first sample.
    created_at: Option<Option<i64>>,
    launching_seen: bool,
    online_since: Option<i64>,
    ready_at: Option<i64>,
    last_online_ms: Option<u64>,
}

impl GateWatch {
    /// Starts judging at `now_ms`; `baseline` is the restart count right after the call
    /// when it is known (otherwise the first sample's).
    pub fn new(rule: GateRule, baseline: Option<u64>, now_ms: i64, slack_ms: u64) -> Self {
        let budget = i64::try_from(rule.budget_ms(slack_ms)).unwrap_or(i64::MAX);
        Self {
            rule,
            baseline,
            deadline_ms: now_ms.saturating_add(budget),
            started_ms: now_ms,
            generation: None,
            created_at: None,
            launching_seen: false,
            online_since: None,
            ready_at: None,
            last_online_ms: None,
        }
    }

    /// The rule it judges by.
    pub fn rule(&self) -> GateRule {
        self.rule
    }

    /// The process signalled ready at `at_ms` (a `process:msg` of `ready` on the bus).
    pub fn ready(&mut self, at_ms: i64) {
        if self.ready_at.is_none() {
            self.ready_at = Some(at_ms);
        }
    }

    /// Judges one sample (`None`: not in the list).
    pub fn observe(&mut self, sample: Option<&Sample>) -> GateVerdict {
        let Some(s) = sample else { return GateVerdict::Failed(GateFault::Gone) };
        let baseline = *self.baseline.get_or_insert(s.restarts);
        let crashed = |crashes: u64, me: &Self| GateFault::Crashed {
            crashes: crashes.max(1),
            online_ms: me.last_online_ms,
            min_uptime_ms: me.rule.min_uptime_ms,
            settle_ms: me.rule.settle_ms,
        };
        let created_at = *self.created_at.get_or_insert(s.created_at_ms);
        if s.restarts > baseline {
            if asked_between(created_at, s.created_at_ms) {
                return GateVerdict::Failed(GateFault::RestartedByHand);
            }
            return GateVerdict::Failed(crashed(s.restarts - baseline, self));
        }
        if let (Some(g), Some(now)) = (self.generation, s.started_at_ms)
            && now != g
            && s.status == ProcessStatus::Online
        {
            // Respawned without the count moving: a crash all the same.
            return GateVerdict::Failed(crashed(1, self));
        }
        match s.status {
            ProcessStatus::Errored => return GateVerdict::Failed(GateFault::Errored),
            ProcessStatus::WaitingRestart => return GateVerdict::Failed(crashed(1, self)),
            // An exit: PM2 clears the pid only when the stop was asked for (or the
            // app does not restart); a crash keeps it until the respawn.
            ProcessStatus::Stopped if s.pid.is_some() && self.rule.autorestart => return GateVerdict::Failed(crashed(1, self)),
            ProcessStatus::Stopped if !self.rule.autorestart => return GateVerdict::Failed(GateFault::Exited),
            ProcessStatus::Stopped => return GateVerdict::Failed(GateFault::StoppedByHand),
            ProcessStatus::Launching => {
                if self.generation != s.started_at_ms {
                    self.generation = s.started_at_ms;
                    self.online_since = None;
                }
                self.launching_seen = true;
            }
            ProcessStatus::Online => {
                if self.generation != s.started_at_ms {
                    self.generation = s.started_at_ms;
                    self.online_since = None;
                }
                let spawned = s.started_at_ms.unwrap_or(s.at_ms);
                if self.online_since.is_none() {
                    let since = match self.ready_at {
                        Some(ready) => ready.max(spawned),
                        // Time in `launching` is not time online: from the first read
                        // that showed it online (a `wait_ready` app is launching until ready).
                        None if self.launching_seen || self.rule.wait_ready => s.at_ms,
                        None => spawned,
                    };
                    // Online before its listen_timeout: only the ready signal does that.
                    if self.rule.wait_ready
                        && self.ready_at.is_none()
                        && s.at_ms.saturating_sub(spawned) < i64::try_from(self.rule.listen_timeout_ms).unwrap_or(i64::MAX)
                    {
                        self.ready_at = Some(since);
                    }
                    self.online_since = Some(since);
                }
                if self.rule.wait_ready && self.ready_at.is_none() {
                    return GateVerdict::Failed(GateFault::NotReady { listen_timeout_ms: self.rule.listen_timeout_ms });
                }
                let since = self.online_since.unwrap_or(spawned);
                let online = u64::try_from(s.at_ms.saturating_sub(since)).unwrap_or(0);
                self.last_online_ms = Some(online);
                if online >= self.rule.min_uptime_ms.saturating_add(self.rule.settle_ms) {
                    return GateVerdict::Healthy { online_ms: online };
                }
            }
            _ => {}
        }
        if s.at_ms >= self.deadline_ms {
            let waited_ms = u64::try_from(s.at_ms.saturating_sub(self.started_ms)).unwrap_or(0);
            return GateVerdict::Failed(GateFault::TooSlow { status: s.status.as_str().to_string(), waited_ms });
        }
        GateVerdict::Wait
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

    const RULE: GateRule = GateRule { min_uptime_ms: 5000, wait_ready: false, listen_timeout_ms: 3000, settle_ms: 5000, autorestart: true };

    fn sample(at_ms: i64, status: ProcessStatus, restarts: u64, started: i64) -> Sample {
        let pid = matches!(status, ProcessStatus::Online | ProcessStatus::Launching).then_some(42);
        Sample { at_ms, status, pid, restarts, started_at_ms: Some(started), created_at_ms: Some(0) }
    }

    fn run(watch: &mut GateWatch, samples: &[Sample]) -> GateVerdict {
        let mut last = GateVerdict::Wait;
        for s in samples {
            last = watch.observe(Some(s));
            if last != GateVerdict::Wait {
                return last;
            }
        }
        last
    }

    #[test]
    fn the_gate_passes_after_min_uptime_plus_the_settle_window_measured_from_pm_uptime() {
        let mut w = GateWatch::new(RULE, Some(0), 1_000, 15_000);
        // Spawned at 900 (before our clock started the gate): time counts from pm_uptime.
        let online = |at| sample(at, ProcessStatus::Online, 0, 900);
        assert_eq!(run(&mut w, &[online(1_000), online(6_000), online(10_800)]), GateVerdict::Wait);
        assert_eq!(w.observe(Some(&online(10_900))), GateVerdict::Healthy { online_ms: 10_000 });
    }

    #[test]
    fn a_crash_after_min_uptime_within_the_settle_window_fails_the_gate() {
        // The late crasher: online 6 s, then dies; min_uptime 5000 has passed.
        let mut w = GateWatch::new(RULE, Some(0), 0, 15_000);
        let v = run(&mut w, &[sample(100, ProcessStatus::Online, 0, 0), sample(5_900, ProcessStatus::Online, 0, 0), sample(6_100, ProcessStatus::Online, 1, 6_050)]);
        let GateVerdict::Failed(fault) = v else { panic!("{v:?}") };
        assert_eq!(fault, GateFault::Crashed { crashes: 1, online_ms: Some(5_900), min_uptime_ms: 5000, settle_ms: 5000 });
        assert!(fault.to_string().contains("within the settle window"), "{fault}");
        // Seen between the exit and the respawn: still a crash (pid kept, not cleared).
        let mut w = GateWatch::new(RULE, Some(0), 0, 15_000);
        let exit = Sample { at_ms: 6_010, status: ProcessStatus::Stopped, pid: Some(42), restarts: 0, started_at_ms: Some(0), created_at_ms: Some(0) };
        assert!(matches!(run(&mut w, &[sample(100, ProcessStatus::Online, 0, 0), exit]), GateVerdict::Failed(GateFault::Crashed { .. })));
        let mut w = GateWatch::new(RULE, Some(0), 0, 15_000);
        let waiting = sample(6_010, ProcessStatus::WaitingRestart, 0, 0);
        assert!(matches!(run(&mut w, &[waiting]), GateVerdict::Failed(GateFault::Crashed { .. })));
    }

    #[test]
    fn a_manual_stop_during_the_gate_is_not_a_crash() {
        let mut w = GateWatch::new(RULE, Some(0), 0, 15_000);
        let stopped = Sample { at_ms: 2_000, status: ProcessStatus::Stopped, pid: None, restarts: 0, started_at_ms: Some(0), created_at_ms: Some(0) };
        let v = run(&mut w, &[sample(100, ProcessStatus::Online, 0, 0), stopped.clone()]);
        assert_eq!(v, GateVerdict::Failed(GateFault::StoppedByHand));
        assert!(!GateFault::StoppedByHand.is_crash());
        // A restart by hand moves created_at: not a crash either.
        let mut w = GateWatch::new(RULE, Some(0), 0, 15_000);
        let restarted = Sample { at_ms: 2_000, status: ProcessStatus::Online, pid: Some(43), restarts: 1, started_at_ms: Some(1_900), created_at_ms: Some(1_900) };
        assert_eq!(run(&mut w, &[sample(100, ProcessStatus::Online, 0, 0), restarted]), GateVerdict::Failed(GateFault::RestartedByHand));
        // Without autorestart the same exit is the app's own.
        let mut w = GateWatch::new(GateRule { autorestart: false, ..RULE }, Some(0), 0, 15_000);
        assert_eq!(w.observe(Some(&stopped)), GateVerdict::Failed(GateFault::Exited));
    }

    #[test]
    fn time_in_launching_is_not_uptime_and_wait_ready_needs_the_signal() {
        let rule = GateRule { wait_ready: true, min_uptime_ms: 1000, settle_ms: 1000, ..RULE };
        // Launching for 2.5 s, ready (online) at 2.5 s: online time counts from then.
        let mut w = GateWatch::new(rule, Some(0), 0, 15_000);
        let v = run(&mut w, &[sample(100, ProcessStatus::Launching, 0, 0), sample(2_500, ProcessStatus::Online, 0, 0), sample(4_400, ProcessStatus::Online, 0, 0)]);
        assert_eq!(v, GateVerdict::Wait);
        assert_eq!(w.observe(Some(&sample(4_500, ProcessStatus::Online, 0, 0))), GateVerdict::Healthy { online_ms: 2_000 });
        // Never ready: PM2 marks it online at listen_timeout; the gate fails it.
        let mut w = GateWatch::new(rule, Some(0), 0, 15_000);
        let v = run(&mut w, &[sample(100, ProcessStatus::Launching, 0, 0), sample(3_050, ProcessStatus::Online, 0, 0)]);
        assert_eq!(v, GateVerdict::Failed(GateFault::NotReady { listen_timeout_ms: 3000 }));
        // ... unless the bus carried its ready signal just before the timeout.
        let mut w = GateWatch::new(rule, Some(0), 0, 15_000);
        w.ready(2_990);
        let v = run(&mut w, &[sample(3_050, ProcessStatus::Online, 0, 0), sample(5_000, ProcessStatus::Online, 0, 0)]);
        assert_eq!(v, GateVerdict::Healthy { online_ms: 2_010 });
    }

    #[test]
    fn errored_gone_and_too_slow_fail() {
        let mut w = GateWatch::new(RULE, Some(0), 0, 1_000);
        assert_eq!(w.observe(None), GateVerdict::Failed(GateFault::Gone));
        assert_eq!(w.observe(Some(&sample(10, ProcessStatus::Errored, 0, 0))), GateVerdict::Failed(GateFault::Errored));
        let v = w.observe(Some(&sample(11_000, ProcessStatus::Launching, 0, 0)));
        assert!(matches!(v, GateVerdict::Failed(GateFault::TooSlow { waited_ms: 11_000, .. })), "{v:?}");
    }

    #[test]
    fn crashes_are_restarts_no_call_asked_for() {
        // A crash keeps created_at; a restart asked for (pm2 restart, apply) moves it.
        assert_eq!(crashes_between(3, Some(100), 5, Some(100)), 2);
        assert_eq!(crashes_between(3, Some(100), 4, Some(900)), 0);
        assert_eq!(crashes_between(3, Some(100), 6, Some(900)), 2);
        assert_eq!(crashes_between(3, Some(100), 0, Some(900)), 0, "pm2 reset");
        let mut c = CrashCounter::default();
        let mut p = state(json!([{"pm_id": 1, "name": "w", "pm2_env": {"status": "online", "restart_time": 0, "created_at": 10}}]), 1_000).processes.remove(0);
        let mut read = |restarts: u64, created: i64, at: i64, c: &mut CrashCounter| {
            p.restarts = restarts;
            p.created_at_ms = Some(created);
            let mut s = state(json!([]), at);
            s.processes.push(p.clone());
            c.observe(&s, 60_000);
            c.recent(1, at, 60_000)
        };
        assert_eq!(read(0, 10, 1_000, &mut c), 0);
        // A human restarts it six times: not one crash.
        for i in 1..=6 {
            assert_eq!(read(i, 1_000 + i as i64 * 1_000, 1_000 + i as i64 * 1_000, &mut c), 0);
        }
        // Then it loops on its own (created_at stays).
        assert_eq!(read(9, 7_000, 8_000, &mut c), 3);
        assert_eq!(read(9, 7_000, 9_000, &mut c), 3, "still within the window");
        // Fixed and restarted on purpose: the count starts afresh.
        assert_eq!(read(10, 9_500, 10_000, &mut c), 0);
        assert_eq!(read(11, 9_500, 11_000, &mut c), 1);
        assert_eq!(read(11, 9_500, 80_000, &mut c), 0, "the window passed");
    }
}
