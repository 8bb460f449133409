//! Plans for people (`human`, diff-style), pull requests (`markdown`) and scripts
//! (`json`, the plan model itself). All read the same [`Plan`].

use std::fmt::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::plan::{Action, AttributeChange, Change, Plan};
use crate::render::style;

/// The closing line, as terraform prints it.
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary;
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to scale, {} to delete.",
        s.create, s.update, s.replace, s.scale, s.delete
    )
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Noop => "is up to date",
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Scale => "will be scaled",
        Action::Replace => "must be replaced",
        Action::Delete => "will be deleted",
    }
}

fn action_style(action: Action) -> anstyle::Style {
    match action {
        Action::Create => anstyle::AnsiColor::Green.on_default().bold(),
        Action::Update | Action::Scale => anstyle::AnsiColor::Yellow.on_default().bold(),
        Action::Replace | Action::Delete => anstyle::AnsiColor::Red.on_default().bold(),
        Action::Noop => anstyle::Style::new(),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// Diff-style, colored on a terminal (the caller's stream strips colors otherwise).
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    let bold = style::BOLD;
    let owned = plan.namespaces.join(", ");
    let project = plan.project.as_deref().map(|p| format!("{p}, ")).unwrap_or_default();
    let pm2 = plan.basis.pm2_version.as_deref().map(|v| format!(", PM2 {v}")).unwrap_or_default();
    let _ = writeln!(out, "{bold}reconcile plan{bold:#} ({project}owned namespaces: {owned}; live state from the {}{pm2})\n", plan.basis.live_source);
    let mut shown = 0;
    for change in plan.changes.iter().filter(|c| c.action != Action::Noop) {
        shown += 1;
        let s = action_style(change.action);
        let ids = if change.pm_ids.is_empty() {
            String::new()
        } else {
            format!("  [pm_id {}]", change.pm_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        };
        let _ = writeln!(out, "  {s}{:>3}{s:#} {bold}{}{bold:#} ({}) {}{ids}{}", change.action.symbol(), change.name, change.namespace, verb(change.action), downtime(change));
        for attribute in &change.attributes {
            write_attribute(&mut out, change, attribute);
        }
        out.push('\n');
    }
    if shown == 0 {
        let _ = writeln!(out, "  No changes: the live processes match the desired state.\n");
    }
    let noop: Vec<&str> = plan.changes.iter().filter(|c| c.action == Action::Noop).map(|c| c.name.as_str()).collect();
    if !noop.is_empty() {
        let _ = writeln!(out, "Up to date: {}", noop.join(", "));
    }
    let (unproven, kept): (Vec<_>, Vec<_>) = plan.unmanaged.iter().partition(|p| p.unproven);
    if !kept.is_empty() {
        let list: Vec<String> = kept.iter().map(|p| format!("{} (pm_id {})", p.name, p.pm_id)).collect();
        let _ = writeln!(out, "Not desired, kept because [safety] prune is off: {}", list.join(", "));
    }
    if !unproven.is_empty() {
        let list: Vec<String> = unproven.iter().map(|p| format!("{} ({}, pm_id {})", p.name, p.namespace, p.pm_id)).collect();
        let _ = writeln!(out, "Unmanaged, not started or adopted by this project (prune never deletes these): {}", list.join(", "));
        let _ = writeln!(out, "  help: {ADOPT_HELP}");
    }
    if !plan.ignored.is_empty() {
        let list: Vec<String> = plan.ignored.iter().map(|p| format!("{} ({}, pm_id {})", p.name, p.namespace, p.pm_id)).collect();
        let _ = writeln!(out, "Ignored, not owned (never touched): {}", list.join(", "));
    }
    for violation in &plan.guard.violations {
        let e = style::ERROR;
        let _ = writeln!(out, "{e}Blast-radius guard:{e:#} {violation} (apply refuses this plan unless given --allow-blast-radius)");
    }
    let _ = writeln!(out, "\n{bold}{}{bold:#}", summary_line(plan));
    out
}

/// Says when a change stops the app for a while (a fork app's restart, a replace).
fn downtime(change: &Change) -> &'static str {
    match (change.downtime, change.action) {
        (false, _) => "",
        (true, Action::Replace) => " (downtime: deleted, then started)",
        (true, _) => " (downtime: a fork app restarts)",
    }
}

fn write_attribute(out: &mut String, change: &Change, attribute: &AttributeChange) {
    let forces = if attribute.forces_replacement {
        let e = style::ERROR;
        format!(" {e}# forces replacement{e:#}")
    } else {
        String::new()
    };
    let symbol = match (change.action, &attribute.before, &attribute.after) {
        (Action::Create, _, _) | (_, Value::Null, _) => "+",
        (_, _, Value::Null) => "-",
        _ => "~",
    };
    if let (Value::String(before), Value::String(after)) = (&attribute.before, &attribute.after)
        && (before.contains('\n') || after.contains('\n')) {
            let _ = writeln!(out, "      {symbol} {}:{forces}", attribute.path);
            for line in TextDiff::from_lines(before.as_str(), after.as_str()).iter_all_changes() {
                let sign = match line.tag() {
                    ChangeTag::Delete => "-",
                    ChangeTag::Insert => "+",
                    ChangeTag::Equal => " ",
                };
                let _ = write!(out, "          {sign} {line}");
                if line.missing_newline() {
                    out.push('\n');
                }
            }
            return;
        }
    if change.action == Action::Create {
        let _ = writeln!(out, "      + {} = {}", attribute.path, show(&attribute.after));
    } else {
        let _ = writeln!(out, "      {symbol} {}: {} → {}{forces}", attribute.path, show(&attribute.before), show(&attribute.after));
    }
}

/// For a pull-request comment: a summary table, then the details of each change.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let s = plan.summary;
    let project = plan.project.as_deref().unwrap_or("reconcile");
    let _ = writeln!(out, "### `reconcile plan`: {project}\n");
    let _ = writeln!(out, "{}\n", summary_line(plan));
    let _ = writeln!(out, "| create | update | replace | scale | delete | unchanged |\n|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(out, "| {} | {} | {} | {} | {} | {} |\n", s.create, s.update, s.replace, s.scale, s.delete, s.noop);
    for violation in &plan.guard.violations {
        let _ = writeln!(out, "> [!WARNING]\n> **Blast-radius guard:** {violation}. `apply` must refuse this plan.\n");
    }
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.action != Action::Noop).collect();
    if changes.is_empty() {
        let _ = writeln!(out, "No changes: the live processes match the desired state.\n");
    } else {
        let _ = writeln!(out, "| | app | namespace | action | attributes |\n|---|---|---|---|---|");
        for change in &changes {
            let forcing: Vec<String> =
                change.attributes.iter().filter(|a| a.forces_replacement).map(|a| format!("`{}`", a.path)).collect();
            let mut note = if forcing.is_empty() { String::new() } else { format!(" (forced by {})", forcing.join(", ")) };
            if change.downtime {
                note.push_str(" (downtime)");
            }
            let _ = writeln!(
                out,
                "| `{}` | `{}` | `{}` | **{}**{note} | {} |",
                change.action.symbol(),
                change.name,
                change.namespace,
                change.action.as_str(),
                change.attributes.len()
            );
        }
        out.push('\n');
        for change in changes.iter().filter(|c| !c.attributes.is_empty()) {
            let _ = writeln!(out, "<details><summary><code>{}</code> {}</summary>\n", change.name, verb(change.action));
            let _ = writeln!(out, "| attribute | before | after | |\n|---|---|---|---|");
            for a in &change.attributes {
                let forces = if a.forces_replacement { "forces replacement" } else { "" };
                let _ = writeln!(out, "| `{}` | {} | {} | {forces} |", a.path, cell(&a.before), cell(&a.after));
            }
            let _ = writeln!(out, "\n</details>\n");
        }
    }
    if !plan.ignored.is_empty() {
        let list: Vec<String> = plan.ignored.iter().map(|p| format!("`{}` ({})", p.name, p.namespace)).collect();
        let _ = writeln!(out, "Ignored, not owned: {}\n", list.join(", "));
    }
    let (unproven, kept): (Vec<_>, Vec<_>) = plan.unmanaged.iter().partition(|p| p.unproven);
    if !kept.is_empty() {
        let list: Vec<String> = kept.iter().map(|p| format!("`{}`", p.name)).collect();
        let _ = writeln!(out, "Not desired, kept (prune is off): {}\n", list.join(", "));
    }
    if !unproven.is_empty() {
        let list: Vec<String> = unproven.iter().map(|p| format!("`{}` (`{}`)", p.name, p.namespace)).collect();
        let _ = writeln!(out, "Unmanaged, not started or adopted by this project (never pruned): {}. {ADOPT_HELP}\n", list.join(", "));
    }
    out
}

/// How to make an unmanaged process this project's (or leave it alone).
const ADOPT_HELP: &str = "to adopt one, add it to an ecosystem file as it runs (`reconcile import --namespace NS` writes one) and apply: apply records it in .reconcile/adopted.json; to leave it alone, move it out of the owned namespaces";

fn cell(value: &Value) -> String {
    let text = show(value).replace('|', "\\|").replace('\n', "<br>");
    format!("`{text}`")
}

/// The plan model as JSON (the `plan --format json` contract and the saved plan).
pub fn json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::project::SafetySection;
    use crate::redact::Redactor;
    use crate::testing::{desired, foreign, live, live_of};

    /// A plan with every action kind, a multi-line value, a secret and a foreign app.
    fn every_kind() -> Plan {
        let app = |name: &str, extra: serde_json::Value| {
            let mut a = json!({"name": name, "namespace": "web", "script": "server.js", "exec_mode": "fork", "env": {"PORT": 3000}});
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            a
        };
        let old = desired(json!([
            app("same", json!({})),
            app("env", json!({"env": {"PORT": 3000, "MOTD": "hello\nworld\n", "API_TOKEN": "old"}})),
            app("moved", json!({})),
            app("scaled", json!({"instances": 1, "exec_mode": "cluster"})),
            app("code", json!({"instances": 2, "exec_mode": "cluster"})),
        ]));
        let mut new = desired(json!([
            app("same", json!({})),
            app("env", json!({"env": {"PORT": 3001, "MOTD": "hello\nthere\n", "API_TOKEN": "new"}})),
            app("moved", json!({"script": "other.js"})),
            app("scaled", json!({"instances": 3, "exec_mode": "cluster"})),
            app("fresh", json!({"args": ["--queue", "q1"]})),
            app("code", json!({"instances": 2, "exec_mode": "cluster"})),
        ]));
        // New code for `code`: a cluster app, reloaded without downtime.
        new[5].revision = Some("9fceb02d0ae598e95dc970b74767f19372d61af8".into());
        let mut processes: Vec<_> = old.iter().enumerate().map(|(i, d)| live_of(d, i as u64)).collect();
        processes.push(live_of(&old[4], 7));
        processes[4].revision = Some("0c3a1f9e7d2b4a6c8e0f1a2b3c4d5e6f7a8b9c0d".into());
        processes[5].revision = Some("0c3a1f9e7d2b4a6c8e0f1a2b3c4d5e6f7a8b9c0d".into());
        processes[3].spec_hash = None;
        processes.push(foreign("stock-alert", "stock-alert", 5));
        // Started by an earlier apply (stamped), so prune may delete it.
        let mut old_job = foreign("old-job", "web", 6);
        old_job.spec_hash = Some("h".into());
        processes.push(old_job);
        let safety = SafetySection { prune: true, ..SafetySection::default() };
        let mut plan =
            crate::plan::diff(&new, &live(processes), &["web".into()], &safety, &Redactor::new(&["*TOKEN*".into()])).unwrap();
        plan.project = Some("shop".into());
        plan
    }

    #[test]
    fn human_rendering() {
        insta::assert_snapshot!(anstream::adapter::strip_str(&human(&every_kind())).to_string());
    }

    #[test]
    fn markdown_rendering() {
        insta::assert_snapshot!(markdown(&every_kind()));
    }
}
