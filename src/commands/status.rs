//! `reconcile status`: read the live list, assess health, render. Glue only.

use std::time::Duration;

use anyhow::Result;

use super::{live_source, open_project, require_format};
use crate::ExitStatus;
use crate::cli::{Cli, Format, StatusArgs};
use crate::live::health::{self, HealthThresholds};
use crate::apply::dump;
use crate::live::{self, LiveSource};
use crate::render;

/// Runs `reconcile status`. Exit 0 when the list was read, warnings or not (they are
/// shown on stderr, or under `warnings` in JSON); 1 on any daemon fault.
pub fn run(cli: &Cli, _args: &StatusArgs) -> Result<ExitStatus> {
    let format = cli.global.format;
    require_format("status", format, &[Format::Human, Format::Json])?;
    // `-C` has already been applied by `commands::execute`.
    let project = open_project(&cli.global)?;
    let settings = project.as_ref().map(|p| p.settings.clone()).unwrap_or_default();
    let source = live_source(&cli.global, project.as_ref())?;
    let timeout = Duration::from_millis(settings.pm2.timeout_ms);
    // The owned apps are compared with PM2's dump for a project on the daemon (not a
    // snapshot), unless `[pm2] save = false`.
    let compared = match (&project, &source) {
        (Some(project), LiveSource::Daemon(home)) if project.settings.pm2.save => {
            Some((dump::Scope { namespaces: &project.settings.project.namespaces, only: None }, home))
        }
        _ => None,
    };
    let pending = live::start_fetch(&source, timeout)?;
    // Read while the daemon answers (it takes ~10 ms for 100 apps).
    let saved = compared.map(|(scope, home)| dump::read_saved(&home.dir, Some(&scope)));
    tracing::debug!("dump read");
    let fetched = pending.wait()?;
    tracing::debug!("list fetched");
    // Before parsing (which consumes the replies): the owned apps' whole `pm2_env`s.
    let dump = compared.zip(saved).and_then(|((scope, home), saved)| {
        let live = dump::live_entries_from_text(fetched.list_text()?, &scope).ok()?;
        tracing::debug!("live entries parsed");
        Some(dump::check_saved(&home.dir, saved, &live, &scope))
    });
    // Status shows no env and no options: the list is read without them.
    let state = fetched.parse_with(live::model::Detail::Summary)?;
    let thresholds = HealthThresholds {
        crash_restarts: settings.health.crash_restarts,
        crash_window_restarts: settings.health.crash_window_restarts,
        crash_window_s: settings.health.crash_window_s,
    };
    let owns = |ns: &str| project.as_ref().is_some_and(|p| p.owns(ns));
    tracing::debug!(processes = state.processes.len(), "live state read");
    let mut report = health::assess(&state, thresholds, project.is_some(), owns);
    if let Some(check) = &dump
        && check.error.is_none()
    {
        let unsaved: std::collections::BTreeSet<u64> = check.unsaved.iter().flat_map(|u| u.pm_ids.iter().copied()).collect();
        for row in report.processes.iter_mut().filter(|r| r.owned) {
            row.unsaved = Some(unsaved.contains(&row.pm_id));
        }
    }
    render::status::write(&report, dump.as_ref(), format, cli.global.color)?;
    tracing::debug!("status written");
    Ok(ExitStatus::Success)
}
