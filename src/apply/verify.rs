//! Checks around an apply: that nothing outside the owned namespaces changed
//! (promise 7), and that a saved plan still describes the world (promise 8).

use crate::live::LiveState;
use crate::plan::{Basis, LiveMark};

/// How the processes outside the owned namespaces fared during an apply.
#[derive(Debug, Default, PartialEq)]
pub struct Bystanders {
    /// Changes some call made (a restart or stop asked for, a delete): each fails the apply.
    pub problems: Vec<String>,
    /// Changes the process made by itself (it crashed and PM2 restarted it): reported
    /// with their figures, but no call of ours could have made them.
    pub warnings: Vec<String>,
}

/// Every process outside `owned` that was live before must have the same pid,
/// restart count and status after. A difference that a call made is a problem; one
/// the process made by itself is a warning. They are told apart as [`crate::live::health::CrashCounter`]
/// does: every restart or stop asked for moves `created_at` or clears the pid, a crash
/// and PM2's own restart after it do neither.
pub fn bystanders(before: &LiveState, after: &LiveState, owned: &[String]) -> Bystanders {
    use crate::live::ProcessStatus;
    let mut out = Bystanders::default();
    for old in before.processes.iter().filter(|p| !owned.contains(&p.namespace)) {
        let label = format!("`{}` (pm_id {}, namespace `{}`)", old.name, old.pm_id, old.namespace);
        let Some(new) = after.get(old.pm_id).filter(|n| n.name == old.name) else {
            out.problems.push(format!("{label} is gone"));
            continue;
        };
        let mut what = Vec::new();
        if new.pid != old.pid {
            what.push(format!("pid {} became {}", show(old.pid), show(new.pid)));
        }
        if new.restarts != old.restarts {
            what.push(format!("restarts {} became {}", old.restarts, new.restarts));
        }
        if new.status != old.status {
            what.push(format!("status {} became {}", old.status.as_str(), new.status.as_str()));
        }
        if what.is_empty() {
            continue;
        }
        let asked = new.created_at_ms != old.created_at_ms && new.created_at_ms.is_some()
            || new.restarts < old.restarts
            || (new.status == ProcessStatus::Stopped && new.pid.is_none() && old.status != ProcessStatus::Stopped);
        if asked {
            out.problems.push(format!("{label}: {}", what.join(", ")));
        } else {
            let already = if old.unstable_restarts > 0 || old.status != ProcessStatus::Online {
                format!("; it was already restarting before the apply ({} unstable restarts, status {})", old.unstable_restarts, old.status.as_str())
            } else {
                String::new()
            };
            out.warnings.push(format!(
                "{label} changed by itself (it crashed and PM2 restarted it; no call touched it): {}{already}",
                what.join(", ")
            ));
        }
    }
    out
}

fn show(pid: Option<u32>) -> String {
    pid.map_or_else(|| "none".to_string(), |p| p.to_string())
}

/// What moved between the basis a plan was saved with and a fresh one: one line per
/// app whose desired spec changed and per process that changed, appeared or went.
pub fn moved(saved: &Basis, fresh: &Basis) -> Vec<String> {
    let mut lines = Vec::new();
    if saved.desired_hash != fresh.desired_hash {
        for (name, hash) in &fresh.desired_apps {
            match saved.desired_apps.get(name) {
                None => lines.push(format!("desired app `{name}` was added")),
                Some(old) if old != hash => lines.push(format!("desired app `{name}` changed")),
                Some(_) => {}
            }
        }
        for name in saved.desired_apps.keys().filter(|n| !fresh.desired_apps.contains_key(*n)) {
            lines.push(format!("desired app `{name}` was removed"));
        }
        if lines.is_empty() {
            lines.push("the desired state changed".into());
        }
    }
    if saved.live_fingerprint != fresh.live_fingerprint {
        let before = lines.len();
        let find = |marks: &[LiveMark], m: &LiveMark| marks.iter().find(|o| o.pm_id == m.pm_id && o.name == m.name).cloned();
        for mark in &fresh.live {
            match find(&saved.live, mark) {
                None => lines.push(format!("process `{}` (pm_id {}) appeared", mark.name, mark.pm_id)),
                Some(old) if old != *mark => lines.push(format!("process `{}` (pm_id {}) changed: {}", mark.name, mark.pm_id, what_changed(&old, mark))),
                Some(_) => {}
            }
        }
        for mark in saved.live.iter().filter(|m| find(&fresh.live, m).is_none()) {
            lines.push(format!("process `{}` (pm_id {}) is gone", mark.name, mark.pm_id));
        }
        if lines.len() == before {
            lines.push("the live processes changed".into());
        }
    }
    lines
}

fn what_changed(old: &LiveMark, new: &LiveMark) -> String {
    let mut parts = Vec::new();
    if old.status != new.status {
        parts.push(format!("status {} → {}", old.status.as_deref().unwrap_or("?"), new.status.as_deref().unwrap_or("?")));
    }
    if old.pid != new.pid {
        parts.push(format!("pid {} → {}", show(old.pid), show(new.pid)));
    }
    if old.restarts != new.restarts {
        parts.push(format!("restarts {} → {}", old.restarts.unwrap_or(0), new.restarts.unwrap_or(0)));
    }
    if old.spec_hash != new.spec_hash || old.namespace != new.namespace {
        parts.push("spec".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, foreign, live, live_of};
    use serde_json::json;

    #[test]
    fn a_bystander_restart_is_reported_and_owned_changes_are_not() {
        let apps = desired(json!([{"name": "api", "namespace": "web", "script": "s.js"}]));
        let before = live(vec![live_of(&apps[0], 0), foreign("stock-alert", "other", 1)]);
        let mut after = before.clone();
        after.processes[0].pid = Some(999);
        assert_eq!(bystanders(&before, &after, &["web".into()]), Bystanders::default());
        // Restarted by a call: `created_at` moved.
        after.processes[1].restarts += 1;
        after.processes[1].pid = Some(4242);
        after.processes[1].created_at_ms = Some(after.processes[1].created_at_ms.unwrap_or(0) + 1000);
        let found = bystanders(&before, &after, &["web".into()]);
        assert_eq!(found.problems.len(), 1, "{found:?}");
        assert!(found.problems[0].contains("stock-alert") && found.problems[0].contains("4242"), "{found:?}");
        // Crashed by itself: `created_at` kept. A warning with its figures.
        after.processes[1].created_at_ms = before.processes[1].created_at_ms;
        let found = bystanders(&before, &after, &["web".into()]);
        assert!(found.problems.is_empty(), "{found:?}");
        assert!(found.warnings[0].contains("by itself") && found.warnings[0].contains("restarts"), "{found:?}");
        after.processes.pop();
        assert!(bystanders(&before, &after, &["web".into()]).problems[0].contains("is gone"));
    }

    #[test]
    fn moved_names_the_app_and_the_process() {
        let mark = |status: &str| LiveMark {
            pm_id: 3, name: "api".into(), namespace: "web".into(), pid: Some(10), status: Some(status.into()), restarts: Some(0), spec_hash: None,
        };
        let basis = |hash: &str, status: &str| Basis {
            desired_hash: hash.into(),
            live_fingerprint: status.into(),
            live_source: "daemon".into(),
            pm2_version: None,
            git_commit: None,
            git_dirty: None,
            base_commit: None,
            desired_apps: [("api".to_string(), hash.to_string())].into(),
            live: vec![mark(status)],
        };
        assert!(moved(&basis("a", "online"), &basis("a", "online")).is_empty());
        let lines = moved(&basis("a", "online"), &basis("b", "stopped"));
        assert_eq!(lines, vec!["desired app `api` changed", "process `api` (pm_id 3) changed: status online → stopped"]);
    }
}
