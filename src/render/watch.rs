//! `watch` for people: one log line per report (UTC time, kind, what), with the
//! findings or plan changes indented under it.

use std::fmt::Write;

use crate::render::style;
use crate::watch::report::Report;

/// The line (or lines) for one report, newline included.
pub fn human(report: &Report, at_ms: i64) -> String {
    let (mark, text, more) = describe(report);
    let mut out = format!("{} {mark}{:<13}{mark:#} {text}\n", clock(at_ms), report.kind());
    for line in more {
        let _ = writeln!(out, "    {line}");
    }
    out
}

fn describe(report: &Report) -> (anstyle::Style, String, Vec<String>) {
    let plain = style::GUTTER;
    let bad = style::ERROR;
    match report {
        Report::Started { project, pm2_home, namespaces, files, interval_s, heal, metrics, git, .. } => {
            let mut text = format!(
                "watching {} (namespaces {}) on the PM2 daemon in {}; full re-read every {interval_s} s; heal {}",
                project.as_deref().unwrap_or("the project"),
                namespaces.join(", "),
                pm2_home.display(),
                if *heal { "on" } else { "off" }
            );
            if let Some(addr) = metrics {
                let _ = write!(text, "; metrics on http://{addr}/metrics");
            }
            if let Some(git) = git {
                let _ = write!(text, "; following {} branch {} every {} s", git.remote, git.branch, git.interval_s);
            }
            let more = files.iter().map(|f| format!("file {}", f.display())).collect();
            (plain, text, more)
        }
        Report::Lint { errors, warnings, human, .. } => {
            let text = if *errors > 0 {
                format!("{errors} error(s), {warnings} warning(s): nothing is planned or healed until they are fixed")
            } else {
                format!("no errors, {warnings} warning(s) (`reconcile lint` shows them, or watch -v)")
            };
            let more = human.lines().map(str::to_string).collect();
            (if *errors > 0 { bad } else { plain }, text, more)
        }
        Report::Plan { trigger, changes, unmanaged, summary, git_commit } => {
            let mut text = if changes.is_empty() {
                "no changes: live matches the desired state".to_string()
            } else {
                format!(
                    "{} to create, {} to update, {} to replace, {} to scale, {} to delete",
                    summary.create, summary.update, summary.replace, summary.scale, summary.delete
                )
            };
            let _ = write!(text, " (after {})", match trigger {
                crate::watch::report::Trigger::Start => "start",
                crate::watch::report::Trigger::Files => "a file change",
                crate::watch::report::Trigger::Git => "a new commit",
            });
            if let Some(commit) = git_commit {
                let _ = write!(text, " at {}", short(commit));
            }
            let mut more: Vec<String> = changes
                .iter()
                .map(|c| {
                    let paths: Vec<&str> = c.attributes.iter().map(|a| a.path.as_str()).collect();
                    format!("{} {} {} ({}): {}", c.action.symbol(), c.action.as_str(), c.name, c.namespace, paths.join(", "))
                })
                .collect();
            more.extend(unmanaged.iter().map(|u| format!("  unmanaged {} ({}) pm_id {}", u.name, u.namespace, u.pm_id)));
            (plain, text, more)
        }
        Report::Drift(d) => (bad, format!("{} ({}): {} — {}", d.app, d.namespace, d.reason.as_str(), d.detail), attributes(&d.attributes)),
        Report::DriftCleared { drift, lasted_ms } => {
            (plain, format!("{} ({}): {} cleared after {}", drift.app, drift.namespace, drift.reason.as_str(), duration(*lasted_ms)), Vec::new())
        }
        Report::DaemonDown { error, retry_in_ms } => (bad, format!("{error}; retrying in {}", duration(*retry_in_ms)), Vec::new()),
        Report::DaemonBack { down_ms } => (plain, format!("the PM2 daemon answers again (after {})", duration(*down_ms)), Vec::new()),
        Report::Healing { apps } => (plain, format!("applying the desired state to {}", apps.join(", ")), Vec::new()),
        Report::Healed { apps, outcome, actions, journal } => {
            let mut text = if *outcome == "noop" {
                format!("{}: nothing left to do", apps.join(", "))
            } else {
                format!("{}: {actions} call(s), healthy and verified", apps.join(", "))
            };
            if let Some(j) = journal {
                let _ = write!(text, "; journal {}", j.display());
            }
            (plain, text, Vec::new())
        }
        Report::HealFailed { apps, outcome, reason, healed, .. } => {
            let mut text = format!("{} ({outcome})", apps.join(", "));
            if !healed.is_empty() {
                let _ = write!(text, "; healed: {}", healed.join(", "));
            }
            (bad, text, reason.lines().map(str::to_string).collect())
        }
        Report::HealDeferred { apps, reason } => (plain, format!("{}: {reason}", apps.join(", ")), Vec::new()),
        Report::HealGivenUp { app, reason } => {
            (bad, format!("{app}: {reason}; no more heals until its spec changes or its drift clears"), Vec::new())
        }
        Report::CrashLoopStopped { app, pm_ids, stopped, detail, log_tail, error_log, .. } => {
            let what = if *stopped { "stopped it" } else { "COULD NOT STOP IT" };
            let ids: Vec<String> = pm_ids.iter().map(ToString::to_string).collect();
            let mut text = format!(
                "{app} (pm_id {}) {detail}; {what} (its error log is kept); not started again until its desired state or its code changes",
                ids.join(", ")
            );
            if let Some(path) = error_log {
                let _ = write!(text, "; error log {} (`pm2 logs {app} --err`)", path.display());
            }
            (bad, text, log_tail.iter().map(|l| format!("| {l}")).collect())
        }
        Report::ForeignCrashLoop { app, namespace, detail, .. } => {
            (bad, format!("{app} ({namespace}, not owned: only reported): {detail}"), Vec::new())
        }
        Report::Git { remote, branch, commit, previous } => {
            let from = previous.as_deref().map_or_else(|| "first checkout".to_string(), |p| format!("was {}", short(p)));
            (plain, format!("{remote} {branch} is at {} ({from})", short(commit)), Vec::new())
        }
        Report::GitError { error } => (bad, error.clone(), Vec::new()),
        Report::GitRefused { error, .. } => (bad, error.clone(), Vec::new()),
        Report::Error { message } => (bad, message.clone(), Vec::new()),
        Report::Stopping { signal } => (plain, format!("{signal} received; stopped"), Vec::new()),
    }
}

fn attributes(attributes: &[crate::plan::AttributeChange]) -> Vec<String> {
    attributes.iter().map(|a| format!("{}: {} → {}", a.path, a.before, a.after)).collect()
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn duration(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

/// `HH:MM:SSZ` (UTC) of a time in ms since the epoch.
fn clock(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::watch::drift::{Drift, DriftKind};

    #[test]
    fn a_drift_line_names_the_app_the_reason_and_the_time() {
        let d = Drift {
            app: "web".into(),
            namespace: "mine".into(),
            reason: DriftKind::Stopped,
            detail: "1 of 1 process(es) stopped".into(),
            pm_ids: vec![1],
            attributes: vec![],
            action: None,
        };
        let text = human(&Report::Drift(d), 3_723_000);
        assert!(text.starts_with("01:02:03Z "), "{text}");
        assert!(text.contains("drift") && text.contains("web (mine): stopped — 1 of 1 process(es) stopped"), "{text}");
    }
}
