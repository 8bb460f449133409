//! Plans for people (`human`, diff-style), pull requests (`markdown`) and scripts
//! (`json`, the plan model itself). All read the same [`Plan`].

use std::fmt::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::plan::{Action, AttributeChange, Change, Plan};
use crate::redact;
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

/// A value as plans show it: JSON, except that nothing is `(none)` and a redacted
/// secret is a label, not a quoted string that reads as the literal value.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "(none)".into(),
        Value::String(s) if s == redact::HIDDEN => "(sensitive)".into(),
        Value::String(s) if s == redact::CHANGED => "(sensitive, changed)".into(),
        other => other.to_string(),
    }
}

/// What the plan compares against, in words, for the header of each rendering.
fn baseline(plan: &Plan) -> String {
    match plan.basis.git_baseline() {
        Some(base) => format!("the desired state at {base} (no PM2 daemon read)"),
        None if plan.basis.live_source == "snapshot" => "the processes in a `pm2 jlist` file (--live)".into(),
        None => "the live processes of the PM2 daemon".into(),
    }
}

/// Diff-style, colored on a terminal (the caller's stream strips colors otherwise).
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    let bold = style::BOLD;
    let owned = plan.namespaces.join(", ");
    let project = plan.project.as_deref().map(|p| format!("{}, ", one_line(p))).unwrap_or_default();
    let pm2 = plan.basis.pm2_version.as_deref().map(|v| format!(", PM2 {}", one_line(v))).unwrap_or_default();
    let _ = writeln!(out, "{bold}reconcile plan{bold:#} ({project}owned namespaces: {owned}; compared with {}{pm2})\n", baseline(plan));
    let mut shown = 0;
    for change in plan.changes.iter().filter(|c| c.action != Action::Noop) {
        shown += 1;
        let s = action_style(change.action);
        let ids = if change.pm_ids.is_empty() {
            String::new()
        } else {
            format!("  [pm_id {}]", change.pm_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        };
        let _ = writeln!(out, "  {s}{:>3}{s:#} {bold}{}{bold:#} ({}) {}{ids}{}", change.action.symbol(), one_line(&change.name), one_line(&change.namespace), verb(change.action), downtime(change));
        for attribute in &change.attributes {
            write_attribute(&mut out, change, attribute);
        }
        out.push('\n');
    }
    if shown == 0 {
        let _ = writeln!(out, "  {}\n", no_changes(plan));
    }
    let noop: Vec<String> = plan.changes.iter().filter(|c| c.action == Action::Noop).map(|c| one_line(&c.name)).collect();
    if !noop.is_empty() {
        let _ = writeln!(out, "Up to date: {}", noop.join(", "));
    }
    // Under --base the baseline's processes are stand-ins: their pm_ids mean nothing.
    let ids = plan.basis.git_baseline().is_none();
    let (unproven, kept): (Vec<_>, Vec<_>) = plan.unmanaged.iter().partition(|p| p.unproven);
    if !kept.is_empty() {
        let list: Vec<String> = kept.iter().map(|p| if ids { format!("{} (pm_id {})", one_line(&p.name), p.pm_id) } else { one_line(&p.name) }).collect();
        let _ = writeln!(out, "Not desired, kept because [safety] prune is off: {}", list.join(", "));
    }
    if !unproven.is_empty() {
        let list: Vec<String> = unproven
            .iter()
            .map(|p| if ids { format!("{} ({}, pm_id {})", one_line(&p.name), one_line(&p.namespace), p.pm_id) } else { format!("{} ({})", one_line(&p.name), one_line(&p.namespace)) })
            .collect();
        let _ = writeln!(out, "Unmanaged, not started or adopted by this project (prune never deletes these): {}", list.join(", "));
        let _ = writeln!(out, "  help: {ADOPT_HELP}");
    }
    if !plan.ignored.is_empty() {
        let list: Vec<String> = plan
            .ignored
            .iter()
            .map(|p| {
                let (name, namespace) = (one_line(&p.name), one_line(&p.namespace));
                if ids { format!("{name} ({namespace}, pm_id {})", p.pm_id) } else { format!("{name} ({namespace})") }
            })
            .collect();
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

/// How to make an unmanaged process this project's (or leave it alone).
const ADOPT_HELP: &str = "to adopt one, add it to an ecosystem file as it runs (`reconcile import --namespace NS` writes one) and apply: apply records it in .reconcile/adopted.json; to leave it alone, move it out of the owned namespaces";

fn no_changes(plan: &Plan) -> String {
    match plan.basis.git_baseline() {
        Some(base) => format!("No changes: the desired state is the same as at {base}."),
        None => "No changes: the live processes match the desired state.".into(),
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
            let _ = writeln!(out, "      {symbol} {}:{forces}", one_line(&attribute.path));
            for line in TextDiff::from_lines(before.as_str(), after.as_str()).iter_all_changes() {
                let sign = match line.tag() {
                    ChangeTag::Delete => "-",
                    ChangeTag::Insert => "+",
                    ChangeTag::Equal => " ",
                };
                // The line's own text, control characters escaped (a value cannot
                // drive the terminal), then our newline.
                let _ = writeln!(out, "          {sign} {}", one_line(line.value().trim_end_matches('\n')));
            }
            return;
        }
    if change.action == Action::Create {
        let _ = writeln!(out, "      + {} = {}", one_line(&attribute.path), show(&attribute.after));
    } else {
        let _ = writeln!(out, "      {symbol} {}: {} → {}{forces}", one_line(&attribute.path), show(&attribute.before), show(&attribute.after));
    }
}

/// Plans with at most this many attribute lines are shown open in the comment; larger
/// ones fold each app's details (the summary table stays open).
const OPEN_LINES: usize = 40;

/// The hidden line that identifies a project's comment, so CI can update it in place
/// (`<!-- reconcile-plan: NAME -->`; the name reduced to `[A-Za-z0-9._-]`).
pub fn marker(plan: &Plan) -> String {
    let name: String = plan
        .project
        .as_deref()
        .unwrap_or("reconcile")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    format!("<!-- reconcile-plan: {name} -->")
}

/// For a pull-request comment (GitHub and Gitea markdown): a hidden marker, the
/// summary, what was compared (base and head commits), a table of the apps that
/// change, and every attribute in a ```` ```diff ```` block, open for small plans.
/// Everything that comes from the desired or live state is escaped: in code spans and
/// blocks whose fences outgrow any backticks inside, `|` and newlines escaped in
/// table cells, so no value can end a span, a cell or a block, or carry raw HTML.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let s = plan.summary;
    let _ = writeln!(out, "{}", marker(plan));
    let title = plan.project.as_deref().map(|p| format!(": {}", code(p))).unwrap_or_default();
    let _ = writeln!(out, "### reconcile plan{title}\n");
    let unchanged = if s.noop > 0 { format!(" {} unchanged.", s.noop) } else { String::new() };
    let _ = writeln!(out, "**{}**{unchanged}\n", summary_line(plan));
    let _ = writeln!(out, "{}\n", compared(plan));
    for violation in &plan.guard.violations {
        let _ = writeln!(out, "> [!WARNING]\n> **Blast-radius guard:** {}. `apply` refuses this plan unless given `--allow-blast-radius`.\n", text(violation));
    }
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.action != Action::Noop).collect();
    if changes.is_empty() {
        let _ = writeln!(out, "{}\n", no_changes(plan));
    } else {
        let _ = writeln!(out, "| action | app | namespace | what changes |\n| --- | --- | --- | --- |");
        for change in &changes {
            let _ = writeln!(
                out,
                "| {} **{}**{} | {} | {} | {} |",
                code(change.action.symbol()),
                change.action.as_str(),
                if change.downtime { " (downtime)" } else { "" },
                code(&change.name),
                code(&change.namespace),
                what_changes(change)
            );
        }
        out.push('\n');
        let lines: usize = changes.iter().map(|c| c.attributes.len() + 1).sum();
        if lines <= OPEN_LINES {
            let body: String = changes.iter().map(|c| diff_lines(c)).collect();
            out.push_str(&fenced("diff", &body));
        } else {
            for change in &changes {
                // An HTML block: markdown is not read here, so the name is HTML-escaped.
                let _ = writeln!(out, "<details><summary><code>{}</code> {}</summary>\n", html(&one_line(&change.name)), verb(change.action));
                out.push_str(&fenced("diff", &diff_lines(change)));
                let _ = writeln!(out, "</details>\n");
            }
        }
    }
    let (unproven, kept): (Vec<_>, Vec<_>) = plan.unmanaged.iter().partition(|p| p.unproven);
    if !kept.is_empty() {
        let list: Vec<String> = kept.iter().map(|p| code(&p.name)).collect();
        let _ = writeln!(out, "Not desired, kept because `[safety] prune` is off: {}\n", list.join(", "));
    }
    if !unproven.is_empty() {
        let list: Vec<String> = unproven.iter().map(|p| format!("{} ({})", code(&p.name), code(&p.namespace))).collect();
        let _ = writeln!(out, "Unmanaged, not started or adopted by this project (never pruned): {}. {}\n", list.join(", "), text(ADOPT_HELP));
    }
    if !plan.ignored.is_empty() {
        let list: Vec<String> = plan.ignored.iter().map(|p| format!("{} ({})", code(&p.name), code(&p.namespace))).collect();
        let _ = writeln!(out, "Not owned, never touched: {}\n", list.join(", "));
    }
    out
}

/// The comparison line: the baseline, then the base and head commits.
fn compared(plan: &Plan) -> String {
    let short = |c: &str| code(&c.chars().take(12).collect::<String>());
    let head = match (&plan.basis.git_commit, plan.basis.git_dirty) {
        (Some(commit), Some(true)) => format!("{} with uncommitted changes", short(commit)),
        (Some(commit), _) => short(commit),
        (None, _) => "the working tree (not a git repository)".into(),
    };
    match plan.basis.git_baseline() {
        Some(base) => {
            let at = plan.basis.base_commit.as_deref().map(|c| format!(" ({})", short(c))).unwrap_or_default();
            format!(
                "Base: the desired state at {}{at}. Head: {head}. No PM2 daemon was read: this is what the change does to the desired state; `apply` plans again against the live processes.",
                code(base)
            )
        }
        None => format!("Compared with {}. Desired state: {head}.", baseline(plan)),
    }
}

/// The table's last column: the attributes that change (the first few), and which
/// force a replacement.
fn what_changes(change: &Change) -> String {
    const SHOWN: usize = 4;
    if change.action == Action::Delete {
        return "not desired (prune)".into();
    }
    if change.action == Action::Create {
        return "new app".into();
    }
    if change.attributes.is_empty() {
        return match change.reason {
            Some(crate::plan::model::Reason::NotRunning) => "not running".into(),
            Some(crate::plan::model::Reason::SpecHashChanged) => "spec changed (not visible in PM2's fields)".into(),
            _ => String::new(),
        };
    }
    let mut parts: Vec<String> = change
        .attributes
        .iter()
        .take(SHOWN)
        .map(|a| if a.forces_replacement { format!("{} (forces replacement)", code(&a.path)) } else { code(&a.path) })
        .collect();
    if change.attributes.len() > SHOWN {
        parts.push(format!("{} more", change.attributes.len() - SHOWN));
    }
    parts.join(", ")
}

/// One app in the diff block: a `@@` header, then `-` before and `+` after per attribute.
fn diff_lines(change: &Change) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "@@ {} {} ({}) {} @@", change.action.symbol(), one_line(&change.name), one_line(&change.namespace), verb(change.action));
    for a in &change.attributes {
        let forces = if a.forces_replacement { "   # forces replacement" } else { "" };
        let path = one_line(&a.path);
        let had = !a.before.is_null() && change.action != Action::Create;
        if a.after.is_null() {
            let _ = writeln!(out, "-   {path}: {}{forces}", one_line(&show(&a.before)));
            continue;
        }
        if had {
            let _ = writeln!(out, "-   {path}: {}", one_line(&show(&a.before)));
        }
        let _ = writeln!(out, "+   {path}: {}{forces}", one_line(&show(&a.after)));
    }
    out
}

/// Control characters (newlines above all) as escapes, so a value stays on its line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '\n' => "\\n".chars().collect::<Vec<_>>(),
            '\r' => "\\r".chars().collect(),
            '\t' => "\\t".chars().collect(),
            c if c.is_control() => c.escape_unicode().collect(),
            c => vec![c],
        })
        .collect()
}

/// The longest run of backticks in `text`.
fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A fenced code block whose fence is longer than any backtick run inside, so the
/// content cannot close it.
fn fenced(info: &str, body: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(body).max(2) + 1);
    format!("{fence}{info}\n{body}{fence}\n\n")
}

/// A code span for a table cell or a sentence: on one line, `|` escaped (GFM tables
/// split on it even inside spans), delimiters longer than any backtick run inside.
fn code(text: &str) -> String {
    let inner = one_line(text).replace('|', "\\|");
    let ticks = "`".repeat(longest_backtick_run(&inner) + 1);
    let pad = if inner.starts_with('`') || inner.ends_with('`') || inner.is_empty() { " " } else { "" };
    format!("{ticks}{pad}{inner}{pad}{ticks}")
}

/// Text for inside HTML (a `<summary>`): `&`, `<`, `>` and quotes as entities.
fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Plain text from data: every ASCII punctuation character backslash-escaped (so no
/// emphasis, link, HTML or table syntax), on one line.
fn text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in one_line(raw).chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

    /// Values a pull request controls, each trying to escape its code span, table
    /// cell or code block, or to carry HTML.
    const HOSTILE: [&str; 4] = ["a|b`c <b>x</b>", "``` <img src=x onerror=alert(1)>", "line\n<script>x</script>", "-->"];

    fn hostile_plan() -> Plan {
        let env: serde_json::Map<String, Value> =
            HOSTILE.iter().enumerate().map(|(i, v)| (format!("K{i}"), json!(v))).collect();
        let app = json!({"name": "api", "namespace": "web", "script": "server.js", "exec_mode": "fork", "env": env});
        let mut before = app.clone();
        before["env"] = json!({"K0": "plain", "API_TOKEN": "s3cret-old"});
        let mut after = app;
        after["env"]["API_TOKEN"] = json!("s3cret-new");
        let fresh = json!({"name": "job`<i>|", "namespace": "web", "script": "job.js", "exec_mode": "fork", "env": {"V": "x|`y`|<u>z</u>"}});
        let old = desired(json!([before]));
        let new = desired(json!([after, fresh]));
        let processes = old.iter().enumerate().map(|(i, d)| live_of(d, i as u64)).collect();
        let mut plan = crate::plan::diff(&new, &live(processes), &["web".into()], &SafetySection::default(), &Redactor::new(&["*TOKEN*".into()]))
            .unwrap();
        plan.project = Some("shop --> <b>".into());
        plan.basis.git_commit = Some("0123456789abcdef0123".into());
        plan.basis.git_dirty = Some(false);
        plan
    }

    /// The human plan escapes control characters, so desired state cannot drive the
    /// terminal (an ANSI escape in a name or a multi-line value).
    #[test]
    fn human_rendering_of_hostile_values() {
        let mut plan = hostile_plan();
        let esc = "\u{1b}[2J\u{1b}]0;pwned\u{7}";
        plan.changes[0].name = format!("api{esc}");
        plan.changes[0].attributes.push(AttributeChange {
            path: "env.MOTD".into(),
            before: json!(format!("one\n{esc}two\n")),
            after: json!("one\nthree\n"),
            forces_replacement: false,
        });
        let text = anstream::adapter::strip_str(&human(&plan)).to_string();
        insta::assert_snapshot!(text);
        let raw = human(&plan);
        assert!(!raw.contains('\u{7}') && !raw.contains("\u{1b}[2J") && !raw.contains("\u{1b}]0"), "{raw:?}");
    }

    /// The comment as GitHub renders it (CommonMark with GFM tables) has no element a
    /// value put there: the only HTML is the marker comment and `<details>` we write.
    #[test]
    fn markdown_escapes_hostile_values() {
        let text = markdown(&hostile_plan());
        insta::assert_snapshot!(text);
        let mut options = pulldown_cmark::Options::empty();
        options.insert(pulldown_cmark::Options::ENABLE_TABLES);
        let mut html = String::new();
        let mut raw_html = Vec::new();
        let events: Vec<_> = pulldown_cmark::Parser::new_ext(&text, options).collect();
        for event in &events {
            if let pulldown_cmark::Event::Html(h) | pulldown_cmark::Event::InlineHtml(h) = event {
                raw_html.push(h.to_string());
            }
        }
        pulldown_cmark::html::push_html(&mut html, events.into_iter());
        assert_eq!(raw_html, vec!["<!-- reconcile-plan: shop_--___b_ -->\n".to_string()], "{html}");
        for tag in ["<b>", "<i>", "<u>", "<img", "<script"] {
            assert!(!html.contains(tag), "{tag} rendered as HTML:\n{html}");
        }
        // Each table row keeps its four cells, whatever the values held.
        for row in html.split("<tr>").skip(1) {
            assert_eq!(row.matches("<td>").count() + row.matches("<th>").count(), 4, "{row}");
        }
        // The values are all there, as text.
        assert!(html.contains("a|b`c &lt;b&gt;x&lt;/b&gt;"), "{html}");
        // Secrets: a label, never the value, never a quoted "(sensitive)".
        assert!(!text.contains("s3cret") && !text.contains("\"(sensitive"), "{text}");
        assert!(text.contains("API_TOKEN: (sensitive)"), "{text}");
    }

    #[test]
    fn markdown_has_a_marker_commits_and_an_open_diff_for_small_plans() {
        let text = markdown(&hostile_plan());
        assert!(text.starts_with("<!-- reconcile-plan: "), "{text}");
        assert!(text.contains("0123456789ab"), "{text}");
        assert!(text.contains("```diff\n") || text.contains("````diff\n"), "{text}");
        assert!(!text.contains("<details>"), "a small plan is shown open:\n{text}");
    }

    /// A large plan keeps the table open and folds each app's diff.
    #[test]
    fn large_plans_fold_each_apps_diff_under_an_open_table() {
        let mut apps: Vec<Value> = (0..12)
            .map(|i| json!({"name": format!("app{i}"), "namespace": "web", "script": "s.js", "exec_mode": "fork", "env": {"A": "1", "B": "2"}}))
            .collect();
        apps.push(json!({"name": "x<b>y</b>`z", "namespace": "web", "script": "s.js", "exec_mode": "fork", "env": {"A": "```<i>"}}));
        let mut plan = crate::plan::diff(&desired(json!(apps)), &live(Vec::new()), &["web".into()], &SafetySection::default(), &Redactor::new(&[]))
            .unwrap();
        plan.project = Some("big".into());
        let text = markdown(&plan);
        assert_eq!(text.matches("<details><summary>").count(), 13, "{text}");
        let mut rendered = String::new();
        pulldown_cmark::html::push_html(&mut rendered, pulldown_cmark::Parser::new_ext(&text, pulldown_cmark::Options::ENABLE_TABLES));
        assert!(!rendered.contains("<b>") && !rendered.contains("<i>"), "{rendered}");
        assert!(rendered.contains("<summary><code>x&lt;b&gt;y&lt;/b&gt;`z</code>"), "{rendered}");
        assert!(text.contains("| `+` **create** | `app0` | `web` | new app |"), "{text}");
        assert!(text.find("| action |").unwrap() < text.find("<details>").unwrap());
    }

    /// `plan --base`: no daemon was read, so no pm_ids and no claim about live processes.
    #[test]
    fn base_plans_say_what_the_baseline_is() {
        let mut plan = every_kind();
        plan.basis.live_source = "git origin/main".into();
        plan.basis.base_commit = Some("fedcba9876543210".into());
        plan.basis.git_commit = Some("0123456789abcdef".into());
        for change in &mut plan.changes {
            change.pm_ids.clear();
        }
        let md = markdown(&plan);
        let human = anstream::adapter::strip_str(&human(&plan)).to_string();
        for text in [&md, &human] {
            assert!(!text.contains("pm_id"), "{text}");
            assert!(!text.contains("live processes match"), "{text}");
            assert!(text.contains("origin/main"), "{text}");
        }
        assert!(md.contains("fedcba987654") && md.contains("No PM2 daemon was read"), "{md}");
        let mut same = plan.clone();
        same.changes.retain(|c| c.action == Action::Noop);
        assert!(human_no_changes(&same).contains("the same as at origin/main"));
    }

    fn human_no_changes(plan: &Plan) -> String {
        anstream::adapter::strip_str(&human(plan)).to_string()
    }
}
