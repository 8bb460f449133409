//! Glue between the command line and the modules: each command returns an [`ExitStatus`].

mod apply;
mod docs;
mod import;
mod lint;
pub(crate) mod plan;
pub mod status;
mod watch;

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::ExitStatus;
use crate::cli::{Cli, ColorChoice, Command, Format, GlobalArgs};
use crate::config::{LoadOptions, Project};

/// Dispatches one command.
pub fn execute(cli: &Cli) -> Result<ExitStatus> {
    let color = match cli.global.color {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    color.write_global();
    if let Some(dir) = &cli.global.directory {
        std::env::set_current_dir(dir).with_context(|| format!("cannot change to directory {} (-C)", dir.display()))?;
    }
    let name = cli.command.name();
    if cli.global.live.is_some() && !matches!(cli.command, Command::Apply(_) | Command::Watch(_)) && !crate::cli::reads_live(name) {
        anyhow::bail!("`{name}` reads no live state, so --live does not apply to it; drop --live (it is for plan, status and import)");
    }
    match &cli.command {
        Command::Lint(args) => lint::run(&cli.global, args),
        Command::Status(args) => status::run(cli, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Apply(args) => apply::run(&cli.global, args),
        Command::Watch(args) => watch::run(&cli.global, args),
        Command::Import(args) => import::run(&cli.global, args),
        Command::Schema(args) => docs::schema(&cli.global, args),
        Command::Completions(args) => docs::completions(&cli.global, args),
        Command::Man(args) => docs::man(&cli.global, args),
    }
}

/// The project file, if there is one (or if `--config` names one).
fn open_project(global: &GlobalArgs) -> Result<Option<Project>> {
    Ok(Project::discover(global.config.as_deref(), std::path::Path::new("."))?)
}

/// Whether JavaScript may be evaluated, and for how long.
fn load_options(global: &GlobalArgs, project: Option<&Project>) -> LoadOptions {
    let settings = project.map(|p| &p.settings.project);
    LoadOptions {
        allow_js: !global.no_js && settings.is_none_or(|s| s.allow_js),
        js_timeout: Duration::from_millis(settings.map_or(5_000, |s| s.js_timeout_ms)),
        scope: project.map(|p| p.scope.clone()),
        confine: project.is_some(),
    }
}

/// Refuses a `--format` the command does not produce.
fn require_format(command: &str, format: Format, allowed: &[Format]) -> Result<()> {
    if allowed.contains(&format) {
        return Ok(());
    }
    let names: Vec<String> = allowed
        .iter()
        .map(|f| clap::ValueEnum::to_possible_value(f).map_or_else(String::new, |v| v.get_name().to_string()))
        .collect();
    let given = clap::ValueEnum::to_possible_value(&format).map_or_else(String::new, |v| v.get_name().to_string());
    anyhow::bail!("`{command}` does not write --format {given}; use one of: {}", names.join(", "))
}

/// Writes command output to stdout (colors stripped when not wanted).
fn print(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = anstream::stdout().lock();
    // Known secrets never reach the output, whatever text carried them.
    stdout.write_all(crate::redact::scrub(text).as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Where live state comes from: `--live FILE`, else the daemon of `[pm2] home`,
/// `$PM2_HOME` or `~/.pm2` (resolved, never started).
fn live_source(global: &GlobalArgs, project: Option<&Project>) -> Result<crate::live::LiveSource> {
    use crate::live::{LiveSource, Pm2Home};
    if let Some(file) = &global.live {
        return Ok(LiveSource::Snapshot(file.clone()));
    }
    let configured = project.and_then(|p| {
        p.settings.pm2.home.as_ref().map(|home| if home.is_relative() { p.root.join(home) } else { home.clone() })
    });
    Ok(LiveSource::Daemon(Pm2Home::resolve(configured.as_deref())?))
}
