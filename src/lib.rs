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
    init_logging(cli.global.verbose);
    match commands::execute(&cli) {
        Ok(status) => status,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitStatus::Success;
            }
            let mut stderr = anstream::stderr();
            let _ = writeln!(stderr, "{}error:{} {err:#}", render::style::ERROR, render::style::ERROR.render_reset());
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

/// `-v` raises the level (info, debug, trace); `RUST_LOG` overrides it.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
