//! `reconcile schema`, `completions` and `man`: what editors, shells and `man` read,
//! generated from what the binary itself uses (the compiled-in schemas, the clap
//! definitions), so it cannot drift from the tool.

use std::path::Path;

use anyhow::{Context as _, Result};
use roff::{Roff, bold, roman};

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
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if args.shell == clap_complete::Shell::Fish {
        command.build();
        text = fish_fixes(&command, &text);
    }
    print(&text)?;
    Ok(ExitStatus::Success)
}

/// What clap's fish script lacks: it offers options a command hides (the global ones
/// it does not take), and falls back to file names where a command takes none or
/// takes one of a few values (`schema ecosystem|config`, `completions SHELL`).
fn fish_fixes(command: &clap::Command, script: &str) -> String {
    let mut hidden: Vec<String> = Vec::new();
    let mut extra = String::new();
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let condition = format!("-n \"__fish_reconcile_using_subcommand {}\"", sub.get_name());
        for arg in sub.get_arguments().filter(|a| a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                hidden.push(format!("{condition} -l {long} "));
            }
        }
        let positionals: Vec<&clap::Arg> = sub.get_positionals().collect();
        let takes_paths = positionals.iter().any(|a| a.get_possible_values().is_empty());
        if takes_paths {
            continue;
        }
        let values: Vec<String> = positionals
            .iter()
            .flat_map(|a| a.get_possible_values())
            .filter(|v| !v.is_hide_set())
            .map(|v| match v.get_help() {
                Some(help) => format!("{}\\t'{}'", v.get_name(), help.to_string().replace('\'', "\\'")),
                None => v.get_name().to_string(),
            })
            .collect();
        if values.is_empty() {
            extra.push_str(&format!("complete -c reconcile {condition} -f\n"));
        } else {
            extra.push_str(&format!("complete -c reconcile {condition} -f -a \"{}\"\n", values.join(" ")));
        }
    }
    let mut out: String = script.lines().filter(|l| !hidden.iter().any(|h| l.contains(h.as_str()))).map(|l| format!("{l}\n")).collect();
    out.push_str(&extra);
    out
}

/// Prints reconcile(1), or writes every page into `--out DIR`.
pub fn man(global: &GlobalArgs, args: &ManArgs) -> Result<ExitStatus> {
    require_format("man", global.format, &[Format::Human])?;
    let mut command = crate::cli::command().disable_help_subcommand(true);
    command.build();
    match &args.out {
        Some(dir) => write_pages(&command, dir)?,
        None => print(&String::from_utf8_lossy(&page(&command, None)?))?,
    }
    Ok(ExitStatus::Success)
}

/// `reconcile.1` and `reconcile-<command>.1` for each command.
fn write_pages(command: &clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("reconcile.1".to_string(), page(command, None)?)];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((format!("reconcile-{}.1", sub.get_name()), page(command, Some(sub.get_name()))?));
    }
    for (name, text) in pages {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write the man page {}", path.display()))?;
    }
    Ok(())
}

/// One page: clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION, OPTIONS (and COMMANDS
/// for the top page), then EXAMPLES, EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO.
fn page(top: &clap::Command, sub: Option<&str>) -> Result<Vec<u8>> {
    let command = match sub {
        Some(name) => top.find_subcommand(name).cloned().context("no such command")?,
        None => top.clone(),
    };
    let has_subcommands = command.has_subcommands();
    let has_version = command.get_version().is_some();
    let man = clap_mangen::Man::new(command);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if has_subcommands {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    section(&mut roff, "EXAMPLES", &crate::cli::examples(sub));
    section(&mut roff, "EXIT STATUS", body(crate::cli::EXIT_STATUS));
    section(&mut roff, "ENVIRONMENT", body(crate::cli::ENVIRONMENT));
    section(&mut roff, "FILES", FILES);
    let mut see_also: Vec<String> = vec!["reconcile(1)".into()];
    see_also.extend(top.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| format!("reconcile-{}(1)", s.get_name())));
    see_also.retain(|p| Some(p.as_str()) != sub.map(|s| format!("reconcile-{s}(1)")).as_deref() && !(sub.is_none() && p == "reconcile(1)"));
    see_also.push("pm2(1)".into());
    roff.control("SH", ["SEE ALSO"]).text([roman(see_also.join(", "))]);
    roff.control("PP", []).text([roman("The README of the reconcile repository; the rules: "), bold("reconcile lint --explain RULE"), roman(".")]);
    roff.to_writer(&mut out)?;
    if has_version {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// What reconcile reads and writes, for the FILES section.
const FILES: &str = "\
reconcile.toml          the project: ecosystem files, owned namespaces, safety, policies
                        (in the working directory, -C DIR, or --config FILE)
ecosystem.config.*      the desired state (.js .cjs .mjs .json .yaml .yml .toml)
.reconcile/journal.jsonl   what apply and heals did ([journal] path)
.reconcile/checkout     watch --git-remote: the followed branch's clone
$PM2_HOME/rpc.sock, pub.sock   the PM2 daemon's sockets (default ~/.pm2)";

/// A text block without its `Heading:` line.
fn body(text: &str) -> &str {
    text.split_once('\n').map_or(text, |(_, rest)| rest)
}

/// A section whose lines are kept as written (no filling).
fn section(roff: &mut Roff, title: &str, lines: &str) {
    roff.control("SH", [title]).control("nf", []);
    for line in lines.lines() {
        roff.text([roman(line.trim_end())]);
    }
    roff.control("fi", []);
}
