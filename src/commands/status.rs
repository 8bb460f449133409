//! `reconcile status`: read the live list, assess health, render. Glue only.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::ExitStatus;
use crate::cli::{Cli, Format, StatusArgs};
use crate::config::Project;
use crate::live::health::{self, HealthThresholds};
use crate::live::{self, LiveSource, Pm2Home};
use crate::render;

/// Runs `reconcile status`. Exit 0 when the list was read, warnings or not (they are
/// shown on stderr, or under `warnings` in JSON); 1 on any daemon fault.
pub fn run(cli: &Cli, _args: &StatusArgs) -> Result<ExitStatus> {
    let format = cli.global.format;
    if !matches!(format, Format::Human | Format::Json) {
        anyhow::bail!("status supports --format human or json");
    }
    let dir = match &cli.global.directory {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    let project = Project::discover(cli.global.config.as_deref(), &dir)?;
    let settings = project.as_ref().map(|p| p.settings.clone()).unwrap_or_default();
    let source = match &cli.global.live {
        Some(file) => LiveSource::Snapshot(if file.is_absolute() { file.clone() } else { dir.join(file) }),
        None => {
            let configured = settings.pm2.home.as_ref().map(|home| match &project {
                Some(p) if home.is_relative() => p.root.join(home),
                _ => home.clone(),
            });
            LiveSource::Daemon(Pm2Home::resolve(configured.as_deref())?)
        }
    };
    let state = live::read(&source, Duration::from_millis(settings.pm2.timeout_ms))?;
    let thresholds = HealthThresholds {
        crash_restarts: settings.health.crash_restarts,
        crash_window_restarts: settings.health.crash_window_restarts,
        crash_window_s: settings.health.crash_window_s,
    };
    let owns = |ns: &str| project.as_ref().is_some_and(|p| p.owns(ns));
    tracing::debug!(processes = state.processes.len(), "live state read");
    let report = health::assess(&state, thresholds, project.is_some(), owns);
    render::status::write(&report, format, cli.global.color)?;
    tracing::debug!("status written");
    Ok(ExitStatus::Success)
}
