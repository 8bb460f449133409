//! What `apply` prints as it goes (one line per call, to stderr) and at the end.

use std::fmt::Write;

use crate::apply::execute::{Event, Outcome};
use crate::plan::Action;
use crate::render::style;

/// One progress line for an executor event.
pub fn progress(event: &Event) -> String {
    match event {
        // Journaled only: the call's own line follows.
        Event::Intent(_) => String::new(),
        Event::Action(a) => {
            let target = match (a.pm_id, a.new_pm_ids.as_slice()) {
                (Some(id), []) => format!("pm_id {id}"),
                (Some(id), new) => format!("pm_id {id} → {}", ids(new)),
                (None, new) => format!("→ pm_id {}", ids(new)),
            };
            let (mark, s) = if a.error.is_some() { ("✗", style::ERROR) } else { ("•", style::GUTTER) };
            // Calls outside the plan: a gate's stop, a rollback's delete and start.
            let why = match (a.action, a.call) {
                (Action::Noop, "stop") => "health gate",
                (Action::Noop, _) => "rollback",
                (action, _) => action.as_str(),
            };
            let took = match a.batch {
                Some(n) => format!("{} ms, one call for {n} apps", a.duration_ms),
                None => format!("{} ms", a.duration_ms),
            };
            let mut line = format!("  {s}{mark}{s:#} {:<9} {} ({why}) [{target}] {took}", a.call, a.app);
            if let Some(error) = &a.error {
                let _ = write!(line, ": {error}");
            }
            line.push('\n');
            line
        }
        Event::Healthy { app, pm_id, online_ms } => {
            let s = style::GUTTER;
            format!("  {s}✓{s:#} healthy   {app} [pm_id {pm_id}] online for {online_ms} ms (min_uptime, then the settle window) without a crash\n")
        }
        Event::Unhealthy(f) => {
            let e = style::ERROR;
            let stopped = if f.stopped { "stopped it" } else { "COULD NOT STOP IT" };
            let mut text = format!("  {e}✗ unhealthy{e:#} {} [pm_id {}] {} ({} restarts); {stopped}\n", f.app, f.pm_id, f.what, f.restarts);
            if !f.log_tail.is_empty() {
                let _ = writeln!(text, "      its error log since this start:");
                for line in &f.log_tail {
                    let _ = writeln!(text, "      | {line}");
                }
            } else if f.error_log.is_some() {
                let _ = writeln!(text, "      (nothing written to its error log since this start)");
            }
            if let Some(path) = &f.error_log {
                let _ = writeln!(text, "      error log: {} (more: `pm2 logs {} --err`)", path.display(), f.app);
            }
            text
        }
        Event::GateWaiting { healthy, total, elapsed_ms } => {
            let s = style::GUTTER;
            let what = if *total == 1 { "process".to_string() } else { "processes".to_string() };
            if *elapsed_ms == 0 || (*healthy == 0 && *elapsed_ms < 1000) {
                format!("  {s}…{s:#} health gate: waiting for {total} {what} to stay online for their min_uptime\n")
            } else {
                format!("  {s}…{s:#} health gate: {healthy}/{total} healthy, {}s elapsed\n", elapsed_ms / 1000)
            }
        }
        Event::RolledBack { app, pm_ids, error } => match error {
            None => format!("  ↺ rolled back {app}: previous spec running again as pm_id {}\n", ids(pm_ids)),
            Some(e) => format!("  {}✗ rollback of {app} failed:{:#} {e}\n", style::ERROR, style::ERROR),
        },
    }
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The closing summary: what was done and whether the world is as promised.
pub fn summary(outcome: &Outcome, problems: &[String], elapsed_ms: u128) -> String {
    let mut out = String::new();
    let calls = |action: Action| outcome.actions.iter().filter(|a| a.action == action && a.error.is_none()).map(|a| &a.app).collect::<std::collections::BTreeSet<_>>().len();
    let done = format!(
        "{} created, {} updated, {} replaced, {} scaled, {} deleted",
        calls(Action::Create),
        calls(Action::Update),
        calls(Action::Replace),
        calls(Action::Scale),
        calls(Action::Delete)
    );
    for w in &outcome.warnings {
        let _ = writeln!(out, "{}warning:{:#} {w}", style::WARNING, style::WARNING);
    }
    if outcome.succeeded() && problems.is_empty() {
        let s = style::BOLD;
        let _ = writeln!(out, "\n{s}Apply complete:{s:#} {done}; {} process(es) healthy; in {elapsed_ms} ms.", outcome.healthy);
        return out;
    }
    let e = style::ERROR;
    let _ = writeln!(out, "\n{e}Apply failed:{e:#} {done}; in {elapsed_ms} ms.");
    if let Some(why) = &outcome.aborted {
        let _ = writeln!(out, "  stopped early: {why}");
    }
    for f in &outcome.failures {
        let _ = writeln!(out, "  `{}` (pm_id {}) {}; it was {}", f.app, f.pm_id, f.what, if f.stopped { "stopped so it cannot crash-loop (its error log is kept)" } else { "NOT stopped" });
    }
    if !outcome.rolled_back.is_empty() {
        let _ = writeln!(out, "  rolled back to their previous spec: {}", outcome.rolled_back.join(", "));
    }
    for p in problems {
        let _ = writeln!(out, "  {p}");
    }
    let _ = writeln!(out, "  The apps changed before the failure stay as they are; the journal records every call. Fix the cause and run apply again: it converges.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::execute::ActionRecord;

    #[test]
    fn batched_starts_show_the_one_calls_duration_and_the_gate_its_progress() {
        let record = |app: &str| ActionRecord {
            seq: 1,
            outcome: "ok",
            app: app.into(),
            namespace: "web".into(),
            action: Action::Create,
            call: "start",
            pm_id: None,
            new_pm_ids: vec![3],
            duration_ms: 120,
            batch: Some(2),
            error: None,
        };
        let line = anstream::adapter::strip_str(&progress(&Event::Action(record("api")))).to_string();
        assert_eq!(line, "  • start     api (create) [→ pm_id 3] 120 ms, one call for 2 apps\n");
        let start = progress(&Event::GateWaiting { healthy: 0, total: 3, elapsed_ms: 0 });
        assert!(anstream::adapter::strip_str(&start).to_string().contains("waiting for 3 processes to stay online"), "{start}");
        let later = anstream::adapter::strip_str(&progress(&Event::GateWaiting { healthy: 2, total: 3, elapsed_ms: 10_400 })).to_string();
        assert_eq!(later, "  … health gate: 2/3 healthy, 10s elapsed\n");
    }
}
