//! `reconcile watch`: check the command line, bind the metrics endpoint, sync the
//! followed branch once, then run the watch loop until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::{live_source, open_project, require_format};
use crate::ExitStatus;
use crate::cli::{Format, GlobalArgs, WatchArgs};
use crate::config::Project;
use crate::live::{LiveSource, Pm2Home};
use crate::watch::gitcmd::{Access, Credentials};
use crate::watch::gitops::{self, GitSource};
use crate::watch::metrics::{self, Metrics};
use crate::watch::report::Report;
use crate::watch::{Agent, Checked, Config, HealPolicy, Loader};

/// Runs `watch`.
pub fn run(global: &GlobalArgs, args: &WatchArgs) -> Result<ExitStatus> {
    require_format("watch", global.format, &[Format::Human, Format::Json])?;
    if global.live.is_some() {
        bail!("watch follows the PM2 daemon, so it cannot run on a --live snapshot; drop --live");
    }
    let metrics_addr = args.metrics.as_deref().map(metrics::loopback_address).transpose()?;
    let git = match (&args.git_remote, &args.branch) {
        (Some(remote), Some(branch)) => {
            let checkout = std::path::absolute(gitops::CHECKOUT_DIR).context("resolving the working directory")?;
            let source = GitSource {
                remote: remote.clone(),
                branch: branch.clone(),
                checkout,
                access: access(args)?,
                verify_signers: args.verify_signers.as_deref().map(|f| readable("--verify-signers", f)).transpose()?,
                allow_rewind: args.git_allow_rewind,
            };
            Some((source, Duration::from_secs(args.git_interval)))
        }
        _ => None,
    };
    let sub_path = args.path.as_deref().map(checked_sub_path).transpose()?;
    // Pull mode applies each new commit: it heals, whether or not --heal was given.
    let heal = (args.heal || git.is_some()).then(|| HealPolicy {
        max_attempts: args.heal_max_attempts,
        window: Duration::from_secs(args.heal_window),
        backoff: Duration::from_secs(args.heal_backoff),
    });
    let config = Config {
        interval: Duration::from_secs(args.interval),
        heal,
        git: git.clone(),
        json: global.format == Format::Json,
        settle: Duration::from_millis(1000),
        debounce: Duration::from_millis(200),
    };
    let loader = Glue {
        global,
        env: args.env.clone(),
        labels: args.labels.iter().cloned().collect(),
        checkout: git.as_ref().map(|(s, _)| sub_path.as_ref().map_or_else(|| s.checkout.clone(), |p| s.checkout.join(p))),
        clone_root: git.as_ref().map(|(s, _)| s.checkout.clone()),
        journal: std::path::absolute(crate::apply::journal::DEFAULT_PATH).context("resolving the working directory")?,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    let status = runtime.block_on(async move {
        // Installed first, so a signal during start-up also ends it cleanly.
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let commit = match &git {
            Some((source, _)) => {
                let source = source.clone();
                let checkout = source.checkout.clone();
                match tokio::task::spawn_blocking(move || gitops::sync(&source)).await.context("fetching the branch")? {
                    Ok(synced) => Some(synced.commit),
                    // A clone from an earlier run: keep applying it; the loop retries and reports.
                    Err(e) if !matches!(e, gitops::SyncError::PasswordInUrl { .. }) && gitops::current(&checkout).is_some() => {
                        tracing::warn!(error = %e, "the first sync failed; starting on the commit checked out before");
                        gitops::current(&checkout)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let served = match metrics_addr {
            Some(addr) => {
                let listener = metrics::bind(addr).await?;
                let bound = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
                let m = Arc::new(Metrics::new());
                tokio::spawn(metrics::serve(listener, Arc::clone(&m)));
                Some((m, bound))
            }
            None => None,
        };
        let mut agent = Agent::start(config, loader, served, commit)?;
        let stop = tokio::select! {
            ended = agent.run() => {
                ended?;
                return Ok(ExitStatus::Success);
            }
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        agent.emit(&Report::Stopping { signal: stop })?;
        Ok::<_, anyhow::Error>(ExitStatus::Success)
    });
    // A fetch still running in the blocking pool must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    status
}

/// How the remote is reached, from the flags and the environment. Files named are
/// checked up front, so a typo is an error at start rather than a fetch failure.
fn access(args: &WatchArgs) -> Result<Access> {
    let credentials = match &args.git_credentials_file {
        Some(file) => Some(Credentials::from_file(file)?),
        None => Credentials::from_env(),
    };
    Ok(Access {
        credentials,
        ca_file: args.git_ca_file.as_deref().map(|f| readable("--git-ca-file", f)).transpose()?,
        ssh_key: args.git_ssh_key.as_deref().map(|f| readable("--git-ssh-key", f)).transpose()?,
        known_hosts: args.git_known_hosts.as_deref().map(|f| readable("--git-known-hosts", f)).transpose()?,
        timeout: Duration::from_secs(args.git_timeout),
    })
}

/// `file` as an absolute path, if it can be read (git runs in the clone's directory).
fn readable(flag: &str, file: &Path) -> Result<PathBuf> {
    std::fs::File::open(file).with_context(|| format!("{flag} {}: cannot read the file", file.display()))?;
    std::path::absolute(file).with_context(|| format!("{flag} {}", file.display()))
}

/// `--path DIR`: a directory inside the repository (relative, no `..`).
fn checked_sub_path(dir: &Path) -> Result<PathBuf> {
    let inside = dir.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !inside {
        bail!("--path {}: must be a directory inside the repository, relative to its root and without `..` (e.g. --path hosts/web-1)", dir.display());
    }
    Ok(dir.to_path_buf())
}

/// The command line's side of the watcher: where the project is, how it is checked.
struct Glue<'a> {
    global: &'a GlobalArgs,
    env: Option<String>,
    /// `--label`: selects `[[hosts]]` entries of reconcile.toml.
    labels: std::collections::BTreeMap<String, String>,
    /// Pull mode: the directory of the clone the project is read from (`--path`).
    checkout: Option<PathBuf>,
    /// Pull mode: the clone's root, the project's scope (symlinks stay inside it; the
    /// code revision leaves it out, see `desired::revision`).
    clone_root: Option<PathBuf>,
    /// Pull mode: the journal stays beside the agent, not in the clone.
    journal: PathBuf,
}

impl Loader for Glue<'_> {
    fn load(&mut self) -> Result<(Project, Pm2Home)> {
        let project = match &self.checkout {
            Some(dir) => {
                let mut project = Project::discover(self.global.config.as_deref(), dir)?.with_context(|| {
                    format!(
                        "the followed branch has no {} in {} (the repository's root, or --path); commit one, or name it with --config (relative to that directory)",
                        crate::config::project::FILE_NAME,
                        dir.display()
                    )
                })?;
                // Symlinks among the followed files may lead anywhere inside the checkout, no further.
                project.scope = self.clone_root.clone().unwrap_or_else(|| dir.clone());
                if project.settings.journal.path.as_deref().is_none_or(Path::is_relative) {
                    project.settings.journal.path = Some(self.journal.clone());
                }
                project
            }
            None => open_project(self.global)?.context(
                "watch needs a reconcile.toml naming the ecosystem files and the namespaces this project owns, and there is none here; create one (`reconcile import --namespace NS` writes one from the apps running now), or name it with --config",
            )?,
        };
        let mut project = project;
        let matched = project.select_hosts(&self.labels);
        if !self.labels.is_empty() {
            tracing::info!(matched, labels = ?self.labels, "[[hosts]] entries selected by --label");
        }
        let LiveSource::Daemon(home) = live_source(self.global, Some(&project))? else {
            bail!("watch needs the PM2 daemon");
        };
        if !home.dir.is_dir() {
            bail!("PM2 home {} does not exist: set [pm2] home or PM2_HOME to the daemon's home", home.dir.display());
        }
        Ok((project, home))
    }

    fn check(&mut self, project: &Project) -> Result<Checked> {
        let checked = super::plan::check(self.global, project, self.env.as_deref(), None)?;
        // Warnings in full only with -v: otherwise the watcher's lint line counts them.
        let errors = checked.findings.iter().any(|d| d.severity == crate::validate::Severity::Error);
        let human = if errors || self.global.verbose > 0 { checked.human } else { String::new() };
        let mut findings = checked.findings;
        if self.global.quiet {
            // -q: warnings are not reported at all; errors still are.
            findings.retain(|d| d.severity == crate::validate::Severity::Error);
        }
        Ok(Checked { findings, human, desired: checked.desired })
    }
}
