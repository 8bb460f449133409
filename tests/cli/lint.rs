//! `reconcile lint`: every format PM2 reads, the incident rules, bad input, outputs.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::process::{bin as reconcile, corpus, line_of, reconcile_in, repo, run};

fn findings(output: &crate::support::process::Output) -> Vec<Value> {
    output.json()["diagnostics"].as_array().unwrap().clone()
}

fn has(findings: &[Value], rule: &str, line: usize) -> bool {
    findings.iter().any(|d| d["rule"] == rule && d["line"] == line)
}

// See: incident 003. The config as it was BEFORE the fix is flagged by exec-mode,
// min-uptime and the restart rules, each on the line that needs the edit.
#[test]
fn incident_003_before_config_is_flagged_on_the_right_lines() {
    let dir = repo().join("examples/c3-backend");
    let file = dir.join("ecosystem.config.cjs");
    let output = reconcile_in(&dir, &["lint", "--format", "json"]);
    output.expect_code(1);
    let found = findings(&output);
    let backend = line_of(&file, "name: 'c3-backend'");
    let gateway = line_of(&file, "name: 'chinvex-gateway'");
    let delay = line_of(&file, "restart_delay: 1000");
    assert!(has(&found, "exec-mode", backend), "{found:#?}");
    assert!(has(&found, "min-uptime", backend), "{found:#?}");
    assert!(has(&found, "restart-delay", delay), "{found:#?}");
    assert!(has(&found, "exec-mode", gateway), "{found:#?}");
    assert!(has(&found, "max-restarts", gateway), "{found:#?}");
    assert!(has(&found, "min-uptime", gateway), "{found:#?}");
    assert!(!found.iter().any(|d| d["rule"] == "max-restarts" && d["app"] == "c3-backend"), "c3-backend sets max_restarts: 10");
}

#[test]
fn incident_003_fixed_config_is_clean() {
    let dir = repo().join("examples/c3-backend");
    let output = reconcile_in(&dir, &["lint", "ecosystem.fixed.config.cjs", "--format", "json"]);
    output.expect_code(0);
    let errors: Vec<_> = findings(&output).into_iter().filter(|d| d["severity"] == "error").collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn flyer_crawler_example_lints_clean_in_human_form() {
    let output = reconcile_in(&repo(), &["-C", "examples/flyer-crawler", "lint"]);
    output.expect_code(0);
    assert!(output.stdout.contains("no problems in 1 file (3 apps)"), "{output:#?}");
}

/// Files of the corpus that cannot load, with the cause the error must name.
const CORPUS_LOAD_FAILURES: &[(&str, &str)] = &[
    ("004-", "Cannot find module './pm2.config'"),
    ("018-", "invalid JSON"),
    ("026-", "Cannot find package 'dotenv'"),
    ("027-", "Cannot find package 'dotenv'"),
    ("028-", "Cannot find module 'dotenv'"),
    ("031-", "SyntaxError"),
    ("034-", "SyntaxError"),
    ("037-", "SyntaxError: Unexpected token 'export'"),
    ("041-", "invalid YAML"),
    ("047-", "ReferenceError: npmodule is not defined"),
    ("055-", "Cannot find module 'vastify'"),
    ("058-", "ReferenceError: faltruese is not defined"),
    ("061-", "Cannot find module 'dotenv'"),
];

fn corpus_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('0'))
        .collect();
    files.sort();
    files
}

/// Runs lint on a corpus file with a scrubbed environment: some corpus files print
/// the environment when evaluated, and none of them is trusted code.
fn lint_corpus_file(path: &Path, extra: &[&str]) -> crate::support::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = reconcile();
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .current_dir(home.path())
        .arg("lint")
        .arg(path)
        .args(["--format", "json"])
        .args(extra);
    run(command, Duration::from_secs(30))
}

// Every file of the corpus gets a verdict: loaded and linted, or a clear load error
// naming the cause. Never a panic, never a hang.
#[test]
fn every_corpus_file_gets_a_verdict() {
    let files = corpus_files();
    assert!(files.len() >= 60, "corpus has {} files", files.len());
    let mut loaded = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let output = lint_corpus_file(path, &[]);
        assert!(matches!(output.code, Some(0 | 1)), "{name}: {output:#?}");
        assert!(!output.stderr.contains("panicked"), "{name}: {output:#?}");
        let found = findings(&output);
        let load: Vec<_> = found.iter().filter(|d| d["rule"] == "load").collect();
        match CORPUS_LOAD_FAILURES.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            Some((_, cause)) => {
                assert_eq!(load.len(), 1, "{name} should fail to load: {found:#?}");
                let message = load[0]["message"].as_str().unwrap();
                assert!(message.contains(cause), "{name}: {message:?} does not name {cause:?}");
                assert_eq!(output.code, Some(1), "{name}");
            }
            None => {
                assert!(load.is_empty(), "{name} should load: {load:#?}");
                assert!(output.json()["summary"]["apps"].as_u64().unwrap() >= 1 || found.iter().any(|d| d["rule"] == "schema"), "{name}");
                loaded += 1;
            }
        }
    }
    assert_eq!(loaded, files.len() - CORPUS_LOAD_FAILURES.len());
    eprintln!("corpus: {loaded} of {} files load", files.len());
}

// With --no-js nothing is evaluated: each JavaScript file is refused with a clear
// error, the others are linted as usual.
#[test]
fn no_js_refuses_every_javascript_file_of_the_corpus() {
    for path in corpus_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let output = lint_corpus_file(&path, &["--no-js"]);
        let found = findings(&output);
        let refused = found.iter().any(|d| d["rule"] == "load" && d["message"].as_str().unwrap().contains("refusing to evaluate JavaScript"));
        let is_js = [".js", ".cjs", ".mjs"].iter().any(|e| name.ends_with(e));
        assert_eq!(refused, is_js, "{name}: {found:#?}");
    }
}

#[test]
fn no_js_does_not_run_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let file = dir.path().join("eco.config.js");
    std::fs::write(&file, format!("require('fs').writeFileSync({:?}, 'x');\nmodule.exports = {{ apps: [] }};\n", marker)).unwrap();
    reconcile_in(dir.path(), &["lint", "--no-js", "eco.config.js"]).expect_code(1);
    assert!(!marker.exists(), "--no-js evaluated the file");
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.config.js\"]\nallow_js = false\n").unwrap();
    let output = reconcile_in(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(!marker.exists(), "allow_js = false evaluated the file");
    assert!(output.stdout.contains("refusing to evaluate JavaScript"), "{output:#?}");
}

/// (fixture, where the error must point, words the message must contain)
const BAD_INPUT: &[(&str, &str, &str)] = &[
    ("malformed.json", "malformed.json:3:45", "invalid JSON: Expected comma"),
    ("malformed.yaml", "malformed.yaml:4:", "invalid YAML"),
    ("malformed.toml", "malformed.toml:3:10", "invalid TOML"),
    ("syntax.config.js", "syntax.config.js:3:", "SyntaxError"),
    ("throws.config.js", "throws.config.js:1:", "TypeError"),
    ("forever.config.js", "forever.config.js", "did not finish within"),
    ("missing-module.config.js", "missing-module.config.js:1:", "Cannot find module './not-there/helper'"),
    ("billion-laughs.yaml", "billion-laughs.yaml:", "invalid YAML"),
    ("duplicate-keys.json", "duplicate-keys.json:8:7", "`exec_mode` is written twice"),
    ("duplicate-keys.yaml", "duplicate-keys.yaml:5:5", "`instances` is written twice"),
    ("wrong-types.json", "wrong-types.json:6:7", "`instances`"),
    ("apps-not-a-list.json", "apps-not-a-list.json:2:3", "`apps` is a string; it must be a list"),
    ("empty.json", "empty.json", "file is empty"),
    ("empty.yaml", "empty.yaml", "file is empty"),
    ("empty.config.js", "empty.config.js", "file is empty"),
    ("no-apps.config.js", "no-apps.config.js", "no apps found"),
];

// Each bad input: a clear error naming the file (and line:column where there is one),
// exit code 1, no panic, no hang.
#[test]
fn bad_input_gives_a_clear_located_error_and_exit_1() {
    let dir = repo().join("tests/fixtures/bad");
    for (file, location, words) in BAD_INPUT {
        let mut command = reconcile();
        command.current_dir(&dir).args(["lint", file]);
        let output = run(command, Duration::from_secs(30));
        output.expect_code(1);
        assert!(output.stdout.contains(location), "{file}: no {location:?} in {output:#?}");
        assert!(output.stdout.contains(words), "{file}: no {words:?} in {output:#?}");
        assert!(output.stdout.contains("help:"), "{file}: no help line in {output:#?}");
    }
}

#[test]
fn the_forever_file_is_stopped_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("tests/fixtures/bad/forever.config.js"), dir.path().join("forever.config.js")).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"forever.config.js\"]\njs_timeout_ms = 500\n").unwrap();
    let output = reconcile_in(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stdout.contains("did not finish within 500ms"), "{output:#?}");
    assert!(output.elapsed < Duration::from_secs(10), "took {:?}", output.elapsed);
}

#[test]
fn a_50_mb_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let mut text = String::from("{\"apps\": [{\"name\": \"a\", \"script\": \"a.js\", \"env\": {\"PAD\": \"");
    text.push_str(&"x".repeat(50 * 1024 * 1024));
    text.push_str("\"}}]}");
    std::fs::write(&path, text).unwrap();
    let output = reconcile_in(dir.path(), &["lint", "huge.json"]);
    output.expect_code(1);
    assert!(output.stdout.contains("huge.json") && output.stdout.contains("are refused"), "{output:#?}");
}

#[test]
fn every_format_pm2_reads_plus_toml_loads_with_env_merged() {
    let dir = tempfile::tempdir().unwrap();
    let app = "name: 'api', script: 'server.js', exec_mode: 'fork', min_uptime: 5000, max_restarts: 5, restart_delay: 3000, kill_timeout: 4000, out_file: 'o.log', error_file: 'e.log', log_date_format: 'YYYY', namespace: 'web'";
    std::fs::write(dir.path().join("a.config.js"), format!("module.exports = {{ apps: [{{ {app}, env: {{ PORT: 1 }}, env_production: {{ PORT: 2 }} }}] }};\n")).unwrap();
    // An ES module exports `apps` by name: `export default` is what PM2 cannot read (rule pm2-refuses).
    std::fs::write(dir.path().join("b.config.mjs"), format!("export const apps = [{{ {} }}];\n", app.replace("'api'", "'api-b'"))).unwrap();
    std::fs::write(dir.path().join("c.config.cjs"), format!("module.exports = [{{ {} }}];\n", app.replace("'api'", "'api-c'"))).unwrap();
    let json = serde_json::json!({"apps": [{"name": "api-d", "script": "server.js", "exec_mode": "fork", "min_uptime": 5000, "max_restarts": 5, "restart_delay": 3000, "kill_timeout": 4000, "out_file": "o.log", "error_file": "e.log", "log_date_format": "YYYY", "namespace": "web"}]});
    std::fs::write(dir.path().join("d.json"), json.to_string()).unwrap();
    std::fs::write(dir.path().join("e.yaml"), "- name: api-e\n  script: server.js\n  exec_mode: fork\n  min_uptime: 5s\n  max_restarts: 5\n  restart_delay: 3000\n  kill_timeout: 4000\n  out_file: o.log\n  error_file: e.log\n  log_date_format: YYYY\n  namespace: web\n").unwrap();
    std::fs::write(dir.path().join("f.toml"), "[[apps]]\nname = \"api-f\"\nscript = \"server.js\"\nexec_mode = \"fork\"\nmin_uptime = 5000\nmax_restarts = 5\nrestart_delay = 3000\nkill_timeout = 4000\nout_file = \"o.log\"\nerror_file = \"e.log\"\nlog_date_format = \"YYYY\"\nnamespace = \"web\"\n").unwrap();
    let output = reconcile_in(dir.path(), &["lint", "a.config.js", "b.config.mjs", "c.config.cjs", "d.json", "e.yaml", "f.toml", "--format", "json"]);
    output.expect_code(0);
    assert_eq!(output.json()["summary"]["apps"], 6, "{output:#?}");
    // The same PORT in env and env_production is one app's port, not a conflict;
    // with --env production the port is 2.
    let output = reconcile_in(dir.path(), &["lint", "a.config.js", "--env", "staging", "--format", "json"]);
    let found = findings(&output);
    assert!(found.iter().any(|d| d["rule"] == "missing-env"), "{found:#?}");
}

#[test]
fn sarif_is_a_valid_2_1_0_log_whose_results_name_listed_rules() {
    let dir = repo().join("examples/c3-backend");
    let output = reconcile_in(&dir, &["lint", "--format", "sarif"]);
    output.expect_code(1);
    let log = output.json();
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        assert!(matches!(result["level"].as_str(), Some("error" | "warning")));
        let region = &result["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64().unwrap() >= 1);
        // Relative to the repository root, as code scanning matches them against the diff.
        assert_eq!(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "examples/c3-backend/ecosystem.config.cjs");
    }
}

#[test]
fn github_format_writes_one_annotation_per_finding() {
    let dir = repo().join("examples/c3-backend");
    let output = reconcile_in(&dir, &["lint", "--format", "github"]);
    output.expect_code(1);
    let line = line_of(&dir.join("ecosystem.config.cjs"), "restart_delay: 1000");
    assert!(output.stdout.lines().all(|l| l.starts_with("::error ") || l.starts_with("::warning ")), "{output:#?}");
    assert!(output.stdout.contains(&format!("::error file=examples/c3-backend/ecosystem.config.cjs,line={line},col=7,title=reconcile restart-delay::")), "{output:#?}");
}

#[test]
fn lint_refuses_formats_it_does_not_write() {
    let output = reconcile_in(&repo().join("examples/c3-backend"), &["lint", "--format", "markdown"]);
    output.expect_code(1);
    // After the command, clap refuses it with the formats lint writes.
    assert!(output.stderr.contains("invalid value 'markdown'") && output.stderr.contains("sarif"), "{output:#?}");
    // Before it, lint itself does.
    let output = reconcile_in(&repo().join("examples/c3-backend"), &["--format", "markdown", "lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("does not write --format markdown"), "{output:#?}");
}

#[test]
fn reconcile_toml_with_an_unknown_key_is_an_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\nname = \"x\"\nnamespace = [\"web\"]\n").unwrap();
    let output = reconcile_in(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("reconcile.toml:3:1: unknown field `namespace`"), "{output:#?}");
    let output = reconcile_in(dir.path(), &["--config", "missing.toml", "lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("cannot read missing.toml: No such file or directory"), "{output:#?}");
    assert_eq!(output.stderr.matches("No such file").count(), 1, "the cause is printed once: {output:#?}");
}

#[test]
fn owned_namespaces_custom_policies_and_regrading_come_from_reconcile_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/no-root.toml"),
        "id = \"no-root\"\nseverity = \"error\"\ndescription = \"apps must not run as root\"\nhelp = \"set `uid` to a service user\"\n[[checks]]\nkey = \"uid\"\nrequire = { not = { required = [\"uid\"], properties = { uid = { const = \"root\" } } } }\nmessage = \"`{name}` runs as root\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("eco.json"),
        r#"{"apps": [{"name": "api", "script": "a.js", "user": "root", "namespace": "stock-alert", "min_uptime": 1000}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("reconcile.toml"),
        "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"web\"]\n[policies]\npaths = [\"policies\"]\n[policies.rules.min-uptime]\nmin = 500\n[policies.rules.exec-mode]\nseverity = \"warning\"\n[policies.rules.log-files]\nseverity = \"off\"\n",
    )
    .unwrap();
    let output = reconcile_in(dir.path(), &["lint", "--format", "json"]);
    output.expect_code(1);
    let found = findings(&output);
    let rule = |id: &str| found.iter().find(|d| d["rule"] == id);
    assert_eq!(rule("no-root").unwrap()["severity"], "error");
    assert!(rule("owned-namespace").unwrap()["message"].as_str().unwrap().contains("`stock-alert`"));
    assert!(rule("min-uptime").is_none(), "min = 500 allows 1000");
    assert_eq!(rule("exec-mode").unwrap()["severity"], "warning");
    assert!(rule("log-files").is_none());
    let listed = reconcile_in(dir.path(), &["lint", "--list-rules"]);
    listed.expect_code(0);
    let line = |id: &str| listed.stdout.lines().find(|l| l.starts_with(id)).unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>();
    assert_eq!(line("no-root"), ["no-root", "error", "data"], "{listed:#?}");
    assert_eq!(line("exec-mode"), ["exec-mode", "warning", "data"], "{listed:#?}");
    assert_eq!(line("log-files"), ["log-files", "off", "data"], "{listed:#?}");
    assert!(listed.stdout.contains("[min=500]"), "{listed:#?}");
}

#[test]
fn lint_without_files_or_project_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = reconcile_in(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("no ecosystem files to lint"), "{output:#?}");
}
