//! `reconcile apply`: take the lock, check the desired state, then run the apply
//! pipeline ([`crate::apply::pipeline`]: plan or check a saved plan, journal, guard,
//! resolve, preflight, confirm, execute, verify) and print what it did.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{live_source, open_project, print, require_format};
use crate::ExitStatus;
use crate::apply::dump::SaveOutcome;
use crate::apply::execute::{Event, Outcome};
use crate::apply::pipeline::{Options, Progress, Request, Verdict, apply_once};
use crate::apply::{ApplyLock, Holder};
use crate::cli::{ApplyArgs, Format, GlobalArgs};
use crate::live::{LiveSource, Pm2Home};
use crate::plan::Plan;
use crate::render;

/// Runs `apply`.
pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<ExitStatus> {
    require_format("apply", global.format, &[Format::Human, Format::Json])?;
    if global.live.is_some() {
        bail!("apply changes the PM2 daemon, so it cannot run on a --live snapshot; drop --live (use `reconcile plan --live FILE` to preview)");
    }
    let project = open_project(global)?.context(
        "apply needs a reconcile.toml naming the ecosystem files and the namespaces this project owns, and there is none here; create one (`reconcile import --namespace NS` writes one from the apps running now), or name it with --config",
    )?;
    let saved = args.plan_file.as_deref().map(load_saved).transpose()?;
    let LiveSource::Daemon(home) = live_source(global, Some(&project))? else {
        bail!("apply needs the PM2 daemon");
    };
    if !home.dir.is_dir() {
        bail!("PM2 home {} does not exist: set [pm2] home or PM2_HOME to the daemon's home", home.dir.display());
    }
    // Promise 3: before anything is read, so the plan cannot go stale under us.
    let _lock = ApplyLock::acquire(&home, &Holder::current())?;
    let Some(desired) = super::plan::desired_state(global, &project, args.env.as_deref())? else {
        return Ok(ExitStatus::Error);
    };
    let request = Request { project: &project, home: &home, desired: &desired, saved: saved.as_ref().map(|(p, plan)| (p.as_path(), plan)) };
    let options = Options { auto_approve: args.auto_approve, allow_blast_radius: args.allow_blast_radius, rollback: args.rollback, only: None, restart: args.restart.clone() };
    let mut terminal = Terminal { human: global.format == Format::Human, quiet: global.quiet };
    let runtime = crate::live::runtime().context("starting the async runtime")?;
    let report = runtime.block_on(apply_once(request, &options, &mut terminal))?;
    let journal = report.journal.as_deref().unwrap_or(Path::new(""));
    let dump = report.dump.as_ref();
    let dump_json = dump.map_or(Value::Null, SaveOutcome::journal_value);
    let dump_failed = dump.is_some_and(SaveOutcome::failed);
    match report.verdict {
        Verdict::Conflicts(conflicts) => {
            super::plan::report_conflicts(&project, &conflicts, desired.len())?;
            Ok(ExitStatus::Error)
        }
        Verdict::Refused(why) => bail!("{why}"),
        Verdict::Noop => {
            if global.format == Format::Json {
                print(&format!("{}\n", json!({"outcome": "noop", "actions": [], "journal": journal, "dump": dump_json})))?;
            } else {
                tell_dump(dump)?;
            }
            Ok(if dump_failed { ExitStatus::Error } else { ExitStatus::Success })
        }
        Verdict::Done { ok, outcome, problems } => {
            match global.format {
                Format::Json => {
                    let mut value = outcome_json(ok, &outcome, &problems, journal);
                    value["dump"] = dump_json;
                    print(&format!("{value}\n"))?;
                }
                _ => {
                    print(&render::apply::summary(&outcome, &problems, report.elapsed_ms))?;
                    tell_dump(dump)?;
                }
            }
            Ok(if ok && !dump_failed { ExitStatus::Success } else { ExitStatus::Error })
        }
    }
}

/// What became of PM2's dump, for people: a line on stdout, or the error on stderr.
fn tell_dump(dump: Option<&SaveOutcome>) -> Result<()> {
    let Some(line) = dump.and_then(SaveOutcome::human) else { return Ok(()) };
    if dump.is_some_and(SaveOutcome::failed) {
        let e = render::style::ERROR;
        let mut stderr = anstream::stderr().lock();
        writeln!(stderr, "{e}error{e:#}: {line}")?;
    } else {
        print(&format!("{line}\n"))?;
    }
    Ok(())
}

/// A saved plan, read and checked for shape.
fn load_saved(path: &Path) -> Result<(PathBuf, Plan)> {
    // A saved plan of 1,000 apps with their live state is a few MB.
    let text = crate::config::read::read_text(path, None, 64 * 1024 * 1024).context("cannot use the saved plan")?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("{}:{}:{}: not a plan saved by `reconcile plan --out`: {e}", path.display(), e.line(), e.column())
    })?;
    if plan.basis.live_source != "daemon" {
        bail!(
            "{}: this plan was made against {} , not the daemon; make one with `reconcile plan --out FILE` (no --live, no --base)",
            path.display(),
            plan.basis.live_source
        );
    }
    Ok((path.to_path_buf(), plan))
}

/// The terminal side of the pipeline: the plan on stdout (human), progress on
/// stderr, and the question before acting.
struct Terminal {
    human: bool,
    /// `-q`: no progress lines (the plan and the summary stay).
    quiet: bool,
}

impl Progress for Terminal {
    fn planned(&mut self, plan: &Plan) -> std::io::Result<()> {
        if self.human {
            print(&render::plan::human(plan)).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn confirm(&mut self, plan: &Plan, home: &Pm2Home) -> Result<(), String> {
        confirm(plan, home)
    }

    fn event(&mut self, event: &Event) {
        if self.human && !self.quiet {
            let mut stderr = anstream::stderr().lock();
            let _ = stderr.write_all(crate::redact::scrub(&render::apply::progress(event)).as_bytes());
        }
    }
}

/// Asks on the terminal; without one, refuses (CI must say --auto-approve).
fn confirm(plan: &Plan, home: &Pm2Home) -> Result<(), String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("no terminal to confirm on, and --auto-approve was not given; nothing was changed. In CI, review the plan and pass --auto-approve".into());
    }
    let mut stderr = anstream::stderr().lock();
    // The plan, with its `Plan:` line, is just above: the question does not repeat it.
    let n = plan.changes.iter().filter(|c| c.action != crate::plan::Action::Noop).count();
    let _ = write!(
        stderr,
        "\nApply {} to the PM2 daemon in {}? Only 'yes' is accepted: ",
        if n == 1 { "this change".to_string() } else { format!("these {n} changes") },
        home.dir.display()
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if answer.trim() == "yes" { Ok(()) } else { Err("apply was not confirmed; nothing was changed".into()) }
}

fn outcome_json(ok: bool, outcome: &Outcome, problems: &[String], journal: &Path) -> Value {
    json!({
        "outcome": if ok { "success" } else { "failed" },
        "actions": outcome.actions,
        "healthy": outcome.healthy,
        "failures": outcome.failures,
        "rolled_back": outcome.rolled_back,
        "aborted": outcome.aborted,
        "problems": problems,
        "warnings": outcome.warnings,
        "journal": journal,
    })
}
