//! `reconcile schema`, `completions` and `man`: what editors, shells and `man` read,
//! generated from what the binary itself uses (the compiled-in schemas, the clap
//! definitions), so it cannot drift from the tool.

use std::path::Path;

use anyhow::{Context as _, Result};


use super::{print, require_format};
use crate::ExitStatus;
use crate::cli::{CompletionsArgs, Format, GlobalArgs, ManArgs, SchemaArgs, SchemaKind};
use crate::validate::schema::{ECOSYSTEM_SCHEMA, PROJECT_SCHEMA};

/// Prints one JSON Schema, exactly as `lint` uses it.
pub fn schema(global: &GlobalArgs, args: &SchemaArgs) -> Result<ExitStatus> {
    require_format("schema", global.format, &[Format::Human, Format::Json])?;
    let text = match args.which {
        SchemaKind::Ecosystem => ECOSYSTEM_SCHEMA,
        SchemaKind::Config => PROJECT_SCHEMA,
    };
    print(text)?;
    if !text.ends_with('\n') {
        print("\n")?;
    }
    Ok(ExitStatus::Success)
}

/// Prints a completion script for `args.shell`.
pub fn completions(global: &GlobalArgs, args: &CompletionsArgs) -> Result<ExitStatus> {
    require_format("completions", global.format, &[Format::Human])?;
    let mut command = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "reconcile", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(ExitStatus::Success)
}

/// Prints reconcile(1), or writes every page into `--out DIR`.
pub fn man(global: &GlobalArgs, args: &ManArgs) -> Result<ExitStatus> {
    require_format("man", global.format, &[Format::Human])?;
    let command = crate::cli::command();
    match &args.out {
        Some(dir) => write_pages(command, dir)?,
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out).context("rendering the man page")?;
            print(&String::from_utf8_lossy(&out))?;
        }
    }
    Ok(ExitStatus::Success)
}

/// `reconcile.1` and `reconcile-<command>.1` for each command.
fn write_pages(command: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command, dir).with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(())
}
