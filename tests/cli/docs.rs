//! `reconcile schema`, `completions` and `man`: what editors, shells and `man` read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{reconcile, run_with_timeout};

fn run(args: &[&str]) -> (i32, String, String) {
    let dir = std::env::temp_dir();
    let out = run_with_timeout(reconcile(&dir).args(args), Duration::from_secs(30));
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every command `reconcile --help` lists (so commands added later are covered too).
fn commands() -> BTreeSet<String> {
    let (_, top, _) = run(&["--help"]);
    let section = top.split("Commands:\n").nth(1).unwrap().split("\n\n").next().unwrap();
    // Names are indented by two spaces; wrapped descriptions by more.
    let names: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(String::from)
        .collect();
    for expected in ["lint", "plan", "status", "import", "schema", "completions", "man"] {
        assert!(names.contains(expected), "{expected} missing from --help: {names:?}");
    }
    names
}

#[test]
fn schema_prints_the_schemas_lint_and_the_config_loader_use() {
    let (code, ecosystem, stderr) = run(&["schema"]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&ecosystem).expect("schema output is JSON");
    assert_eq!(ecosystem, run(&["schema", "ecosystem"]).1);
    assert_eq!(ecosystem.trim_end(), reconcile::validate::schema::ECOSYSTEM_SCHEMA.trim_end(), "not the schema compiled into lint");
    let config: Value = serde_json::from_str(&run(&["--format", "json", "schema", "config"]).1).unwrap();
    assert_eq!(config, serde_json::from_str::<Value>(reconcile::validate::schema::PROJECT_SCHEMA).unwrap());
    assert_ne!(printed, config);

    // An editor using the printed schema agrees with lint: a mistyped `instances` is
    // refused by both, a correct app by neither.
    let validator = jsonschema::validator_for(&printed).unwrap();
    let bad = json!({"apps": [{"name": "api", "script": "server.js", "instances": "many"}]});
    let good = json!({"apps": [{"name": "api", "script": "server.js", "instances": 2}]});
    assert!(!validator.is_valid(&bad) && validator.is_valid(&good));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), bad.to_string()).unwrap();
    let out = run_with_timeout(reconcile(dir.path()).args(["lint", "--format", "json", "bad.json"]), Duration::from_secs(30));
    let lint: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(lint["diagnostics"].as_array().unwrap().iter().any(|d| d["rule"] == "schema"), "{lint}");

    // The config schema accepts the examples' reconcile.toml and refuses an unknown key.
    let validator = jsonschema::validator_for(&config).unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/flyer-crawler/reconcile.toml")).unwrap();
    let example: Value = serde_json::to_value(toml::from_str::<toml::Value>(&example).unwrap()).unwrap();
    assert!(validator.is_valid(&example), "{:?}", validator.iter_errors(&example).map(|e| e.to_string()).collect::<Vec<_>>());
    assert!(!validator.is_valid(&json!({"project": {"namespace": ["typo"]}})));
}

#[test]
fn schema_refuses_an_unknown_name_and_a_foreign_format() {
    let (code, _, stderr) = run(&["schema", "bogus"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("ecosystem") && stderr.contains("config"), "{stderr}");
    let (code, stdout, stderr) = run(&["--format", "sarif", "schema"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty() && stderr.contains("does not write --format sarif"), "{stderr}");
}

#[test]
fn completions_cover_every_command() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell} completion does not mention `{command}`");
        }
        assert!(script.contains("namespace") && script.contains("force"), "{shell}: import's options missing");
    }
    // bash really completes with it: a command, an option, an option's values.
    let (_, bash, _) = run(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reconcile.bash"), &bash).unwrap();
    let complete = |words: &str, current: usize| {
        let script = format!(
            "source ./reconcile.bash; COMP_WORDS=({words}); COMP_CWORD={current}; _reconcile reconcile \"${{COMP_WORDS[{current}]}}\" \"${{COMP_WORDS[{}]}}\"; echo \"${{COMPREPLY[*]}}\"",
            current - 1
        );
        let out = run_with_timeout(std::process::Command::new("bash").arg("-c").arg(script).current_dir(dir.path()), Duration::from_secs(30));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(complete("reconcile im", 1), "import");
    assert_eq!(complete("reconcile import --a", 2), "--as");
    assert_eq!(complete("reconcile import --as ''", 3), "yaml json js");
    let (_, zsh, _) = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef reconcile"), "{}", &zsh[..40.min(zsh.len())]);
    let (_, fish, _) = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c reconcile"));
    let (code, _, stderr) = run(&["completions", "tcsh"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("bash"), "{stderr}");
}

#[test]
fn man_is_roff_with_every_command() {
    let commands = commands();
    let (code, page, stderr) = run(&["man"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH reconcile 1"), "no roff title: {}", &page[..200.min(page.len())]);
    assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for command in &commands {
        assert!(page.contains(&format!("reconcile\\-{command}")), "the man page does not list `{command}`");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, stdout, stderr) = run(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    for command in &commands {
        let page = std::fs::read_to_string(out.join(format!("reconcile-{command}.1")))
            .unwrap_or_else(|e| panic!("reconcile-{command}.1: {e}"));
        assert!(page.starts_with(".ie") || page.contains(&format!(".TH reconcile-{command} 1")), "{page}");
    }
    let import = std::fs::read_to_string(out.join("reconcile-import.1")).unwrap();
    assert!(import.contains("\\-\\-namespace") && import.contains("\\-\\-force"), "{import}");
    assert!(out.join("reconcile.1").is_file());
}

/// Every page has the sections a man page reader looks for; each command's page shows
/// its own examples and only the options it takes.
#[test]
fn man_pages_have_exit_status_environment_files_examples_and_see_also() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, _, stderr) = run(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut pages = vec!["reconcile".to_string()];
    pages.extend(commands().iter().map(|c| format!("reconcile-{c}")));
    for name in &pages {
        let page = std::fs::read_to_string(out.join(format!("{name}.1"))).unwrap();
        for section in [".SH EXAMPLES", ".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH \"SEE ALSO\""] {
            assert!(page.contains(section), "{name}.1 has no {section}");
        }
        for variable in ["PM2_HOME", "NO_COLOR", "RECONCILE_PM2"] {
            assert!(page.contains(variable), "{name}.1 does not mention {variable}");
        }
        assert!(page.contains("usage error"), "{name}.1: the exit codes");
    }
    let plan = std::fs::read_to_string(out.join("reconcile-plan.1")).unwrap();
    assert!(plan.contains("reconcile plan \\-\\-base origin/main \\-\\-format markdown"), "{plan}");
    for quiet in ["schema", "completions", "man"] {
        let page = std::fs::read_to_string(out.join(format!("reconcile-{quiet}.1"))).unwrap();
        assert!(!page.contains("\\-\\-live") && !page.contains("\\-\\-format"), "reconcile-{quiet}.1 shows options it does not take");
    }
}

/// `--help` of each command: examples, the exit status, and only what it accepts.
#[test]
fn each_commands_help_has_examples_and_only_its_own_options() {
    for command in commands() {
        let (code, help, _) = run(&[&command, "--help"]);
        assert_eq!(code, 0);
        assert!(help.contains("Examples:\n  reconcile "), "{command} --help has no examples:\n{help}");
        assert!(help.contains("Exit status:"), "{command} --help: no exit status");
    }
    for quiet in ["schema", "completions", "man"] {
        let (_, help, _) = run(&[quiet, "--help"]);
        assert!(!help.contains("--live") && !help.contains("--format"), "{quiet} --help:\n{help}");
    }
    let (_, lint, _) = run(&["lint", "--help"]);
    assert!(lint.contains("Output format: human, json, sarif, github") && !lint.contains("--live"), "{lint}");
    let (_, plan, _) = run(&["plan", "--help"]);
    assert!(plan.contains("Output format: human, json, markdown") && plan.contains("--live"), "{plan}");
    // What a command does not take is refused, not ignored.
    let (code, _, stderr) = run(&["--live", "x.json", "schema"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--live does not apply"), "{stderr}");
    let (code, _, stderr) = run(&["plan", "--format", "sarif"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("possible values: human, json, markdown"), "{stderr}");
}

/// fish: values, not file names, for `schema` and `completions`; no hidden options.
#[test]
fn fish_completes_values_not_files_where_a_command_takes_no_file() {
    let (_, fish, _) = run(&["completions", "fish"]);
    let schema: Vec<&str> = fish.lines().filter(|l| l.contains("__fish_reconcile_using_subcommand schema\"")).collect();
    assert!(schema.iter().any(|l| l.contains(" -f -a \"ecosystem\\t")), "{schema:#?}");
    assert!(!schema.iter().any(|l| l.contains("-l live") || l.contains("-l format")), "{schema:#?}");
    let shells: Vec<&str> = fish.lines().filter(|l| l.contains("__fish_reconcile_using_subcommand completions\"")).collect();
    assert!(shells.iter().any(|l| l.contains(" -f -a \"") && l.contains("bash") && l.contains("fish")), "{shells:#?}");
    // lint takes files: no -f for it.
    assert!(!fish.lines().any(|l| l.ends_with("__fish_reconcile_using_subcommand lint\" -f")), "lint takes file names");
    // fish itself reads the script, when it is installed.
    if std::process::Command::new("fish").arg("--version").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.fish"), &fish).unwrap();
        let out = run_with_timeout(std::process::Command::new("fish").arg("--no-execute").arg(dir.path().join("r.fish")), Duration::from_secs(30));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
