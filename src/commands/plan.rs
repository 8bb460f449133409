//! `reconcile plan`: check, read live state, diff, render. Glue only.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{live_source, load_options, open_project, print, require_format};
use crate::ExitStatus;
use crate::cli::{Format, GlobalArgs, PlanArgs};
use crate::config::{EcosystemFile, Project, git};
use crate::desired::{DesiredApp, Host, revision};
use crate::live::{Fetched, LiveError, LiveState};
use crate::plan::{self, Conflict, Plan};
use crate::redact::Redactor;
use crate::render;
use crate::render::diagnostics::Summary;
use crate::validate::{self, Context, Diagnostic, Registry, Severity};

/// Runs `plan`.
pub fn run(global: &GlobalArgs, args: &PlanArgs) -> Result<ExitStatus> {
    require_format("plan", global.format, &[Format::Human, Format::Json, Format::Markdown])?;
    let project = open_project(global)?.context(
        "plan needs a reconcile.toml naming the ecosystem files and the namespaces this project owns, and there is none here; create one (`reconcile import --namespace NS` writes one from the apps running now), or name it with --config",
    )?;
    let made = match &args.base {
        Some(base) => make_from_git(global, &project, args.env.as_deref(), base, args.head.as_deref())?,
        None => make(global, &project, args.env.as_deref())?.map(|mut plan| {
            if let Some(revision) = git::head(&project.root) {
                plan.basis.git_commit = Some(revision.commit);
                plan.basis.git_dirty = Some(revision.dirty);
            }
            plan
        }),
    };
    let Some(plan) = made else {
        return Ok(ExitStatus::Error);
    };
    if let Some(path) = &args.out {
        write_plan(path, &plan)?;
    }
    let text = match global.format {
        Format::Json => render::plan::json(&plan),
        Format::Markdown => render::plan::markdown(&plan),
        _ => render::plan::human(&plan),
    };
    tracing::debug!(bytes = text.len(), "plan rendered");
    print(&text)?;
    let status = if plan.has_changes() { ExitStatus::Changes } else { ExitStatus::Success };
    // The process exits next (see `make`).
    std::mem::forget(plan);
    Ok(status)
}

/// Everything up to the plan: load and check the desired state (refusing on errors,
/// which are printed), read live state, diff. `None` when checks or conflicts refused.
/// For `reconcile plan` only: it leaks its inputs, as the process is about to exit.
fn make(global: &GlobalArgs, project: &Project, env: Option<&str>) -> Result<Option<Plan>> {
    // The live read is mostly waiting on the daemon (its getMonitorData samples every
    // process), so it runs while the desired state is loaded and checked. It only
    // reads; if the checks refuse, its result is dropped.
    let source = live_source(global, Some(project))?;
    let timeout = Duration::from_millis(project.settings.pm2.timeout_ms);
    // The request is written here, before anything else, so the daemon works on it
    // from the start; a fault found while connecting is reported after the checks.
    let pending = crate::live::start_fetch(&source, timeout);
    // Whoever is free first parses the reply (~3-4 ms for 100 processes): the reader
    // thread when the daemon answers before the checks end, else this thread, whose
    // heap is already faulted in (a fresh thread's arena pays a page fault per 4 KB).
    let checks_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let checks_done = Arc::clone(&checks_done);
        std::thread::spawn(move || -> Result<LiveRead, LiveError> {
            let fetched = pending.and_then(crate::live::PendingFetch::wait)?;
            Ok(if checks_done.load(Ordering::Acquire) { LiveRead::Fetched(fetched) } else { LiveRead::Parsed(fetched.parse()?) })
        })
    };
    let desired = desired_state(global, project, env);
    checks_done.store(true, Ordering::Release);
    let Some(desired) = desired? else {
        return Ok(None);
    };
    tracing::debug!("desired state checked");
    let mut live = match reader.join().map_err(|_| anyhow::anyhow!("the live-state reader thread failed"))?? {
        LiveRead::Parsed(live) => live,
        LiveRead::Fetched(fetched) => fetched.parse()?,
    };
    // What import and earlier applies adopted may be pruned; nothing else unstamped.
    crate::apply::adopted::mark(&mut live, &crate::apply::adopted::ledger_path(&crate::apply::pipeline::journal_path(project)));
    tracing::debug!("live state joined");
    let settings = &project.settings;
    let redactor = Redactor::new(&settings.secrets.patterns);
    let planned = plan::diff(&desired, &live, &settings.project.namespaces, &settings.safety, &redactor);
    tracing::debug!("diffed");
    // This runs once per process, which exits after printing the plan: freeing a
    // hundred processes' env maps and specs one by one took ~0.5 ms of a `plan` run,
    // on its critical path. The OS takes the memory back at exit.
    let apps = desired.len();
    std::mem::forget(live);
    std::mem::forget(desired);
    match planned {
        Ok(mut plan) => {
            plan.project.clone_from(&settings.project.name);
            Ok(Some(plan))
        }
        Err(conflicts) => report_conflicts(project, &conflicts, apps),
    }
}

/// What the reader thread of [`make`] hands back.
enum LiveRead {
    /// The daemon answered before the checks ended; the reader parsed the list.
    Parsed(LiveState),
    /// The checks ended first; the list is parsed on the main thread.
    Fetched(Fetched),
}

/// `--base REF [--head REF]`: the desired state at `base` stands in for the live
/// state (each app as if started from its spec), and the plan shows what the working
/// tree (or `head`) changes. No daemon is read.
fn make_from_git(global: &GlobalArgs, project: &Project, env: Option<&str>, base: &str, head: Option<&str>) -> Result<Option<Plan>> {
    let root = std::path::absolute(&project.root).context("resolving the project directory")?;
    let base_dir = tempfile_dir("base")?;
    let base_commit = git::checkout_project(&root, base, base_dir.path())?;
    let at_base = project_at(project, base_dir.path());
    let Some(mut before) = desired_state_in(global, &at_base, env, Some(&root))? else {
        return Ok(None);
    };
    revision::assign(&mut before, project, revision::At::Ref(base))?;
    let head_dir = tempfile_dir("head")?;
    let (after, commit, dirty) = match head {
        Some(head) => {
            let commit = git::checkout_project(&root, head, head_dir.path())?;
            let mut after = desired_state_in(global, &project_at(project, head_dir.path()), env, Some(&root))?;
            if let Some(apps) = after.as_mut() {
                revision::assign(apps, project, revision::At::Ref(head))?;
            }
            (after, Some(commit), Some(false))
        }
        None => {
            let revision = git::head(&root);
            (desired_state(global, project, env)?, revision.as_ref().map(|r| r.commit.clone()), revision.map(|r| r.dirty))
        }
    };
    let Some(after) = after else {
        return Ok(None);
    };
    let live = crate::plan::baseline::live_from_desired(&before);
    let settings = &project.settings;
    let redactor = Redactor::new(&settings.secrets.patterns);
    match plan::diff(&after, &live, &settings.project.namespaces, &settings.safety, &redactor) {
        Ok(mut plan) => {
            plan.project.clone_from(&settings.project.name);
            plan.basis.live_source = format!("git {base}");
            plan.basis.base_commit = Some(base_commit);
            // The baseline's processes are stand-ins: their ids mean nothing.
            for change in &mut plan.changes {
                change.pm_ids.clear();
            }
            plan.basis.git_commit = commit;
            plan.basis.git_dirty = dirty;
            Ok(Some(plan))
        }
        Err(conflicts) => report_conflicts(project, &conflicts, after.len()),
    }
}

/// A temporary directory for a checkout (removed when dropped).
fn tempfile_dir(what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(&format!("reconcile-{what}-")).tempdir().context("creating a temporary directory")
}

/// The same project, with its files read from `dir` (a checkout of another ref).
fn project_at(project: &Project, dir: &Path) -> Project {
    let mut moved = project.clone();
    moved.root = dir.to_path_buf();
    moved.scope = dir.to_path_buf();
    moved
}

/// Loads the project's ecosystem files, runs every check, and normalizes the apps.
/// Prints the findings (to stderr) and returns `None` while any error stands.
pub fn desired_state(global: &GlobalArgs, project: &Project, env: Option<&str>) -> Result<Option<Vec<DesiredApp>>> {
    desired_state_in(global, project, env, None)
}

/// As [`desired_state`]; with `resolve_in`, relative paths resolve against that
/// directory instead of where the files were read (a checkout stands in for it).
fn desired_state_in(global: &GlobalArgs, project: &Project, env: Option<&str>, resolve_in: Option<&Path>) -> Result<Option<Vec<DesiredApp>>> {
    let checked = check(global, project, env, resolve_in)?;
    let text = findings_for(global, &checked);
    if !text.is_empty() {
        use std::io::Write;
        let mut stderr = anstream::stderr().lock();
        stderr.write_all(crate::redact::scrub(&text).as_bytes())?;
    }
    Ok(checked.desired)
}

/// What `plan`, `apply` and `watch` print of the checks: every finding when one is an
/// error (or with `-v`); warnings alone as one line saying how to see them (none with
/// `-q`). `lint` is the command that shows warnings in full.
pub fn findings_for(global: &GlobalArgs, checked: &Checked) -> String {
    let errors = checked.findings.iter().any(|d| d.severity == Severity::Error);
    if checked.findings.is_empty() || (global.quiet && !errors) {
        String::new()
    } else if errors || global.verbose > 0 {
        checked.human.clone()
    } else {
        render::diagnostics::warnings_line(&checked.findings)
    }
}

/// The desired state after every check, with the findings kept as data.
#[derive(Debug)]
pub struct Checked {
    /// Every finding, errors and warnings.
    pub findings: Vec<Diagnostic>,
    /// The findings rendered for people (empty when there are none).
    pub human: String,
    /// The normalized apps; `None` while any error stands.
    pub desired: Option<Vec<DesiredApp>>,
}

/// Loads the project's ecosystem files, runs every check, and normalizes the apps,
/// printing nothing (`watch` reports the findings its own way).
pub fn check(global: &GlobalArgs, project: &Project, env: Option<&str>, resolve_in: Option<&Path>) -> Result<Checked> {
    let settings = &project.settings;
    let registry = Registry::load(&settings.policies, &project.root)?;
    tracing::debug!("policies loaded");
    let files = project.ecosystem_paths();
    if files.is_empty() {
        anyhow::bail!("{}: [project] ecosystem names no files", project.path.display());
    }
    if settings.project.namespaces.is_empty() {
        anyhow::bail!("{}: [project] namespaces is empty; list the PM2 namespaces this project owns", project.path.display());
    }
    let options = load_options(global, Some(project));
    let mut loaded = Vec::new();
    let mut findings = Vec::new();
    for path in &files {
        match EcosystemFile::load(path, &options) {
            Ok(file) => loaded.push(file),
            Err(error) => findings.push(validate::load_error(&error)),
        }
    }
    tracing::debug!(files = loaded.len(), "ecosystem files loaded");
    let env = env.or(settings.project.env.as_deref());
    let ctx = Context { registry: &registry, env, owned: Some(&settings.project.namespaces) };
    let (found, checked) = validate::run(&loaded, ctx);
    findings.extend(checked);
    findings.extend(validate::project_findings(&registry, project));
    tracing::debug!(findings = findings.len(), "checks run");
    let sources: Vec<_> = loaded.iter().map(|f| &f.source).collect();
    let summary = Summary::new(files.len(), found.iter().map(|f| f.apps.len()).sum(), &findings);
    let human = if findings.is_empty() { String::new() } else { render::diagnostics::human(&findings, &sources, summary) };
    if findings.iter().any(|d| d.severity == Severity::Error) {
        return Ok(Checked { findings, human, desired: None });
    }
    let host = Host::current();
    let mut desired = Vec::new();
    for entry in &found {
        let path = entry.file.source.path();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = match resolve_in {
            Some(real_root) => real_root.join(parent.strip_prefix(&project.root).unwrap_or(Path::new(""))),
            None => std::path::absolute(parent).with_context(|| format!("resolving the directory of {}", path.display()))?,
        };
        for app in &entry.apps {
            let line = entry.file.map.locate(&app.pointer_of("name")).map_or(0, |l| l.line);
            desired.push(DesiredApp::build(app, path, line, &dir, &host));
        }
    }
    // The code revision of each app, from the work tree (a checkout of another ref is
    // given its revisions by the caller, from that ref).
    if resolve_in.is_none() {
        revision::assign(&mut desired, project, revision::At::WorkTree)?;
        tracing::debug!("code revisions read");
    }
    Ok(Checked { findings, human, desired: Some(desired) })
}

/// Findings go to stderr, so that stdout stays the plan.
fn report(findings: &[Diagnostic], sources: &[&crate::config::SourceFile], summary: Summary) -> Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    use std::io::Write;
    let text = render::diagnostics::human(findings, sources, summary);
    let mut stderr = anstream::stderr().lock();
    stderr.write_all(crate::redact::scrub(&text).as_bytes())?;
    Ok(())
}

/// Prints conflicts as findings (stderr); the plan is refused.
pub(super) fn report_conflicts(project: &Project, conflicts: &[Conflict], apps: usize) -> Result<Option<Plan>> {
    let findings = conflict_findings(project, conflicts)?;
    report(&findings, &[], Summary::new(project.ecosystem_paths().len(), apps, &findings))?;
    Ok(None)
}

/// Conflicts as findings (always errors: they protect processes that are not ours).
pub fn conflict_findings(project: &Project, conflicts: &[Conflict]) -> Result<Vec<Diagnostic>> {
    let registry = Registry::load(&project.settings.policies, &project.root)?;
    Ok(conflicts.iter().filter_map(|c| conflict_finding(&registry, c)).collect())
}

fn conflict_finding(registry: &Registry, conflict: &Conflict) -> Option<Diagnostic> {
    let at = (conflict.line > 0).then_some(crate::config::Location { line: conflict.line, column: 1 });
    // A conflict refuses the plan even where its rule is graded `off`: it is still said.
    let mut finding = validate::make(registry, conflict.rule, &conflict.file, at, conflict.message.clone(), Some(conflict.help.clone()), Some(conflict.app.clone()))
        .unwrap_or_else(|| Diagnostic {
            rule: conflict.rule.to_string(),
            severity: Severity::Error,
            file: conflict.file.clone(),
            line: conflict.line,
            column: usize::from(conflict.line > 0),
            message: conflict.message.clone(),
            help: conflict.help.clone(),
            app: Some(conflict.app.clone()),
        });
    // Conflicts protect processes that are not ours: they are always errors.
    finding.severity = Severity::Error;
    Some(finding)
}

pub(super) fn write_plan(path: &Path, plan: &Plan) -> Result<()> {
    let text = render::plan::json(plan);
    std::fs::write(path, crate::redact::scrub(&text).as_bytes()).with_context(|| format!("cannot write the plan to {}", path.display()))
}
