//! Drift: how the live daemon differs from the desired state, as a set keyed by
//! (namespace, app, kind). The watcher keeps the previous set and reports only what
//! started and what cleared, so a drift is told once when it begins and once when it
//! ends, not on every read. Pure: plans, live lists and timestamps in, sets out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::live::health::{CrashCounter, CrashRule};
use crate::live::{LiveState, ProcessStatus};
use crate::plan::model::Reason;
use crate::plan::{Action, AttributeChange, Plan};

/// What kind of drift (the `reason` of a `drift` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Live attributes differ from the desired spec (a hand restart with other env or
    /// options, or a desired-state edit not yet applied).
    Attributes,
    /// Desired, not live.
    Missing,
    /// Live in an owned namespace, not desired.
    Unmanaged,
    /// An owned process is stopped.
    Stopped,
    /// An owned process is errored (PM2 gave up restarting it).
    Errored,
    /// An owned process crashed (restarts no call asked for) more than `[health]
    /// crash_window_restarts` times within `crash_window_s` ([`CrashRule`]).
    CrashLoop,
    /// An owned app differs from PM2's dump: a reboot (`pm2 resurrect`) would not
    /// bring it back as it runs now (`[pm2] save`).
    Unsaved,
}

impl DriftKind {
    /// Every kind, for metrics that show zeros too.
    pub const ALL: [DriftKind; 7] =
        [Self::Attributes, Self::Missing, Self::Unmanaged, Self::Stopped, Self::Errored, Self::CrashLoop, Self::Unsaved];

    /// The name in output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attributes => "attributes",
            Self::Missing => "missing",
            Self::Unmanaged => "unmanaged",
            Self::Stopped => "stopped",
            Self::Errored => "errored",
            Self::CrashLoop => "crash_loop",
            Self::Unsaved => "unsaved",
        }
    }

    /// Found by comparing with the desired state (as opposed to the live list alone).
    pub fn needs_plan(self) -> bool {
        matches!(self, Self::Attributes | Self::Missing | Self::Unmanaged)
    }
}

/// One drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub app: String,
    pub namespace: String,
    pub reason: DriftKind,
    /// In words.
    pub detail: String,
    /// The live processes concerned (empty for `missing`).
    pub pm_ids: Vec<u64>,
    /// For `attributes`: what differs, desired as `after` (secrets redacted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
    /// What an apply would do about it, when the plan has a change for the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// (namespace, app, kind).
pub type DriftKey = (String, String, DriftKind);
/// The drift at one moment.
pub type DriftSet = BTreeMap<DriftKey, Drift>;

impl Drift {
    /// Its key in a [`DriftSet`].
    pub fn key(&self) -> DriftKey {
        (self.namespace.clone(), self.app.clone(), self.reason)
    }
}

/// Drift found by comparing with the desired state: one entry per changed app.
/// A `NotRunning` change is left to [`from_live`] (stopped or errored say more).
pub fn from_plan(plan: &Plan) -> Vec<Drift> {
    let mut out = Vec::new();
    for change in plan.changes.iter().filter(|c| c.action != Action::Noop) {
        let (reason, detail) = match (change.action, change.reason) {
            (_, Some(Reason::NotRunning)) => continue,
            (Action::Create, _) => (DriftKind::Missing, "desired, but not live".to_string()),
            (Action::Delete, _) => (
                DriftKind::Unmanaged,
                "live in an owned namespace but not desired ([safety] prune is on: apply deletes it)".to_string(),
            ),
            (action, _) => {
                let paths: Vec<&str> = change.attributes.iter().map(|a| a.path.as_str()).collect();
                let how = match action {
                    Action::Replace => "apply replaces it",
                    Action::Scale => "apply scales it",
                    _ => "apply updates it in place",
                };
                (DriftKind::Attributes, format!("differs from the desired state in {} ({how})", paths.join(", ")))
            }
        };
        out.push(Drift {
            app: change.name.clone(),
            namespace: change.namespace.clone(),
            reason,
            detail,
            pm_ids: change.pm_ids.clone(),
            attributes: if reason == DriftKind::Attributes { change.attributes.clone() } else { Vec::new() },
            action: Some(change.action),
        });
    }
    let mut unmanaged: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    for u in &plan.unmanaged {
        unmanaged.entry((u.namespace.as_str(), u.name.as_str())).or_default().push(u.pm_id);
    }
    for ((namespace, name), pm_ids) in unmanaged {
        out.push(Drift {
            app: name.to_string(),
            namespace: namespace.to_string(),
            reason: DriftKind::Unmanaged,
            detail: "live in an owned namespace but not desired (prune is off: it is left alone)".into(),
            pm_ids,
            attributes: Vec::new(),
            action: None,
        });
    }
    out
}

/// Drift seen in the live list alone: owned processes stopped, errored, or
/// crash-looping (by the crashes `crashes` counted over the reads).
pub fn from_live(live: &LiveState, owned: &[String], crashes: &CrashCounter, crash: CrashRule) -> Vec<Drift> {
    #[derive(Default)]
    struct Group {
        stopped: Vec<u64>,
        errored: Vec<u64>,
        all: Vec<u64>,
        recent_restarts: u64,
    }
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();
    for p in live.processes.iter().filter(|p| owned.contains(&p.namespace)) {
        let g = groups.entry((p.namespace.as_str(), p.name.as_str())).or_default();
        g.all.push(p.pm_id);
        match p.status {
            ProcessStatus::Stopped => g.stopped.push(p.pm_id),
            ProcessStatus::Errored => g.errored.push(p.pm_id),
            _ => {}
        }
        g.recent_restarts += crashes.recent(p.pm_id, live.read_at_ms, crash.window_ms);
    }
    let mut out = Vec::new();
    for ((namespace, name), g) in groups {
        let drift = |reason, detail: String, pm_ids: Vec<u64>| Drift {
            app: name.to_string(),
            namespace: namespace.to_string(),
            reason,
            detail,
            pm_ids,
            attributes: Vec::new(),
            action: None,
        };
        if !g.stopped.is_empty() {
            out.push(drift(DriftKind::Stopped, format!("{} of {} process(es) stopped", g.stopped.len(), g.all.len()), g.stopped));
        }
        if !g.errored.is_empty() {
            let detail = format!(
                "{} of {} process(es) errored: PM2 gave up restarting (max_restarts reached, or it failed to start)",
                g.errored.len(),
                g.all.len()
            );
            out.push(drift(DriftKind::Errored, detail, g.errored));
        }
        if g.recent_restarts > crash.max_crashes {
            let detail = format!(
                "crashed {} times within {} s (more than {}): it is crash-looping; check its error log",
                g.recent_restarts,
                crash.window_ms / 1000,
                crash.max_crashes
            );
            out.push(drift(DriftKind::CrashLoop, detail, g.all));
        }
    }
    out
}

/// Drift between the live list and PM2's dump: one `unsaved` per owned app a
/// reboot would not bring back as it runs (see [`crate::apply::dump::unsaved`]).
pub fn from_dump(unsaved: &[crate::apply::dump::Unsaved]) -> Vec<Drift> {
    unsaved
        .iter()
        .map(|u| Drift {
            app: u.name.clone(),
            namespace: u.namespace.clone(),
            reason: DriftKind::Unsaved,
            detail: u.detail.clone(),
            pm_ids: u.pm_ids.clone(),
            attributes: Vec::new(),
            action: None,
        })
        .collect()
}

/// Crash loops of apps outside the owned namespaces, by (namespace, app): the same
/// rule as [`DriftKind::CrashLoop`], for reports only.
pub fn foreign_loops(live: &LiveState, owned: &[String], crashes: &CrashCounter, crash: CrashRule) -> BTreeMap<(String, String), (Vec<u64>, String)> {
    let mut groups: BTreeMap<(String, String), (Vec<u64>, u64)> = BTreeMap::new();
    for p in live.processes.iter().filter(|p| !owned.contains(&p.namespace)) {
        let g = groups.entry((p.namespace.clone(), p.name.clone())).or_default();
        g.0.push(p.pm_id);
        g.1 += crashes.recent(p.pm_id, live.read_at_ms, crash.window_ms);
    }
    groups
        .into_iter()
        .filter(|(_, (_, n))| *n > crash.max_crashes)
        .map(|(k, (ids, n))| {
            let detail = format!("crashed {n} times within {} s (more than {}): it is crash-looping", crash.window_ms / 1000, crash.max_crashes);
            (k, (ids, detail))
        })
        .collect()
}

/// What started and what cleared between two sets.
#[derive(Debug, Default, PartialEq)]
pub struct Transitions {
    pub started: Vec<Drift>,
    pub cleared: Vec<Drift>,
}

/// Compares the previous set with the new one. A drift that goes on (same key) is
/// neither, whatever its detail says now.
pub fn transitions(old: &DriftSet, new: &DriftSet) -> Transitions {
    Transitions {
        started: new.iter().filter(|(k, _)| !old.contains_key(*k)).map(|(_, d)| d.clone()).collect(),
        cleared: old.iter().filter(|(k, _)| !new.contains_key(*k)).map(|(_, d)| d.clone()).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::project::SafetySection;
    use crate::redact::Redactor;
    use crate::testing::{desired, foreign, live, live_of};

    const CRASH: CrashRule = CrashRule { max_crashes: 3, window_ms: 60_000 };

    fn owned() -> Vec<String> {
        vec!["mine".into()]
    }

    fn app(name: &str, args: &str) -> serde_json::Value {
        json!({"name": name, "namespace": "mine", "script": "s.js", "args": args, "env": {"API_TOKEN": "t0"}})
    }

    fn set(drifts: Vec<Drift>) -> DriftSet {
        drifts.into_iter().map(|d| (d.key(), d)).collect()
    }

    #[test]
    fn plan_changes_become_attribute_missing_and_unmanaged_drift() {
        let running = desired(json!([app("web", "1"), app("api", "1")]));
        let mut state = live(vec![live_of(&running[0], 0), live_of(&running[1], 1), foreign("stock", "theirs", 2)]);
        let mut extra = foreign("leftover", "mine", 3);
        extra.namespace = "mine".into();
        state.processes.push(extra);
        state.processes[1].status = ProcessStatus::Stopped;
        let wanted = desired(json!([app("web", "2"), app("api", "1"), app("new", "1")]));
        let plan = crate::plan::diff(&wanted, &state, &owned(), &SafetySection::default(), &Redactor::new(&["*TOKEN*".into()])).unwrap();
        let drifts = set(from_plan(&plan));
        let keys: Vec<(&str, DriftKind)> = drifts.values().map(|d| (d.app.as_str(), d.reason)).collect();
        assert_eq!(keys, [("leftover", DriftKind::Unmanaged), ("new", DriftKind::Missing), ("web", DriftKind::Attributes)]);
        let web = &drifts[&("mine".into(), "web".into(), DriftKind::Attributes)];
        assert_eq!(web.attributes[0].path, "args");
        assert!(web.detail.contains("args") && web.detail.contains("in place"), "{}", web.detail);
        // The stopped api is a plan change (restart) but is reported from the live list.
        let live_drift = from_live(&state, &owned(), &CrashCounter::default(), CRASH);
        assert_eq!(live_drift.len(), 1);
        assert_eq!((live_drift[0].app.as_str(), live_drift[0].reason), ("api", DriftKind::Stopped));
    }

    #[test]
    fn foreign_processes_never_drift() {
        let mut state = live(vec![foreign("stock", "theirs", 0)]);
        state.processes[0].status = ProcessStatus::Errored;
        assert!(from_live(&state, &owned(), &CrashCounter::default(), CRASH).is_empty());
    }

    #[test]
    fn a_crash_loop_is_restarts_within_the_window_and_clears_after_it() {
        let mut p = foreign("loopy", "mine", 7);
        p.namespace = "mine".into();
        let mut windows = CrashCounter::default();
        let mut read = |restarts: u64, at: i64, windows: &mut CrashCounter| {
            p.restarts = restarts;
            let mut state = live(vec![p.clone()]);
            state.read_at_ms = at;
            windows.observe(&state, CRASH.window_ms);
            from_live(&state, &owned(), windows, CRASH)
        };
        // Many restarts before the watcher started do not count: only what it sees.
        assert!(read(500, 0, &mut windows).is_empty());
        assert!(read(502, 1_000, &mut windows).is_empty());
        let looping = read(504, 2_000, &mut windows);
        assert_eq!(looping.len(), 1);
        assert_eq!(looping[0].reason, DriftKind::CrashLoop);
        assert!(looping[0].detail.contains("crashed 4 times within 60 s"), "{}", looping[0].detail);
        assert_eq!(read(504, 30_000, &mut windows).len(), 1, "still within the window");
        assert!(read(504, 62_000, &mut windows).is_empty(), "the window passed without restarts");
    }

    #[test]
    fn transitions_report_each_drift_once_when_it_starts_and_once_when_it_clears() {
        let d = |app: &str, reason| Drift {
            app: app.into(),
            namespace: "mine".into(),
            reason,
            detail: String::new(),
            pm_ids: vec![],
            attributes: vec![],
            action: None,
        };
        let a = set(vec![d("web", DriftKind::Stopped)]);
        let mut b = set(vec![d("web", DriftKind::Stopped), d("api", DriftKind::Missing)]);
        let t = transitions(&a, &b);
        assert_eq!(t.started.len(), 1);
        assert_eq!(t.started[0].app, "api");
        assert!(t.cleared.is_empty());
        // Same keys, other detail: nothing new.
        for drift in b.values_mut() {
            drift.detail = "changed".into();
        }
        assert_eq!(transitions(&set(vec![d("web", DriftKind::Stopped), d("api", DriftKind::Missing)]), &b), Transitions::default());
        let t = transitions(&b, &a);
        assert_eq!((t.started.len(), t.cleared.len()), (0, 1));
        assert_eq!(t.cleared[0].reason, DriftKind::Missing);
    }
}
