//! Glue between the command line and the modules: each command returns an [`ExitStatus`].

pub mod status;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{Cli, Command};

/// Dispatches one command.
pub fn execute(cli: &Cli) -> Result<ExitStatus> {
    match &cli.command {
        Command::Lint(_args) => anyhow::bail!("lint is being built"),
        Command::Status(args) => status::run(cli, args),
    }
}
