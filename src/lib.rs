//! `reconcile`: GitOps for PM2.
//!
//! The data flows through the modules in this order:
//! `config` (files as written) → `desired` (normalized apps) → `validate`
//! (schema and policies) → `live` (the PM2 daemon) → `plan` → `apply` → `watch`,
//! with `cli`, `commands` and `render` at the edges.

pub mod cli;
pub mod commands;
pub mod config;
pub mod desired;
pub mod exit_status;
pub mod import;
pub mod live;
pub mod apply;
pub mod plan;
pub mod redact;
pub mod render;
pub mod validate;
pub mod watch;

#[cfg(test)]
pub mod testing;

use std::io::Write;

pub use exit_status::ExitStatus;


/// Runs one parsed command line and reports a fatal error once, on stderr.
pub fn run(cli: cli::Cli) -> ExitStatus {
    init_logging(cli.global.verbose, cli.global.quiet);
    match commands::execute(&cli) {
        Ok(status) => status,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitStatus::Success;
            }
            let mut stderr = anstream::stderr();
            let message = format!("{err:#}");
            let _ = writeln!(stderr, "{}error:{} {}", render::style::ERROR, render::style::ERROR.render_reset(), redact::scrub(&message));
            ExitStatus::Error
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `-v` raises the level (info, debug, trace), `-q` lowers it to errors; `RUST_LOG` overrides it.
///
/// `RUST_LOG` is read as [`Targets`](tracing_subscriber::filter::Targets)
/// (`debug`, `reconcile::live=trace,warn`), not as an `EnvFilter`: the latter's
/// span and field matching pulls in full-DFA regex compilation, which every
/// JSON Schema `pattern` then paid for at startup (about 0.4 ms of a `plan`).
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match verbose {
        0 if quiet => LevelFilter::ERROR,
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).and_then(|v| v.parse::<Targets>().ok());
    let filter = from_env.unwrap_or_else(|| Targets::new().with_default(level));
    let layer = tracing_subscriber::fmt::layer().with_writer(|| redact::ScrubbedStderr).with_target(false);
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}
