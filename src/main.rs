//! Thin binary: parse the command line, run it, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = reconcile::cli::Cli::parse();
    reconcile::run(cli).into()
}
