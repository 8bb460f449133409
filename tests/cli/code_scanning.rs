//! `lint --format sarif` and `--format github` as code scanning and the Actions log
//! read them: valid SARIF 2.1.0 (checked against the official schema, vendored),
//! paths relative to the repository root, rules documented (`--explain`, docs/rules.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::process::{reconcile_in, repo};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A repository whose reconcile project lives in `deploy/`, with findings (an app
/// without min_uptime, exec_mode, max_restarts).
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    std::fs::create_dir(&deploy).unwrap();
    std::fs::write(
        deploy.join("reconcile.toml"),
        "[project]\nname = \"shop\"\necosystem = [\"ecosystem.config.json\"]\nnamespaces = [\"shop\"]\n",
    )
    .unwrap();
    std::fs::write(
        deploy.join("ecosystem.config.json"),
        "{\n  \"apps\": [\n    {\n      \"name\": \"api\",\n      \"namespace\": \"shop\",\n      \"script\": \"server.js\"\n    }\n  ]\n}\n",
    )
    .unwrap();
    git(dir.path(), &["init", "-q"]);
    dir
}

#[test]
fn sarif_is_valid_against_the_official_2_1_0_schema_with_repository_relative_paths() {
    let dir = repository();
    let output = reconcile_in(dir.path(), &["-C", "deploy", "lint", "--format", "sarif"]);
    output.expect_code(1);
    let log = output.json();

    let schema_text = std::fs::read_to_string(repo().join("tests/fixtures/sarif/sarif-schema-2.1.0.json")).unwrap();
    let schema: Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&log).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid SARIF 2.1.0: {errors:#?}");
    // The schema does bite: a log without `version` is refused.
    let mut broken = log.clone();
    broken.as_object_mut().unwrap().remove("version");
    assert!(!validator.is_valid(&broken));

    let run = &log["runs"][0];
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let base = url::Url::from_directory_path(&root).unwrap().to_string();
    assert_eq!(run["originalUriBaseIds"]["%SRCROOT%"]["uri"], base.as_str(), "{run:#}");
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for result in results {
        let location = &result["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(location["uri"], "deploy/ecosystem.config.json", "{result:#}");
        assert_eq!(location["uriBaseId"], "%SRCROOT%");
    }
    let doc = std::fs::read_to_string(repo().join("docs/rules.md")).unwrap();
    for rule in run["tool"]["driver"]["rules"].as_array().unwrap() {
        let (id, name) = (rule["id"].as_str().unwrap(), rule["name"].as_str().unwrap());
        assert_ne!(id, name, "SARIF1001: a rule's name must differ from its id");
        let help = rule["helpUri"].as_str().unwrap_or_else(|| panic!("{id} has no helpUri"));
        assert!(help.ends_with(&format!("docs/rules.md#{id}")), "{help}");
        assert!(doc.contains(&format!("\n## {id}\n")), "docs/rules.md has no section for {id}");
    }
}

#[test]
fn github_annotations_name_files_from_the_repository_root() {
    let dir = repository();
    let output = reconcile_in(dir.path(), &["-C", "deploy", "lint", "--format", "github"]);
    output.expect_code(1);
    assert!(!output.stdout.is_empty());
    for line in output.stdout.lines() {
        assert!(line.contains(" file=deploy/ecosystem.config.json,"), "{line}");
    }
    // Outside a repository, paths stay relative to the working directory.
    let plain = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("deploy/ecosystem.config.json"), plain.path().join("eco.json")).unwrap();
    let output = reconcile_in(plain.path(), &["lint", "--format", "github", "eco.json"]);
    assert!(output.stdout.lines().all(|l| l.contains(" file=eco.json,")), "{output:#?}");
}

#[test]
fn lint_explain_prints_a_rules_documentation() {
    let dir = tempfile::tempdir().unwrap();
    let output = reconcile_in(dir.path(), &["lint", "--explain", "min-uptime"]);
    output.expect_code(0);
    for needle in ["min-uptime (error, built-in)", "min_uptime must be set", "How to fix: set `min_uptime: 5000`", "Incident 003", "docs/rules.md#min-uptime"] {
        assert!(output.stdout.contains(needle), "{needle:?} missing: {output:#?}");
    }
    let output = reconcile_in(dir.path(), &["lint", "--explain", "min-uptme"]);
    output.expect_code(1);
    assert!(output.stderr.contains("no rule `min-uptme`") && output.stderr.contains("min-uptime"), "{output:#?}");
}

/// docs/rules.md is what the rules say (RECONCILE_BLESS=1 rewrites it).
#[test]
fn docs_rules_md_is_current() {
    let registry = reconcile::validate::Registry::load(&Default::default(), Path::new(".")).unwrap();
    let expected = reconcile::render::diagnostics::rules_markdown(&registry);
    let path = repo().join("docs/rules.md");
    if std::env::var_os("RECONCILE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(actual == expected, "docs/rules.md is stale: run RECONCILE_BLESS=1 cargo nextest run -E 'test(docs_rules_md_is_current)'");
}
