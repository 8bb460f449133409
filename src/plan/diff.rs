//! `plan::diff`: desired apps against the live list, scoped to the owned namespaces.
//! Pure: no I/O, no clock, no printing.
//!
//! Which attributes change in place and which force a replace follows the
//! experiments in pm2-internals.md §4 (PM2 7.0.4): restart with `current_conf`
//! applies env additions, args, node_args, interpreter and the restart options; it
//! cannot remove an env var (the old top-level copy stays in the child's env), and
//! the CLI path ignores script, cwd, log paths and exec_mode, so those — and a change
//! of namespace — are delete + start. `instances` is never applied by a restart: it
//! is a scale. `tests/cli/live_write.rs`
//! (`restart_applies_update_attributes_in_place_and_never_replace_attributes`)
//! re-checks each class on a real daemon: every app is restarted in place with its new
//! spec, and only the update class then plans as noop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::model::{Action, AttributeChange, Basis, Change, Guard, Ignored, LiveMark, Plan, Reason, Summary};
use crate::config::project::SafetySection;
use crate::desired::DesiredApp;
use crate::desired::spec::env_value;
use crate::live::model::is_shell_variable;
use crate::desired::revision;
use crate::live::{ExecMode, LiveOrigin, LiveProcess, LiveState, ProcessStatus};
use crate::redact::{self, Redactor};

/// A desired app that must not be planned: a start would touch a process that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `live-name-conflict` or `owned-namespace`.
    pub rule: &'static str,
    pub app: String,
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
    pub help: String,
}

/// Plans `desired` against `live` for the owned `namespaces`.
pub fn diff(
    desired: &[DesiredApp],
    live: &LiveState,
    namespaces: &[String],
    safety: &SafetySection,
    redactor: &Redactor,
) -> Result<Plan, Vec<Conflict>> {
    let owned = |ns: &str| namespaces.iter().any(|n| n == ns);
    let mut conflicts = Vec::new();
    let mut changes = Vec::new();
    let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    // Two desired apps with one name (PM2 starts both): their processes cannot be told
    // apart, so no plan is made for them, whatever `unique-name` is graded.
    if desired_names.len() < desired.len() {
        let mut seen = BTreeSet::new();
        for app in desired.iter().filter(|d| !seen.insert(d.name.as_str())) {
            conflicts.push(Conflict {
                rule: "unique-name",
                app: app.name.clone(),
                file: app.file.clone(),
                line: app.line,
                message: format!("`{}` is desired twice; PM2 would run both under one name and reconcile could not tell their processes apart", app.name),
                help: "give each app its own name (or `instances: 2` for two copies of one)".into(),
            });
        }
        return Err(conflicts);
    }

    for app in desired {
        if !owned(&app.namespace) {
            conflicts.push(Conflict {
                rule: "owned-namespace",
                app: app.name.clone(),
                file: app.file.clone(),
                line: app.line,
                message: format!("`{}` is in namespace `{}`, which this project does not own", app.name, app.namespace),
                help: format!("set the app's namespace to one of: {}; or add `{}` to [project] namespaces", namespaces.join(", "), app.namespace),
            });
            continue;
        }
        let group: Vec<&LiveProcess> = live.by_name(&app.name).filter(|p| owned(&p.namespace)).collect();
        if group.is_empty() {
            if let Some(other) = live.by_name(&app.name).next() {
                conflicts.push(Conflict {
                    rule: "live-name-conflict",
                    app: app.name.clone(),
                    file: app.file.clone(),
                    line: app.line,
                    message: format!(
                        "`{}` is already live as pm_id {} in namespace `{}`, which this project does not own; PM2 names are global, so starting it would restart and take over that process",
                        app.name, other.pm_id, other.namespace
                    ),
                    help: "rename the app, or remove the other process by hand if it is really this project's".into(),
                });
                continue;
            }
            changes.push(Change {
                name: app.name.clone(),
                namespace: app.namespace.clone(),
                action: Action::Create,
                attributes: created_attributes(app, redactor),
                reason: Some(Reason::NotLive),
                pm_ids: Vec::new(),
                spec_hash: Some(app.hash.clone()),
                downtime: false,
            });
            continue;
        }
        changes.push(compare(app, &group, redactor, matches!(live.origin, LiveOrigin::Daemon { .. })));
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    let mut unmanaged = Vec::new();
    let mut not_desired: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for process in live.processes.iter().filter(|p| owned(&p.namespace) && !desired_names.contains(p.name.as_str())) {
        // Promise 11: only what this project started (stamped) or adopted (ledger) is
        // ever pruned; anything else in an owned namespace is listed, not deleted.
        if process.spec_hash.is_none() && !live.adopted.contains(&process.pm_id) {
            unmanaged.push(Ignored { name: process.name.clone(), namespace: process.namespace.clone(), pm_id: process.pm_id, unproven: true });
            continue;
        }
        not_desired.entry((process.namespace.clone(), process.name.clone())).or_default().push(process.pm_id);
    }
    for ((namespace, name), pm_ids) in not_desired {
        if safety.prune {
            changes.push(Change {
                name,
                namespace,
                action: Action::Delete,
                attributes: Vec::new(),
                reason: Some(Reason::NotDesired),
                pm_ids,
                spec_hash: None,
                downtime: false,
            });
        } else {
            unmanaged.extend(pm_ids.into_iter().map(|pm_id| Ignored { name: name.clone(), namespace: namespace.clone(), pm_id, unproven: false }));
        }
    }
    changes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let ignored: Vec<Ignored> = live
        .processes
        .iter()
        .filter(|p| !owned(&p.namespace))
        .map(|p| Ignored { name: p.name.clone(), namespace: p.namespace.clone(), pm_id: p.pm_id, unproven: false })
        .collect();
    let summary = summarize(&changes);
    let live_owned_apps: BTreeSet<(&str, &str)> =
        live.processes.iter().filter(|p| owned(&p.namespace)).map(|p| (p.namespace.as_str(), p.name.as_str())).collect();
    let guard = guard(&changes, live_owned_apps.len(), safety);
    let basis = Basis {
        desired_hash: desired_hash(desired),
        live_fingerprint: live_fingerprint(live, &owned),
        live_source: match live.origin {
            LiveOrigin::Daemon { .. } => "daemon".into(),
            LiveOrigin::Snapshot { .. } => "snapshot".into(),
        },
        pm2_version: live.daemon.as_ref().map(|d| d.version.clone()).filter(|v| !v.is_empty()),
        git_commit: None,
        git_dirty: None,
        base_commit: None,
        desired_apps: desired.iter().map(|d| (d.name.clone(), desired_mark(d))).collect(),
        live: live_marks(live, &owned),
    };
    Ok(Plan {
        version: 1,
        project: None,
        namespaces: namespaces.to_vec(),
        changes,
        ignored,
        unmanaged,
        summary,
        guard,
        basis,
    })
}

/// Compares one desired app with its live processes (same name, owned namespaces).
/// `daemon`: the live state is the daemon's now (not a snapshot), so a process's start
/// time can be compared with the code on disk.
fn compare(app: &DesiredApp, group: &[&LiveProcess], redactor: &Redactor, daemon: bool) -> Change {
    let first = group[0];
    let mut attributes = Vec::new();
    let mut push = |path: &str, before: Value, after: Value, forces: bool| {
        if before != after {
            attributes.push(AttributeChange { path: path.to_string(), before, after, forces_replacement: forces });
        }
    };
    // Compared as typed values first: building both sides as JSON for every attribute
    // of every app (nearly all equal) was most of the diff's time.
    if first.namespace != app.namespace {
        push("namespace", json!(first.namespace), json!(app.namespace), true);
    }
    if first.script.as_deref() != Some(app.script.as_path()) {
        push("script", path_value(first.script.as_deref()), json!(app.script), true);
    }
    if first.cwd.as_deref() != Some(app.cwd.as_path()) {
        push("cwd", path_value(first.cwd.as_deref()), json!(app.cwd), true);
    }
    if first.exec_mode != app.exec_mode {
        push("exec_mode", json!(first.exec_mode.as_str()), json!(app.exec_mode.as_str()), true);
    }
    for (key, wanted, live_path) in [
        ("out_file", &app.out_file, &first.out_file),
        ("error_file", &app.error_file, &first.error_file),
        ("log_file", &app.log_file, &first.log_file),
        ("pid_file", &app.pid_file, &first.pid_file),
    ] {
        if let Some(wanted) = wanted
            && !same_log_path(live_path.as_deref(), wanted, first.pm_id) {
                push(key, path_value(live_path.as_deref()), json!(wanted), true);
            }
    }
    if let Some(interpreter) = &app.interpreter
        && first.interpreter.as_ref() != Some(interpreter) {
            push("interpreter", json!(first.interpreter), json!(interpreter), false);
        }
    if first.args != app.args {
        push("args", json!(first.args), json!(app.args), false);
    }
    if first.node_args != app.node_args {
        push("node_args", json!(first.node_args), json!(app.node_args), false);
    }
    for (key, wanted) in &app.options {
        let live_value = first.options.get(key).cloned().unwrap_or(Value::Null);
        if !same_option(&live_value, wanted) {
            push(key, live_value, wanted.clone(), false);
        }
    }
    let live_env: BTreeMap<&String, String> = first.env_set.iter().map(|(k, v)| (k, env_value(v))).collect();
    for (key, wanted) in &app.env {
        // Which live vars the app set is a guess (model::split_env: a value equal to
        // the daemon's own counts as inherited). A var the desired state sets is
        // compared with what the process has, wherever the guess put it: else an app
        // whose NODE_ENV or PYTHONUNBUFFERED matches the daemon's would never be noop.
        let inherited = first.env_inherited.get(key.as_str()).filter(|v| !v.is_object()).map(env_value);
        let before = live_env.get(key).or(inherited.as_ref());
        if before != Some(wanted) {
            let path = format!("env.{key}");
            if redactor.is_secret(key) {
                let before = if before.is_some() { json!(redact::HIDDEN) } else { Value::Null };
                push(&path, before, json!(redact::CHANGED), false);
            } else {
                push(&path, before.map_or(Value::Null, |b| json!(b)), json!(wanted), false);
            }
        }
    }
    // PM2 sets the variable named by `instance_var` (default NODE_APP_INSTANCE) on
    // every start: it is not the app's setting.
    let instance_var = app.options.get("instance_var").and_then(Value::as_str).unwrap_or("NODE_APP_INSTANCE");
    for (key, value) in &live_env {
        // PM2 sets PWD from `cwd` itself (lib/Common.js prepareAppConf). And a login
        // shell's own variables (`OLDPWD`, `SHLVL`, `SSH_*`, `PATH`, ...) are never an
        // app's setting, even when they differ from the daemon's: the shell that ran
        // `pm2 start` is rarely the one that started the daemon (another directory, an
        // SSH session, boot), and each would otherwise force a replace of every app.
        if !app.env.contains_key(*key) && key.as_str() != "PWD" && key.as_str() != instance_var && !is_shell_variable(key) {
            // An env var cannot be removed in place (pm2-internals.md §0.4).
            let before = if redactor.is_secret(key) { json!(redact::HIDDEN) } else { json!(value) };
            push(&format!("env.{key}"), before, Value::Null, true);
        }
    }
    // Code: a stamped revision that differs; or, on a process started before revisions
    // were stamped (or by hand), code that changed on disk after the process started
    // (so upgrading `reconcile` does not roll out every app, and a deploy right after
    // still does). A snapshot's start times are history: unstamped counts as current.
    if let Some(wanted) = &app.revision {
        let stale = group.iter().find(|p| match &p.revision {
            Some(have) => have != wanted,
            None => daemon && app.code_changed_ms.zip(p.started_at_ms).is_some_and(|(code, started)| code > started),
        });
        if let Some(p) = stale {
            let before = p.revision.as_deref().map_or_else(|| json!(UNSTAMPED), |r| json!(revision::short(r)));
            push("revision", before, json!(revision::short(wanted)), false);
        }
    }
    let count = group.len() as u64;
    let scaled = count != app.instances;
    if scaled {
        push("instances", json!(count), json!(app.instances), false);
    }
    let forces = attributes.iter().any(|a| a.forces_replacement);
    let updates = attributes.iter().any(|a| a.path != "instances");
    let (action, reason) = if forces {
        (Action::Replace, Reason::AttributesChanged)
    } else if updates {
        (Action::Update, Reason::AttributesChanged)
    } else if scaled {
        (Action::Scale, Reason::AttributesChanged)
    } else if first.spec_hash.as_deref().is_some_and(|h| h != app.hash) {
        attributes.push(AttributeChange {
            path: "spec_hash".into(),
            before: json!(first.spec_hash),
            after: json!(app.hash),
            forces_replacement: false,
        });
        (Action::Update, Reason::SpecHashChanged)
    } else if let Some(down) = group.iter().find(|p| !matches!(p.status, ProcessStatus::Online | ProcessStatus::Launching)) {
        attributes.push(AttributeChange {
            path: "status".into(),
            before: json!(down.status.as_str()),
            after: json!("online"),
            forces_replacement: false,
        });
        (Action::Update, Reason::NotRunning)
    } else {
        (Action::Noop, Reason::AttributesChanged)
    };
    // A restart of a fork process, or a delete and start, leaves a gap; a reload of
    // an online cluster app (one instance at a time) does not.
    let downtime = match action {
        Action::Replace => true,
        Action::Update => group.iter().any(|p| p.exec_mode == ExecMode::Fork && p.status == ProcessStatus::Online),
        _ => false,
    };
    Change {
        name: app.name.clone(),
        namespace: app.namespace.clone(),
        action,
        attributes,
        reason: (action != Action::Noop).then_some(reason),
        pm_ids: group.iter().map(|p| p.pm_id).collect(),
        spec_hash: Some(app.hash.clone()),
        downtime,
    }
}

/// What the plan shows as the revision of a process started without a revision stamp.
pub const UNSTAMPED: &str = "(unstamped)";

/// `apply --restart NAME`: the named apps' changes become updates (a rollout of the
/// same spec and code) when nothing else was planned for them. Every name must be a
/// desired app that is live in an owned namespace; `Err` says which is not and why.
pub fn restart(mut plan: Plan, names: &[String], safety: &SafetySection) -> Result<Plan, String> {
    for name in names {
        let Some(change) = plan.changes.iter_mut().find(|c| &c.name == name && c.action != Action::Delete) else {
            let why = if plan.ignored.iter().any(|i| &i.name == name) {
                format!("`{name}` runs in a namespace this project does not own ({}); reconcile never touches it", owned_by(&plan, name))
            } else if plan.unmanaged.iter().any(|i| &i.name == name) {
                format!("`{name}` is in an owned namespace but not in the desired state; add it to an ecosystem file first")
            } else {
                format!("`{name}` is not an app of this project; the desired apps are: {}", desired_names(&plan))
            };
            return Err(format!("--restart {name}: {why}; nothing was changed"));
        };
        match change.action {
            Action::Create => return Err(format!("--restart {name}: `{name}` is not running yet; a plain apply starts it; nothing was changed")),
            Action::Noop => {
                change.action = Action::Update;
                change.reason = Some(Reason::Restart);
                change.attributes.push(AttributeChange { path: "restart".into(), before: Value::Null, after: json!("requested"), forces_replacement: false });
            }
            // Already rolled out by this apply.
            _ => {}
        }
    }
    plan.summary = summarize(&plan.changes);
    let live_owned_apps: BTreeSet<(&str, &str)> =
        plan.basis.live.iter().filter(|m| plan.namespaces.contains(&m.namespace)).map(|m| (m.namespace.as_str(), m.name.as_str())).collect();
    plan.guard = guard(&plan.changes, live_owned_apps.len(), safety);
    Ok(plan)
}

fn owned_by(plan: &Plan, name: &str) -> String {
    plan.ignored.iter().filter(|i| i.name == name).map(|i| format!("namespace `{}`, pm_id {}", i.namespace, i.pm_id)).collect::<Vec<_>>().join("; ")
}

fn desired_names(plan: &Plan) -> String {
    let names: Vec<&str> = plan.changes.iter().filter(|c| c.action != Action::Delete).map(|c| c.name.as_str()).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

/// What a `create` will set: the attributes worth reading in review.
fn created_attributes(app: &DesiredApp, redactor: &Redactor) -> Vec<AttributeChange> {
    let mut out = vec![
        ("script", json!(app.script)),
        ("cwd", json!(app.cwd)),
        ("exec_mode", json!(app.exec_mode.as_str())),
        ("instances", json!(app.instances)),
    ];
    if !app.args.is_empty() {
        out.push(("args", json!(app.args)));
    }
    let mut attributes: Vec<AttributeChange> = out
        .into_iter()
        .map(|(path, after)| AttributeChange { path: path.into(), before: Value::Null, after, forces_replacement: false })
        .collect();
    for (key, value) in &app.env {
        let after = if redactor.is_secret(key) { json!(redact::HIDDEN) } else { json!(value) };
        attributes.push(AttributeChange { path: format!("env.{key}"), before: Value::Null, after, forces_replacement: false });
    }
    attributes
}

fn path_value(path: Option<&Path>) -> Value {
    path.map_or(Value::Null, |p| json!(p))
}

/// PM2 adds `-<pm_id>` to log paths of multi-instance apps (unless `merge_logs`) and
/// always to the pid path.
fn same_log_path(live: Option<&Path>, wanted: &Path, pm_id: u64) -> bool {
    let Some(live) = live else { return false };
    if live == wanted {
        return true;
    }
    let stem = wanted.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let with_id = match wanted.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}-{pm_id}.{ext}"),
        None => format!("{stem}-{pm_id}"),
    };
    live == wanted.with_file_name(with_id)
}

/// Options compare as numbers when both are numeric (PM2 may store `"5000"`).
fn same_option(live: &Value, wanted: &Value) -> bool {
    // PM2 keeps a one-element list as its element (`stop_exit_codes: [0]` is live `0`).
    match (live, wanted) {
        (Value::Array(items), other) | (other, Value::Array(items)) if items.len() == 1 && !other.is_array() => {
            return same_option(&items[0], other);
        }
        _ => {}
    }
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match (number(live), number(wanted)) {
        (Some(a), Some(b)) => (a - b).abs() < f64::EPSILON,
        _ => live == wanted,
    }
}

fn summarize(changes: &[Change]) -> Summary {
    let mut summary = Summary::default();
    for change in changes {
        match change.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Scale => summary.scale += 1,
            Action::Delete => summary.delete += 1,
            Action::Noop => summary.noop += 1,
        }
    }
    summary
}

/// The blast-radius guard guards against destruction, not releases: too many deletes,
/// or too large a share of the live owned apps deleted or replaced at once. In-place
/// updates (restart, reload, a code rollout) and scales keep every app; creates
/// disrupt nothing. So a release that restarts every app passes.
fn guard(changes: &[Change], live_owned_apps: usize, safety: &SafetySection) -> Guard {
    let deletes = changes.iter().filter(|c| c.action == Action::Delete).count();
    let disrupted = changes.iter().filter(|c| matches!(c.action, Action::Replace | Action::Delete)).count();
    #[allow(clippy::cast_precision_loss)]
    let changed_fraction = if live_owned_apps == 0 { 0.0 } else { disrupted as f64 / live_owned_apps as f64 };
    let mut violations = Vec::new();
    if deletes > safety.max_deletes {
        violations.push(format!("the plan deletes {deletes} apps; [safety] max_deletes is {}", safety.max_deletes));
    }
    if disrupted >= 2 && changed_fraction > safety.max_changed_fraction {
        violations.push(format!(
            "the plan deletes or replaces {disrupted} of {live_owned_apps} live apps ({:.0}%); [safety] max_changed_fraction is {:.0}%",
            changed_fraction * 100.0,
            safety.max_changed_fraction * 100.0
        ));
    }
    Guard {
        deletes,
        max_deletes: safety.max_deletes,
        changed_fraction,
        max_changed_fraction: safety.max_changed_fraction,
        violations,
    }
}

/// The plan narrowed to the changes of `apps` (by name), with its summary and
/// blast-radius guard computed again for what is left. `watch --heal` uses it to
/// act on the apps it may heal and leave the others (given up, or rate-limited) alone.
pub fn restrict(mut plan: Plan, apps: &BTreeSet<String>, safety: &SafetySection) -> Plan {
    plan.changes.retain(|c| apps.contains(&c.name));
    plan.summary = summarize(&plan.changes);
    let live_owned_apps: BTreeSet<(&str, &str)> = plan
        .basis
        .live
        .iter()
        .filter(|m| plan.namespaces.contains(&m.namespace))
        .map(|m| (m.namespace.as_str(), m.name.as_str()))
        .collect();
    plan.guard = guard(&plan.changes, live_owned_apps.len(), safety);
    plan
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What a saved plan remembers of one desired app: its spec hash, instance count and
/// code revision.
fn desired_mark(app: &DesiredApp) -> String {
    match &app.revision {
        Some(revision) => format!("{}x{}@{}", app.hash, app.instances, revision::short(revision)),
        None => format!("{}x{}", app.hash, app.instances),
    }
}

/// One hash for the whole desired state.
pub fn desired_hash(desired: &[DesiredApp]) -> String {
    let mut pairs: Vec<(&str, String)> = desired.iter().map(|d| (d.name.as_str(), desired_mark(d))).collect();
    pairs.sort_unstable();
    hex(&Sha256::digest(json!(pairs).to_string().as_bytes()))
}

/// A fingerprint of what the plan depends on in the live list: every owned process's
/// identity, pid, status, restarts and stamp, and the names of the others.
pub fn live_fingerprint(live: &LiveState, owned: &dyn Fn(&str) -> bool) -> String {
    let entries = serde_json::to_string(&live_marks(live, owned)).unwrap_or_default();
    hex(&Sha256::digest(entries.as_bytes()))
}

/// What [`live_fingerprint`] covers, one mark a process.
pub fn live_marks(live: &LiveState, owned: &dyn Fn(&str) -> bool) -> Vec<LiveMark> {
    live.processes
        .iter()
        .map(|p| {
            let mine = owned(&p.namespace);
            LiveMark {
                pm_id: p.pm_id,
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                pid: if mine { p.pid } else { None },
                status: mine.then(|| p.status.as_str().to_string()),
                restarts: mine.then_some(p.restarts),
                spec_hash: if mine { p.spec_hash.clone() } else { None },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{desired, foreign, live, live_of};

    #[test]
    fn restrict_keeps_only_the_named_apps_and_recomputes_the_guard() {
        let safety = SafetySection { max_changed_fraction: 0.1, ..SafetySection::default() };
        let app = |name: &str, script: &str| json!({"name": name, "namespace": "web", "script": script});
        let before = desired(json!([app("a", "1.js"), app("b", "1.js"), app("c", "1.js")]));
        let state = live(before.iter().enumerate().map(|(i, d)| live_of(d, i as u64)).collect());
        let after = desired(json!([app("a", "2.js"), app("b", "2.js"), app("c", "2.js")]));
        let full = diff(&after, &state, &owned(), &safety, &Redactor::new(&[])).expect("a plan");
        assert_eq!(full.summary.replace, 3);
        assert!(!full.guard.violations.is_empty(), "three of three disrupted trips the guard");
        let only: BTreeSet<String> = ["b".to_string()].into();
        let narrowed = restrict(full, &only, &safety);
        assert_eq!(narrowed.changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(narrowed.summary.replace, 1);
        assert!(narrowed.guard.violations.is_empty(), "one app alone passes: {:?}", narrowed.guard);
    }

    fn owned() -> Vec<String> {
        vec!["web".into()]
    }

    fn plan(desired: &[DesiredApp], live: &LiveState) -> Plan {
        diff(desired, live, &owned(), &SafetySection::default(), &Redactor::new(&["*TOKEN*".into()])).unwrap()
    }

    fn api(extra: Value) -> Value {
        let mut app = json!({"name": "api", "namespace": "web", "script": "server.js", "exec_mode": "fork",
            "env": {"PORT": 3000}, "min_uptime": 5000});
        for (k, v) in extra.as_object().unwrap() {
            app[k] = v.clone();
        }
        app
    }

    fn action(plan: &Plan, name: &str) -> Action {
        plan.changes.iter().find(|c| c.name == name).unwrap().action
    }

    #[test]
    fn each_action_kind() {
        let before = desired(json!([api(json!({}))]));
        let running = live(vec![live_of(&before[0], 0)]);
        // noop: started from its own spec.
        assert_eq!(action(&plan(&before, &running), "api"), Action::Noop);
        // create: not live.
        assert_eq!(action(&plan(&before, &live(vec![])), "api"), Action::Create);
        // update: env changed in place.
        let changed = desired(json!([api(json!({"env": {"PORT": 3001}}))]));
        let p = plan(&changed, &running);
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].attributes[0].path, "env.PORT");
        // replace: script forces it, and the attribute says so.
        let moved = desired(json!([api(json!({"script": "other.js"}))]));
        let p = plan(&moved, &running);
        assert_eq!(action(&p, "api"), Action::Replace);
        assert!(p.changes[0].attributes.iter().any(|a| a.path == "script" && a.forces_replacement));
        // scale: instances only.
        let scaled = desired(json!([api(json!({"instances": 3}))]));
        let mut three = vec![live_of(&scaled[0], 0)];
        three[0].spec_hash = None;
        assert_eq!(action(&plan(&scaled, &live(three)), "api"), Action::Scale);
        // delete: only with prune, and only what this project started (stamped).
        let mut old_job = foreign("old-job", "web", 1);
        old_job.spec_hash = Some("h".into());
        let extra = live(vec![live_of(&before[0], 0), old_job]);
        let p = plan(&before, &extra);
        assert!(p.changes.iter().all(|c| c.name != "old-job"));
        assert_eq!(p.unmanaged.len(), 1);
        let pruning = SafetySection { prune: true, ..SafetySection::default() };
        let p = diff(&before, &extra, &owned(), &pruning, &Redactor::new(&[])).unwrap();
        assert_eq!(action(&p, "old-job"), Action::Delete);
        assert_eq!(p.changes.iter().find(|c| c.name == "old-job").unwrap().pm_ids, [1]);
    }

    #[test]
    fn two_desired_apps_with_one_name_are_a_conflict_not_a_plan() {
        let apps = desired(json!([api(json!({"env": {"A": "1"}})), api(json!({"env": {"A": "2"}}))]));
        let state = live(vec![live_of(&apps[0], 0), live_of(&apps[1], 1)]);
        let conflicts = diff(&apps, &state, &owned(), &SafetySection::default(), &Redactor::new(&[])).unwrap_err();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].rule, "unique-name");
    }

    #[test]
    fn prune_deletes_only_stamped_or_adopted_processes() {
        let before = desired(json!([api(json!({}))]));
        let pruning = SafetySection { prune: true, ..SafetySection::default() };
        // Started by hand in an owned namespace: listed as unmanaged, never deleted.
        let mut state = live(vec![live_of(&before[0], 0), foreign("legacy-cron", "web", 1)]);
        let p = diff(&before, &state, &owned(), &pruning, &Redactor::new(&[])).unwrap();
        assert!(p.changes.iter().all(|c| c.name != "legacy-cron"), "{:?}", p.changes);
        assert_eq!(p.unmanaged, [Ignored { name: "legacy-cron".into(), namespace: "web".into(), pm_id: 1, unproven: true }]);
        // Recorded in the adoption ledger: it is this project's, and pruned.
        state.adopted.insert(1);
        let p = diff(&before, &state, &owned(), &pruning, &Redactor::new(&[])).unwrap();
        assert_eq!(action(&p, "legacy-cron"), Action::Delete);
    }

    #[test]
    fn env_removal_forces_a_replace_and_stopped_apps_are_restarted() {
        let app = desired(json!([api(json!({}))]));
        let mut process = live_of(&app[0], 0);
        process.env_set.insert("OLD".into(), json!("1"));
        assert_eq!(action(&plan(&app, &live(vec![process])), "api"), Action::Replace);
        let mut stopped = live_of(&app[0], 0);
        stopped.status = crate::live::ProcessStatus::Stopped;
        let p = plan(&app, &live(vec![stopped]));
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].reason, Some(Reason::NotRunning));
    }

    #[test]
    fn a_desired_var_that_equals_the_daemons_is_compared_with_the_inherited_one() {
        // PM2 adds PYTHONUNBUFFERED=1 for python apps; a daemon started from a shell
        // with the same value makes the live split call it inherited.
        let app = desired(json!([api(json!({"env": {"PORT": 3000, "NODE_ENV": "production"}}))]));
        let mut process = live_of(&app[0], 0);
        let value = process.env_set.remove("NODE_ENV").unwrap();
        process.env_inherited.insert("NODE_ENV".into(), value);
        assert_eq!(action(&plan(&app, &live(vec![process.clone()])), "api"), Action::Noop);
        // A different inherited value is still a change, in place.
        process.env_inherited.insert("NODE_ENV".into(), json!("development"));
        let p = plan(&app, &live(vec![process]));
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].attributes[0].before, json!("development"));
    }

    #[test]
    fn a_shell_variable_the_desired_state_lacks_is_not_a_removal() {
        // Started from an SSH session in another directory than the daemon's.
        let app = desired(json!([api(json!({}))]));
        let mut process = live_of(&app[0], 0);
        for (k, v) in [("OLDPWD", "/home/u"), ("SHLVL", "2"), ("SSH_TTY", "/dev/pts/1"), ("PATH", "/usr/local/bin:/usr/bin")] {
            process.env_set.insert(k.into(), json!(v));
        }
        assert_eq!(action(&plan(&app, &live(vec![process.clone()])), "api"), Action::Noop);
        // Anything else the desired state lacks is still a removal.
        process.env_set.insert("FEATURE_FLAG".into(), json!("1"));
        assert_eq!(action(&plan(&app, &live(vec![process])), "api"), Action::Replace);
    }

    #[test]
    fn a_changed_stamp_is_an_update_even_when_fields_match() {
        let app = desired(json!([api(json!({}))]));
        let mut process = live_of(&app[0], 0);
        process.spec_hash = Some("0000".into());
        let p = plan(&app, &live(vec![process]));
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].reason, Some(Reason::SpecHashChanged));
    }

    #[test]
    fn foreign_processes_are_ignored_and_a_same_name_elsewhere_is_a_conflict() {
        let app = desired(json!([api(json!({}))]));
        let state = live(vec![foreign("stock-alert", "stock-alert", 0), foreign("api", "stock-alert", 1)]);
        let conflicts = diff(&app, &state, &owned(), &SafetySection::default(), &Redactor::new(&[])).unwrap_err();
        assert_eq!(conflicts[0].rule, "live-name-conflict");
        assert!(conflicts[0].message.contains("pm_id 1 in namespace `stock-alert`"));
        let state = live(vec![foreign("stock-alert", "stock-alert", 0)]);
        let p = plan(&app, &state);
        assert_eq!(p.ignored, [Ignored { name: "stock-alert".into(), namespace: "stock-alert".into(), pm_id: 0, unproven: false }]);
        assert_eq!(action(&p, "api"), Action::Create);
    }

    #[test]
    fn secrets_never_appear() {
        let app = desired(json!([api(json!({"env": {"PORT": 3000, "API_TOKEN": "s3cret-new"}}))]));
        let mut process = live_of(&app[0], 0);
        process.env_set.insert("API_TOKEN".into(), json!("s3cret-old"));
        let p = plan(&app, &live(vec![process]));
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(redact::CHANGED));
        let created = plan(&app, &live(vec![]));
        assert!(!serde_json::to_string(&created).unwrap().contains("s3cret"));
    }

    #[test]
    fn a_changed_revision_is_an_update_of_that_app_only() {
        let mut apps = desired(json!([api(json!({})), {"name": "b", "namespace": "web", "script": "b.js", "exec_mode": "cluster", "instances": 2}]));
        apps[0].revision = Some("a".repeat(40));
        apps[1].revision = Some("a".repeat(40));
        let mut state = live(vec![live_of(&apps[0], 0), live_of(&apps[1], 1), live_of(&apps[1], 2)]);
        assert!(!plan(&apps, &state).has_changes());
        state.processes[0].revision = Some("b".repeat(40));
        let p = plan(&apps, &state);
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(action(&p, "b"), Action::Noop);
        let change = &p.changes[0];
        assert_eq!(change.attributes.len(), 1);
        assert_eq!(change.attributes[0].path, "revision");
        assert_eq!(change.attributes[0].before, json!("bbbbbbbbbbbb"), "shown short, like a commit id");
        assert_eq!(change.attributes[0].after, json!("aaaaaaaaaaaa"));
        assert!(change.downtime, "a fork app restarts");
        // A cluster app reloads without downtime.
        state.processes[2].revision = Some("b".repeat(40));
        let p = plan(&apps, &state);
        assert_eq!(action(&p, "b"), Action::Update);
        assert!(!p.changes.iter().find(|c| c.name == "b").unwrap().downtime);
    }

    #[test]
    fn an_unstamped_process_rolls_out_only_when_its_code_changed_after_it_started() {
        let mut apps = desired(json!([api(json!({}))]));
        apps[0].revision = Some("a".repeat(40));
        let mut process = live_of(&apps[0], 0);
        process.revision = None;
        process.started_at_ms = Some(2_000);
        apps[0].code_changed_ms = Some(1_000);
        assert_eq!(action(&plan(&apps, &live(vec![process.clone()])), "api"), Action::Noop, "an upgrade alone rolls nothing out");
        apps[0].code_changed_ms = Some(3_000);
        let p = plan(&apps, &live(vec![process]));
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].attributes[0].before, json!(UNSTAMPED));
    }

    #[test]
    fn restart_turns_a_noop_into_an_update_and_refuses_unknown_names() {
        let apps = desired(json!([api(json!({})), {"name": "b", "namespace": "web", "script": "b.js", "exec_mode": "fork"}]));
        let state = live(vec![live_of(&apps[0], 0), live_of(&apps[1], 1), foreign("stock-alert", "stock", 2), foreign("old", "web", 3)]);
        let safety = SafetySection::default();
        let p = restart(plan(&apps, &state), &["api".into()], &safety).unwrap();
        assert_eq!(action(&p, "api"), Action::Update);
        assert_eq!(p.changes[0].reason, Some(Reason::Restart));
        assert_eq!(action(&p, "b"), Action::Noop);
        assert_eq!(p.summary.update, 1);
        let err = restart(plan(&apps, &state), &["stock-alert".into()], &safety).unwrap_err();
        assert!(err.contains("namespace `stock`, pm_id 2") && err.contains("never touches"), "{err}");
        let err = restart(plan(&apps, &state), &["nope".into()], &safety).unwrap_err();
        assert!(err.contains("not an app of this project") && err.contains("api, b"), "{err}");
        let err = restart(plan(&apps, &state), &["old".into()], &safety).unwrap_err();
        assert!(err.contains("not in the desired state"), "{err}");
        let all = restart(plan(&apps, &state), &["api".into(), "b".into()], &safety).unwrap();
        assert!(all.guard.violations.is_empty(), "restarting every app is a release: {:?}", all.guard);
    }

    #[test]
    fn the_guard_counts_deletes_and_replaces_not_updates() {
        // Every app updated in place (incident 000's release): not destruction.
        let apps = desired(json!([api(json!({"env": {"PORT": 1}})), {"name": "b", "namespace": "web", "script": "b.js", "exec_mode": "fork"}]));
        let old = desired(json!([api(json!({})), {"name": "b", "namespace": "web", "script": "b.js", "exec_mode": "fork", "env": {"X": "1"}}]));
        let state = live(vec![live_of(&old[0], 0), live_of(&old[1], 1)]);
        let p = plan(&apps, &state);
        assert_eq!(p.summary.update + p.summary.replace, 2);
        assert_eq!(p.guard.changed_fraction, 0.5, "b's env removal replaces it; api's update does not count");
        assert!(p.guard.violations.is_empty(), "{:?}", p.guard);
        let released = desired(json!([api(json!({"env": {"PORT": 1}})), {"name": "b", "namespace": "web", "script": "b.js", "exec_mode": "fork", "env": {"X": "2"}}]));
        let p = plan(&released, &state);
        assert_eq!(p.summary.update, 2);
        assert_eq!(p.guard.changed_fraction, 0.0);
        // Replacing both is still refused.
        let moved = desired(json!([api(json!({"script": "x.js"})), {"name": "b", "namespace": "web", "script": "y.js", "exec_mode": "fork", "env": {"X": "1"}}]));
        let p = plan(&moved, &state);
        assert_eq!(p.guard.changed_fraction, 1.0);
        assert_eq!(p.guard.violations.len(), 1, "{:?}", p.guard);
        let pruning = SafetySection { prune: true, max_deletes: 0, ..SafetySection::default() };
        let mut b = foreign("b", "web", 1);
        b.spec_hash = Some("h".into());
        let p = diff(&apps[..1], &live(vec![live_of(&apps[0], 0), b]), &owned(), &pruning, &Redactor::new(&[])).unwrap();
        assert!(p.guard.violations[0].contains("deletes 1 apps"), "{:?}", p.guard);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::testing::{desired, foreign, live, live_of};

    const NAMES: &[&str] = &["api", "worker", "stock-alert", "web", "all"];
    const NAMESPACES: &[&str] = &["web", "jobs", "stock-alert", "default"];

    proptest! {
        /// For arbitrary live states, with arbitrary processes in namespaces we do not
        /// own (same-name traps included), no change ever targets a process outside the
        /// owned namespaces.
        #[test]
        fn no_change_targets_a_process_outside_the_owned_namespaces(
            processes in prop::collection::vec((0..NAMES.len(), 0..NAMESPACES.len(), any::<bool>()), 0..12),
            wanted in prop::collection::vec(0..2usize, 0..3),
            prune in any::<bool>(),
        ) {
            let owned: Vec<String> = vec!["web".into(), "jobs".into()];
            let apps: Vec<Value> = wanted.iter().map(|&i| {
                let name = ["api", "worker"][i];
                json!({"name": name, "namespace": "web", "script": "a.js", "exec_mode": "fork"})
            }).collect::<Vec<_>>();
            let mut seen = std::collections::BTreeSet::new();
            let apps: Vec<Value> = apps.into_iter().filter(|a| seen.insert(a["name"].to_string())).collect();
            let wanted = if apps.is_empty() { Vec::new() } else { desired(Value::Array(apps)) };
            let state = live(processes.iter().enumerate().map(|(pm_id, &(name, ns, matches))| {
                let pm_id = pm_id as u64;
                match wanted.iter().find(|d| d.name == NAMES[name]) {
                    Some(d) if matches => { let mut p = live_of(d, pm_id); p.namespace = NAMESPACES[ns].into(); p }
                    _ => foreign(NAMES[name], NAMESPACES[ns], pm_id),
                }
            }).collect());
            let safety = SafetySection { prune, ..SafetySection::default() };
            if let Ok(plan) = diff(&wanted, &state, &owned, &safety, &Redactor::new(&[])) {
                for change in &plan.changes {
                    prop_assert!(owned.contains(&change.namespace), "{change:?}");
                    for pm_id in &change.pm_ids {
                        let process = state.get(*pm_id).unwrap();
                        prop_assert!(owned.contains(&process.namespace), "change {change:?} targets {process:?}");
                        // Promise 11: a delete needs proof of ownership.
                        if change.action == Action::Delete {
                            prop_assert!(process.spec_hash.is_some() || state.adopted.contains(pm_id), "unproven delete {change:?}");
                        }
                    }
                }
                for ignored in &plan.ignored {
                    prop_assert!(!owned.contains(&ignored.namespace));
                    prop_assert!(plan.changes.iter().all(|c| !c.pm_ids.contains(&ignored.pm_id)));
                }
            }
        }
    }
}
