//! The command line: global options and one variant per command (clap derive).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

/// The exit codes, as `--help` and the man page show them.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  success; `plan`: no changes
  1  any error: lint errors, a refused or failed apply, a daemon fault, a usage error
     (unknown command or option, bad value), an internal error
  2  `plan` found changes (no other command exits 2)";

/// The environment `reconcile` reads, for `--help` and the man page.
pub const ENVIRONMENT: &str = "\
Environment:
  PM2_HOME       the PM2 home whose daemon is read (default ~/.pm2; [pm2] home wins)
  RECONCILE_PM2  the pm2 package directory (or its bin/pm2) whose code reconcile reads
                 (default: pm2 on PATH)
  NO_COLOR       no colors in human output (as --color never)
  RUST_LOG       log filter, e.g. debug or reconcile::live=trace (overrides -v)";

/// Top-level examples.
pub const EXAMPLES: &str = "\
Examples:
  reconcile import --namespace shop          # start from what runs now
  reconcile lint                             # check the files named in reconcile.toml
  reconcile plan                             # what apply would do (exit 2: changes)
  reconcile apply                            # do it, after a confirmation
  reconcile -C deploy/ plan --base origin/main --format markdown   # a PR comment";

/// What each command accepts of the global options, and its examples: `--help`,
/// completions and the man pages show a command only what it takes.
struct PerCommand {
    name: &'static str,
    /// The `--format` values it writes (empty: `--format` is hidden and refused).
    formats: &'static [&'static str],
    /// Whether it reads live state (`--live FILE`).
    live: bool,
    /// Whether it loads ecosystem files (`--no-js`).
    js: bool,
    examples: &'static str,
}

const PER_COMMAND: &[PerCommand] = &[
    PerCommand {
        name: "lint",
        formats: &["human", "json", "sarif", "github"],
        live: false,
        js: true,
        examples: "\
  reconcile lint                                # the files named in reconcile.toml
  reconcile --no-js lint ecosystem.config.json  # one file, never running JavaScript
  reconcile lint --format sarif > reconcile.sarif   # for GitHub code scanning
  reconcile lint --explain min-uptime           # what a rule checks and how to fix it
  reconcile lint --list-rules",
    },
    PerCommand {
        name: "plan",
        formats: &["human", "json", "markdown"],
        live: true,
        js: true,
        examples: "\
  reconcile plan                                # against the PM2 daemon
  reconcile plan --env production --out plan.json   # save it for `apply plan.json`
  reconcile plan --base origin/main --format markdown   # a pull request, no daemon read
  reconcile plan --live jlist.json              # against a saved `pm2 jlist`",
    },
    PerCommand {
        name: "status",
        formats: &["human", "json"],
        live: true,
        js: false,
        examples: "\
  reconcile status
  reconcile status --format json | jq '.owned[].name'",
    },
    PerCommand {
        name: "apply",
        formats: &["human", "json"],
        live: false,
        js: true,
        examples: "\
  reconcile apply                               # shows the plan, asks, applies
  reconcile apply --auto-approve --rollback     # in CI: no prompt, undo on failure
  reconcile plan --out plan.json && reconcile apply plan.json   # exactly what was reviewed",
    },
    PerCommand {
        name: "watch",
        formats: &["human", "json"],
        live: false,
        js: true,
        examples: "\
  reconcile watch                               # report drift
  reconcile watch --heal --metrics 127.0.0.1:9464   # heal it; Prometheus at /metrics
  reconcile watch --git-remote /srv/git/deploy.git --branch main   # pull mode",
    },
    PerCommand {
        name: "import",
        formats: &["human", "json"],
        live: true,
        js: false,
        examples: "\
  reconcile import --namespace shop             # ecosystem.config.yaml + reconcile.toml
  reconcile import --namespace shop,jobs --as js --out deploy/",
    },
    PerCommand {
        name: "schema",
        formats: &[],
        live: false,
        js: false,
        examples: "\
  reconcile schema > ecosystem.schema.json      # for an editor's JSON/YAML support
  reconcile schema config > reconcile.schema.json",
    },
    PerCommand {
        name: "completions",
        formats: &[],
        live: false,
        js: false,
        examples: "\
  reconcile completions bash > ~/.local/share/bash-completion/completions/reconcile
  reconcile completions fish > ~/.config/fish/completions/reconcile.fish
  reconcile completions zsh > \"${fpath[1]}/_reconcile\"",
    },
    PerCommand {
        name: "man",
        formats: &[],
        live: false,
        js: false,
        examples: "\
  reconcile man | man -l -
  reconcile man --out /usr/local/share/man/man1   # reconcile.1 and reconcile-COMMAND.1",
    },
];

/// The whole command line as clap sees it: the derive, plus what each command shows
/// of the global options and its examples. `--help`, parsing, completions and the man
/// pages all use this.
pub fn command() -> clap::Command {
    let mut command = Cli::command().after_help(format!(
        "{EXAMPLES}\n\n{EXIT_STATUS}\n\n`reconcile COMMAND --help` shows each command's options and examples; `reconcile man` the manual."
    ));
    let global = |id: &str| command.get_arguments().find(|a| a.get_id() == id).cloned().expect("a global option");
    let (format, live, no_js) = (global("format"), global("live"), global("no_js"));
    for per in PER_COMMAND {
        let (format, live, no_js) = (format.clone(), live.clone(), no_js.clone());
        command = command.mut_subcommand(per.name, |sub| {
            // A subcommand that defines a global option itself keeps its own copy (clap
            // propagates only missing ones), so each can narrow or hide it.
            let format = if per.formats.is_empty() {
                format.hide(true)
            } else {
                format
                    .value_parser(PossibleValuesParser::new(per.formats).map(|v| Format::from_str(&v, true).unwrap_or(Format::Human)))
                    .help(format!("Output format: {}", per.formats.join(", ")))
            };
            sub.arg(format)
                .arg(live.hide(!per.live))
                .arg(no_js.hide(!per.js))
                .after_help(format!("Examples:\n{}\n\n{EXIT_STATUS}", indent(per.examples)))
        });
    }
    command
}

/// Each line indented by two spaces (a `\\` line continuation eats the first's).
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {}", l.trim_start())).collect::<Vec<_>>().join("\n")
}

/// A command's examples, one a line (the top level's with `None`).
pub fn examples(command: Option<&str>) -> String {
    match command {
        None => EXAMPLES.lines().skip(1).map(str::trim_start).collect::<Vec<_>>().join("\n"),
        Some(name) => PER_COMMAND
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.examples.lines().map(str::trim_start).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default(),
    }
}

/// Whether `command` reads live state, so accepts `--live FILE`.
pub fn reads_live(command: &str) -> bool {
    PER_COMMAND.iter().any(|p| p.name == command && p.live)
}

/// Parses the process's arguments with [`command`].
///
/// # Errors
/// A usage error, or the `--help`/`--version` "error" clap uses to print them.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut command = command();
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

/// GitOps for PM2: check ecosystem files, plan against the live daemon, apply only scoped changes.
#[derive(Debug, Parser)]
#[command(name = "reconcile", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The project file (default: reconcile.toml in the working directory).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Output format; each command accepts the formats that make sense for it.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// When to color human output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Refuse to evaluate JavaScript ecosystem files (for untrusted pull requests).
    #[arg(long, global = true)]
    pub no_js: bool,
    /// Read live state from this `pm2 jlist` output instead of the PM2 daemon (for CI and examples).
    #[arg(long, global = true, value_name = "FILE")]
    pub live: Option<PathBuf>,
    /// More detail: lint warnings in full in plan, apply and watch; logging (-v info,
    /// -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: no lint-warning summary and no progress lines; errors, the result
    /// (the plan, the apply summary, the findings of `lint`) and exit codes stay.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Output formats (DESIGN.md, Contracts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Markdown,
    Sarif,
    Github,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check ecosystem files by JSON Schema and policies.
    ///
    /// With no FILE, lints the ecosystem files named in reconcile.toml.
    Lint(LintArgs),
    /// Compare the desired state with the live processes and show the smallest set of changes.
    ///
    /// Exit 0: no changes; 2: changes; 1: an error (lint errors, conflicts, daemon faults).
    Plan(PlanArgs),
    /// Show the live PM2 processes, owned apart from ignored, and warn about crash loops.
    ///
    /// Reads the daemon over its socket ([pm2] home, else $PM2_HOME, else ~/.pm2), or a
    /// `pm2 jlist` file given with --live. Never starts a daemon. Formats: human, json.
    /// Exit codes: 0 the list was read (warnings do not change it), 1 a daemon fault.
    Status(StatusArgs),
    /// Plan, then apply the changes to the PM2 daemon under the safety contract.
    ///
    /// Only processes in the owned namespaces are touched, each by a numeric pm_id
    /// confirmed owned right before the call. One apply at a time per PM2 home; a
    /// journal records everything; ports are checked before acting; each started app
    /// must stay online for its min_uptime (a crash loop is stopped); afterwards every
    /// other process is verified untouched and a fresh plan must be empty.
    /// With PLAN_FILE (from `plan --out`), applies exactly that plan, and refuses if
    /// the desired or live state moved since. Exit 0: applied (or nothing to do);
    /// 1: refused or failed.
    Apply(ApplyArgs),
    /// Watch the desired-state files and the PM2 daemon; report drift, optionally heal it.
    ///
    /// Reports, once when it starts and once when it clears: attribute drift (an app
    /// restarted by hand with other env or options), missing apps, unmanaged processes
    /// in an owned namespace, stopped or errored apps, crash loops ([health]
    /// crash_window_restarts within crash_window_s). Edits to the ecosystem files,
    /// reconcile.toml or policies are linted and planned again at once. Formats: human
    /// (log lines), json (one object a line, each with "kind"). SIGINT or SIGTERM stop
    /// it (exit 0); a daemon that goes away is reported and retried with backoff.
    /// Exit 1 only for bad input at start (no reconcile.toml, a non-loopback --metrics,
    /// an unusable --git-remote).
    Watch(Box<WatchArgs>),
    /// Write an ecosystem file and a reconcile.toml from the live apps of some namespaces.
    ///
    /// Reads the daemon (or a `pm2 jlist` file given with --live) and writes only what
    /// each app set, not what it inherited, so that `reconcile plan` right after shows no
    /// changes. Secret-looking env values are written as they are, and flagged.
    /// Refuses to overwrite existing files unless --force. Formats (of the report): human, json.
    Import(ImportArgs),
    /// Print the JSON Schema of ecosystem files or of reconcile.toml, for editors.
    Schema(SchemaArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(ManArgs),
}

impl Command {
    /// The command's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Lint(_) => "lint",
            Self::Plan(_) => "plan",
            Self::Status(_) => "status",
            Self::Apply(_) => "apply",
            Self::Watch(_) => "watch",
            Self::Import(_) => "import",
            Self::Schema(_) => "schema",
            Self::Completions(_) => "completions",
            Self::Man(_) => "man",
        }
    }
}

/// `reconcile watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Seconds between full re-reads of the daemon (events are seen at once anyway).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Apply the desired state to drifting apps: the whole apply safety contract,
    /// auto-approved, never past the blast-radius guard, rate-limited per app.
    #[arg(long)]
    pub heal: bool,
    /// With --heal: heals per app within --heal-window, and failed heals in a row
    /// before the app is given up on (reported once, not retried until its spec
    /// changes or its drift clears).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub heal_max_attempts: u32,
    /// With --heal: the window (seconds) for --heal-max-attempts.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub heal_window: u64,
    /// With --heal: the wait (seconds) after a failed heal, doubled after each further one.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub heal_backoff: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics; loopback only (127.0.0.1:PORT, [::1]:PORT).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Pull mode: follow this git repository (https://, ssh://, user@host:path, file://
    /// or a path; fetched by the system git) and apply each new commit of --branch,
    /// with heal semantics. reconcile.toml (or --config) is read from the clone, kept
    /// in .reconcile/checkout. https credentials: RECONCILE_GIT_USERNAME and
    /// RECONCILE_GIT_PASSWORD, or --git-credentials-file; never in the URL.
    #[arg(long, value_name = "URL", requires = "branch")]
    pub git_remote: Option<String>,
    /// Pull mode: the branch to follow.
    #[arg(long, value_name = "NAME", requires = "git_remote")]
    pub branch: Option<String>,
    /// Pull mode: seconds between fetches.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub git_interval: u64,
    /// Pull mode: the longest one git call may take (seconds); it is killed after.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..), requires = "git_remote")]
    pub git_timeout: u64,
    /// Pull mode: the directory of the repository holding this host's reconcile.toml
    /// (one repository, a directory per host or group).
    #[arg(long, value_name = "DIR", requires = "git_remote")]
    pub path: Option<PathBuf>,
    /// This host's label (repeatable): `[[hosts]]` entries of reconcile.toml whose
    /// `match` labels all equal this host's add their ecosystem files.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Pull mode, https: a file (mode 600) of `username=NAME` and `password=TOKEN`
    /// lines, instead of RECONCILE_GIT_USERNAME/RECONCILE_GIT_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "git_remote")]
    pub git_credentials_file: Option<PathBuf>,
    /// Pull mode, https: a CA bundle to verify the server with (else the system's,
    /// or GIT_SSL_CAINFO).
    #[arg(long, value_name = "FILE", requires = "git_remote")]
    pub git_ca_file: Option<PathBuf>,
    /// Pull mode, ssh: the private key to log in with.
    #[arg(long, value_name = "FILE", requires = "git_remote")]
    pub git_ssh_key: Option<PathBuf>,
    /// Pull mode, ssh: the known_hosts file the server's key must be in (else ssh's
    /// defaults). Unknown host keys are always refused.
    #[arg(long, value_name = "FILE", requires = "git_remote")]
    pub git_known_hosts: Option<PathBuf>,
    /// Pull mode: apply a commit only if it is signed by a key in this OpenSSH
    /// allowed_signers file; others are reported and the agent stays where it is.
    #[arg(long, value_name = "FILE", requires = "git_remote")]
    pub verify_signers: Option<PathBuf>,
    /// Pull mode: follow the branch also when it moves to a commit that does not
    /// contain the current one (a force-push back); refused otherwise.
    #[arg(long, requires = "git_remote")]
    pub git_allow_rewind: bool,
    /// Which env_<name> block to merge (default: [project] env).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

/// `reconcile apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved by `reconcile plan --out FILE`: apply exactly it, or refuse if stale.
    #[arg(value_name = "PLAN_FILE")]
    pub plan_file: Option<PathBuf>,
    /// Which env_<name> block to merge (default: [project] env).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Do not ask for confirmation (required when there is no terminal, as in CI).
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply even if the plan exceeds the blast-radius guard ([safety] max_deletes,
    /// max_changed_fraction).
    #[arg(long)]
    pub allow_blast_radius: bool,
    /// If the apply fails (a call fails or an app does not stay healthy), restore the
    /// apps it changed to the spec they ran before.
    #[arg(long)]
    pub rollback: bool,
    /// Roll out this app although nothing changed (repeatable): a restart for a fork
    /// app, a reload one instance at a time for a cluster app, under the same safety
    /// contract (guard, preflight, health gate, verification). The name must be a
    /// desired app live in an owned namespace; anything else is an error (exit 1).
    #[arg(long, value_name = "NAME", conflicts_with = "plan_file")]
    pub restart: Vec<String>,
}

/// `reconcile import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The PM2 namespaces to import (and to own); repeat or separate with commas.
    #[arg(long, value_name = "NS", required = true, num_args = 1.., value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// The ecosystem file's format (`--format` is the report's format).
    #[arg(long = "as", value_enum, value_name = "FORMAT", default_value_t = ImportFormat::Yaml)]
    pub file_format: ImportFormat,
    /// Where to write the ecosystem file and reconcile.toml (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Overwrite the files if they exist.
    #[arg(long)]
    pub force: bool,
}

/// The ecosystem file `import` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// `ecosystem.config.yaml`, secrets flagged by comments.
    Yaml,
    /// `ecosystem.config.json`, secrets flagged by warnings (JSON has no comments).
    Json,
    /// `ecosystem.config.cjs` (CommonJS, so a `"type": "module"` package.json cannot break it), secrets flagged by comments.
    Js,
}

/// `reconcile schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum, default_value_t = SchemaKind::Ecosystem)]
    pub which: SchemaKind,
}

/// The schemas `reconcile schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// Ecosystem files (.json, .yaml, .toml, or what a .js file exports).
    Ecosystem,
    /// reconcile.toml.
    Config,
}

/// `reconcile completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `reconcile man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write reconcile.1 and one reconcile-COMMAND.1 per command into DIR instead of printing reconcile(1).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `reconcile status`.
#[derive(Debug, Args)]
pub struct StatusArgs {}

/// `reconcile plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Which env_<name> block to merge (default: [project] env).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Save the plan, with what it was planned against, as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan the change from the desired state at this git ref (the pull-request view;
    /// no PM2 daemon is read).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// With --base: the desired state at this ref instead of the working tree.
    #[arg(long, value_name = "REF", requires = "base")]
    pub head: Option<String>,
}

/// `reconcile lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Ecosystem files (.js .cjs .mjs .json .yaml .yml .toml); default: those in reconcile.toml.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Which env_<name> block to merge, as `pm2 start FILE --env NAME` (default: [project] env).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// List every rule (built-in and from [policies] paths) with its severity, then exit.
    #[arg(long, conflicts_with = "explain")]
    pub list_rules: bool,
    /// Explain one rule (what it checks, why, how to fix, its parameters), then exit.
    #[arg(long, value_name = "RULE")]
    pub explain: Option<String>,
}

/// `--label K=V`: a label name (letters, digits, `-`, `_`, `.`, `/`) and its value.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not K=V (e.g. --label role=web)"))?;
    let name_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !name_ok {
        return Err(format!("`{key}` is not a label name: use letters, digits, `-`, `_`, `.` or `/`"));
    }
    Ok((key.to_string(), value.to_string()))
}
