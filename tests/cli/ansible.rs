//! The Ansible collection `reconcile.pm2` (`contrib/ansible`), run by a real
//! `ansible-playbook` against localhost with the built binary and a private PM2
//! daemon. ansible-core comes from PyPI, installed into `target/ansible-venv` by
//! `contrib/ansible/tests/setup-venv.sh` (pinned, idempotent, under a lock, so that
//! parallel tests install it once).
//!
//! Every test runs beside a foreign process (`stock-alert` in a namespace the
//! project does not own) that must keep its pid, restart count and status.
//! `reconcile.toml` names no `[pm2] home`: the daemon is found only through the
//! module's `pm2_home` parameter, and `HOME` is the test's directory, so the
//! `~/.pm2` fallback can never be the real one.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::repo;
use crate::support::{Pm2Home, pm2_package, run_with_timeout, sleep_app};

/// The value of the secret env var: it must never appear in anything Ansible prints.
const SECRET: &str = "tok-3f9a61c0-do-not-print";
/// The value it changes to.
const SECRET_2: &str = "tok-77e2d5b4-do-not-print-either";

/// The venv with ansible-core, installed by the repository's script.
fn venv() -> PathBuf {
    let script = repo().join("contrib/ansible/tests/setup-venv.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(repo());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(900));
    assert!(
        out.status.success(),
        "{} failed (it installs ansible-core from PyPI):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(venv.join("bin/ansible-playbook").exists(), "no ansible-playbook in {}", venv.display());
    venv
}

/// What one `ansible-playbook` run gave: its exit code, its output, and the
/// module's result as the playbook wrote it.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    result: Value,
}

impl Run {
    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "ansible-playbook exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    fn changed(&self) -> bool {
        self.result["changed"] == true
    }
}

/// A private daemon with a foreign app, a project owning `mine`, and ansible-core.
struct World {
    home: Pm2Home,
    project: PathBuf,
    venv: PathBuf,
    foreign: Vec<(String, String, Value, Value, Value)>,
}

impl World {
    fn new() -> Self {
        let venv = venv();
        let home = Pm2Home::start();
        home.start_sleep("stock-alert", "stock");
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        std::fs::write(
            project.join("reconcile.toml"),
            "[project]\nname = \"t\"\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"mine\"]\n\n\
             [pm2]\ntimeout_ms = 10000\n\n\
             [policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
        )
        .expect("reconcile.toml");
        let foreign = home.bystanders("mine");
        Self { home, project, venv, foreign }
    }

    fn write(&self, apps: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({"apps": apps})).expect("json");
        std::fs::write(self.project.join("ecosystem.json"), text).expect("ecosystem.json");
    }

    /// Runs `contrib/ansible/tests/<playbook>` against localhost with `args` (such as
    /// `--check`, `--diff`) and `vars` on top of the project's.
    fn playbook(&self, playbook: &str, args: &[&str], vars: Value) -> Run {
        let work = self.home.path().join("ansible");
        std::fs::create_dir_all(&work).expect("ansible dir");
        let result_file = work.join("result.json");
        let _ = std::fs::remove_file(&result_file);
        let mut extra = json!({
            "ansible_python_interpreter": self.venv.join("bin/python"),
            "project_dir": self.project,
            "reconcile_binary": env!("CARGO_BIN_EXE_reconcile"),
            "pm2_home": self.home.path(),
            "reconcile_pm2": pm2_package(),
            "result_file": result_file,
        });
        for (k, v) in vars.as_object().expect("vars is an object") {
            extra[k] = v.clone();
        }
        let mut cmd = Command::new(self.venv.join("bin/ansible-playbook"));
        cmd.arg("-i")
            .arg("localhost,")
            .arg("-e")
            .arg(extra.to_string())
            .args(args)
            .arg(repo().join("contrib/ansible/tests").join(playbook))
            .current_dir(&work)
            .env_remove("PM2_HOME")
            .env_remove("RECONCILE_PM2")
            .env_remove("ANSIBLE_CONFIG")
            .env_remove("_")
            .env("HOME", &work)
            .env("ANSIBLE_HOME", work.join(".ansible"))
            .env("ANSIBLE_LOCAL_TEMP", work.join("tmp-local"))
            .env("ANSIBLE_REMOTE_TEMP", work.join("tmp-remote"))
            .env("ANSIBLE_COLLECTIONS_PATH", repo().join("contrib/ansible"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0");
        let out = run_with_timeout(&mut cmd, Duration::from_secs(300));
        let result = std::fs::read(&result_file)
            .ok()
            .map(|bytes| serde_json::from_slice(&bytes).expect("the result file is JSON"))
            .unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            result,
        }
    }

    fn apply(&self, args: &[&str]) -> Run {
        self.playbook("apply.yml", args, json!({}))
    }

    /// Our processes, from `pm2 jlist`: (name, pid, restarts, status, env.GREETING).
    fn ours(&self) -> Vec<(String, Value, Value, Value, Value)> {
        let mut out: Vec<_> = self
            .home
            .jlist()
            .as_array()
            .expect("jlist array")
            .iter()
            .filter(|p| p["pm2_env"]["namespace"] == "mine")
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["pid"].clone(),
                    p["pm2_env"]["restart_time"].clone(),
                    p["pm2_env"]["status"].clone(),
                    p["pm2_env"]["env"]["GREETING"].clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[track_caller]
    fn assert_foreign_untouched(&self) {
        assert_eq!(self.home.bystanders("mine"), self.foreign, "a process outside the owned namespace changed");
    }
}

fn web(greeting: &str, token: &str) -> Value {
    sleep_app("web", json!({"env": {"GREETING": greeting, "API_TOKEN": token}}))
}

#[test]
fn ansible_check_mode_changes_nothing_a_real_run_applies_and_a_second_run_reports_no_change() {
    let w = World::new();
    w.write(&[web("hi", SECRET)]);

    // --check: `changed`, the plan in the result, and nothing started.
    let check = w.apply(&["--check"]);
    check.expect(0);
    assert!(check.changed(), "check mode reports the create: {}", check.result);
    assert_eq!(check.result["plan"]["summary"]["create"], 1, "{}", check.result);
    assert_eq!(check.result["apply"], json!({}), "check mode applies nothing: {}", check.result);
    assert!(w.ours().is_empty(), "check mode started something: {:?}", w.ours());
    w.assert_foreign_untouched();

    // A real run applies, with the plan and apply's report in the result.
    let first = w.apply(&[]);
    first.expect(0);
    assert!(first.changed(), "{}", first.result);
    assert_eq!(first.result["plan"]["summary"]["create"], 1, "{}", first.result);
    assert_eq!(first.result["apply"]["outcome"], "success", "{}", first.result);
    assert_eq!(first.result["apply"]["actions"][0]["app"], "web", "{}", first.result);
    let ours = w.ours();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!((&ours[0].0[..], &ours[0].3, &ours[0].4), ("web", &json!("online"), &json!("hi")), "{ours:?}");

    // The same state again: no change, nothing restarted.
    let second = w.apply(&[]);
    second.expect(0);
    assert!(!second.changed(), "a second run reports no change: {}", second.result);
    assert!(second.stdout.contains("ok: [localhost]"), "{}", second.stdout);
    assert_eq!(w.ours(), ours, "the second run touched web");

    // An edit, in check mode: `changed`, web keeps its env and pid; then applied.
    w.write(&[web("hello", SECRET)]);
    let check = w.apply(&["--check"]);
    check.expect(0);
    assert!(check.changed(), "{}", check.result);
    assert_eq!(w.ours(), ours, "check mode restarted web");
    let update = w.apply(&[]);
    update.expect(0);
    assert!(update.changed(), "{}", update.result);
    assert_eq!(update.result["plan"]["summary"]["update"], 1, "{}", update.result);
    let after = w.ours();
    assert_eq!((&after[0].3, &after[0].4), (&json!("online"), &json!("hello")), "{after:?}");
    assert!(!w.apply(&[]).expect(0).changed(), "idempotent after an update too");
    w.assert_foreign_untouched();
}

#[test]
fn ansible_diff_shows_each_app_before_and_after_and_never_a_secret() {
    let w = World::new();
    w.write(&[web("hi", SECRET)]);
    w.apply(&[]).expect(0);

    // Change a plain var and the secret; show the diff in check mode, then apply
    // with --diff, both with -v (which also prints the module's whole result).
    w.write(&[web("hello", SECRET_2)]);
    for args in [&["--check", "--diff", "-v"][..], &["--diff", "-v"][..]] {
        let run = w.apply(args);
        run.expect(0);
        assert!(run.changed(), "{}", run.result);
        let out = &run.stdout;
        assert!(out.contains("--- before: web (namespace mine)"), "a diff per app:\n{out}");
        assert!(out.contains("-env.GREETING: \"hi\""), "{out}");
        assert!(out.contains("+env.GREETING: \"hello\""), "{out}");
        assert!(out.contains("+env.API_TOKEN: \"(sensitive value changed)\""), "the secret's change is shown, not its value:\n{out}");
        for secret in [SECRET, SECRET_2] {
            assert!(!out.contains(secret), "{args:?} printed a secret:\n{out}");
            assert!(!run.stderr.contains(secret), "{args:?} printed a secret on stderr:\n{}", run.stderr);
            assert!(!run.result.to_string().contains(secret), "the module's result holds a secret: {}", run.result);
        }
    }
    // The secret itself did change (the diff hid it, the apply did not skip it).
    let web = w.home.jlist().as_array().expect("jlist").iter().find(|p| p["name"] == "web").cloned().expect("web");
    assert_eq!(web["pm2_env"]["env"]["API_TOKEN"], SECRET_2);
    w.assert_foreign_untouched();
}

#[test]
fn ansible_a_refused_apply_fails_the_task_with_reconciles_message_and_changes_nothing() {
    let w = World::new();
    let apps = |greeting: &str, cwd: &str| -> Vec<Value> {
        ["a", "b", "c"].iter().map(|n| sleep_app(n, json!({"env": {"GREETING": greeting}, "cwd": cwd}))).collect()
    };
    let first_cwd = w.project.to_string_lossy().to_string();
    w.write(&apps("hi", &first_cwd));
    w.apply(&[]).expect(0);
    let before = w.ours();
    assert_eq!(before.len(), 3, "{before:?}");

    // All three replaced (a new cwd forces it): over [safety] max_changed_fraction
    // (50%). A release that only restarts them would pass the guard.
    w.write(&apps("hello", "/"));
    for args in [&["--check"][..], &[][..]] {
        let run = w.apply(args);
        run.expect(2);
        assert_eq!(run.result["failed"], true, "{args:?}: {}", run.result);
        let msg = run.result["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("blast-radius guard"), "{args:?}: reconcile's message: {msg}");
        assert!(msg.contains("max_changed_fraction"), "{args:?}: {msg}");
        assert!(run.stdout.contains("blast-radius guard"), "the failure is shown: {}", run.stdout);
        assert_eq!(w.ours(), before, "{args:?}: a refused apply changed something");
    }

    // allow_blast_radius: the same plan goes through.
    let run = w.playbook("apply.yml", &[], json!({"allow_blast_radius": true}));
    run.expect(0);
    assert!(run.changed(), "{}", run.result);
    assert!(w.ours().iter().all(|p| p.4 == "hello" && p.3 == "online"), "{:?}", w.ours());
    w.assert_foreign_untouched();
}

#[test]
fn ansible_a_failed_apply_fails_the_task_with_reconciles_message_and_report() {
    let w = World::new();
    // An app that exits at once: apply's health gate stops it and fails.
    let crasher = sleep_app("crasher", json!({"script": "/bin/false", "args": []}));
    w.write(&[crasher]);
    let run = w.apply(&[]);
    run.expect(2);
    assert_eq!(run.result["failed"], true, "{}", run.result);
    assert_eq!(run.result["changed"], true, "it did start something: {}", run.result);
    assert_eq!(run.result["apply"]["outcome"], "failed", "apply's report is in the result: {}", run.result);
    let msg = run.result["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("crasher"), "reconcile's message names the app: {msg}");
    // Stopped by the health gate, or errored if PM2's max_restarts came first
    // (apply.rs proves the gate itself); either way it no longer loops.
    let ours = w.ours();
    assert!(ours.iter().all(|p| p.3 == "stopped" || p.3 == "errored"), "the crash loop ended: {ours:?}");
    w.assert_foreign_untouched();
}

#[test]
fn ansible_a_lint_error_fails_the_task_with_the_finding_in_check_mode_and_in_a_real_run() {
    let w = World::new();
    let mut app = web("hi", SECRET);
    app.as_object_mut().expect("app").remove("exec_mode");
    w.write(&[app]);
    for args in [&["--check"][..], &[][..]] {
        let run = w.apply(args);
        run.expect(2);
        assert_eq!(run.result["failed"], true, "{args:?}: {}", run.result);
        let msg = run.result["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("error[exec-mode]"), "{args:?}: the rule: {msg}");
        assert!(msg.contains("ecosystem.json:"), "{args:?}: where: {msg}");
        assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    }
    assert!(w.ours().is_empty(), "nothing was started: {:?}", w.ours());
    w.assert_foreign_untouched();
}

#[test]
fn ansible_plan_module_returns_the_plan_and_never_reports_a_change() {
    let w = World::new();
    w.write(&[web("hi", SECRET)]);
    let plan = |expect: bool| {
        let run = w.playbook("plan.yml", &["--diff"], json!({"expect_changes": expect}));
        run.expect(0);
        run
    };
    let run = plan(true);
    assert!(!run.changed(), "{}", run.result);
    assert_eq!(run.result["has_changes"], true, "{}", run.result);
    assert_eq!(run.result["plan"]["changes"][0]["action"], "create", "{}", run.result);
    assert_eq!(run.result["plan"]["ignored"][0]["name"], "stock-alert", "{}", run.result);
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    assert!(w.ours().is_empty(), "plan started something: {:?}", w.ours());

    w.apply(&[]).expect(0);
    let run = plan(false);
    assert_eq!(run.result["has_changes"], false, "{}", run.result);
    w.assert_foreign_untouched();
}

#[test]
fn ansible_config_and_env_parameters_name_the_project_file_and_the_env_block() {
    let w = World::new();
    std::fs::rename(w.project.join("reconcile.toml"), w.project.join("deploy.toml")).expect("rename");
    w.write(&[sleep_app("web", json!({"env": {"GREETING": "dev"}, "env_production": {"GREETING": "prod"}}))]);
    let run = w.playbook(
        "plan.yml",
        &[],
        json!({"expect_changes": true, "config": w.project.join("deploy.toml"), "env_name": "production"}),
    );
    run.expect(0);
    let attrs = &run.result["plan"]["changes"][0]["attributes"];
    let greeting = attrs.as_array().expect("attributes").iter().find(|a| a["path"] == "env.GREETING").expect("env.GREETING");
    assert_eq!(greeting["after"], "prod", "--env production merged env_production: {}", run.result);
    let cmd = run.result["cmd"].to_string();
    assert!(cmd.contains("\"--config\"") && cmd.contains("deploy.toml") && cmd.contains("\"--env\",\"production\""), "{cmd}");

    // Without `config`, there is no reconcile.toml: reconcile's message fails the task.
    let run = w.playbook("plan.yml", &[], json!({"expect_changes": true}));
    run.expect(2);
    assert_eq!(run.result["failed"], true, "{}", run.result);
    assert!(run.result["msg"].as_str().is_some_and(|m| m.contains("reconcile.toml")), "{}", run.result);
    w.assert_foreign_untouched();
}

/// `restart:` becomes `apply --restart NAME` once per app, and `rollback` and
/// `allow_blast_radius` their flags (the real flag comes from
/// another branch, so a stand-in binary records what the module runs): no plan file
/// (`--restart` plans again itself), and `changed` in check mode too, where only
/// `plan` runs.
#[test]
fn ansible_restart_passes_each_app_as_apply_restart() {
    let w = World::new();
    let stub = w.home.path().join("stub-reconcile");
    let log = w.home.path().join("stub.log");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$*\" >> {log:?}\ncase \" $* \" in\n\
             *' plan '*) echo '{{\"version\":1,\"changes\":[],\"summary\":{{}},\"guard\":{{\"violations\":[]}}}}' ;;\n\
             *' apply '*) echo '{{\"outcome\":\"success\",\"actions\":[{{\"app\":\"web\",\"call\":\"restart\"}}]}}' ;;\n\
             esac\n",
            log = log.display().to_string()
        ),
    )
    .expect("stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let vars = json!({"reconcile_binary": stub, "restart": ["web", "api"]});

    let check = w.playbook("apply.yml", &["--check"], vars.clone());
    check.expect(0);
    assert!(check.changed(), "a restart is a change, also in check mode: {}", check.result);
    let lines = std::fs::read_to_string(&log).expect("stub log");
    assert!(lines.lines().all(|l| l.contains(" plan ")), "check mode ran only plan:\n{lines}");

    std::fs::remove_file(&log).expect("rm log");
    let mut vars = vars;
    vars["rollback"] = json!(true);
    vars["allow_blast_radius"] = json!(true);
    let run = w.playbook("apply.yml", &[], vars);
    run.expect(0);
    assert!(run.changed(), "{}", run.result);
    let lines = std::fs::read_to_string(&log).expect("stub log");
    let apply = lines.lines().find(|l| l.contains(" apply ")).unwrap_or_else(|| panic!("apply ran:\n{lines}"));
    assert!(apply.contains("--auto-approve"), "{apply}");
    assert!(apply.contains("--allow-blast-radius") && apply.contains("--rollback"), "{apply}");
    assert!(apply.ends_with("--restart web --restart api"), "each app as --restart NAME, no plan file: {apply}");
}

/// The module documentation parses and names every parameter the issue asks for
/// (`ansible-doc` reads DOCUMENTATION, EXAMPLES and RETURN).
#[test]
fn ansible_doc_reads_both_modules() {
    let venv = venv();
    let work = tempfile::tempdir().expect("tempdir");
    for (module, params) in [
        ("reconcile.pm2.apply", &["project_dir", "binary", "config", "env", "restart", "allow_blast_radius", "pm2_home"][..]),
        ("reconcile.pm2.plan", &["project_dir", "binary", "config", "env", "pm2_home"][..]),
    ] {
        let mut cmd = Command::new(venv.join("bin/ansible-doc"));
        cmd.args(["--json", module])
            .current_dir(work.path())
            .env("HOME", work.path())
            .env("ANSIBLE_HOME", work.path().join(".ansible"))
            .env("ANSIBLE_COLLECTIONS_PATH", repo().join("contrib/ansible"));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(300));
        assert!(out.status.success(), "ansible-doc {module}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("ansible-doc --json");
        let entry = &doc[module];
        for param in params {
            assert!(entry["doc"]["options"][param].is_object(), "{module} documents {param}: {}", entry["doc"]["options"]);
        }
        assert!(entry["examples"].as_str().is_some_and(|e| e.contains(module)), "{module} has examples");
        assert!(entry["return"]["plan"].is_object(), "{module} documents its `plan` return value");
    }
}

/// The playbooks of the collection README and README.md's fleet section: each passes `ansible-playbook
/// --syntax-check` (which also resolves every module name), and the rolling deploy
/// runs with `serial:`.
#[test]
fn ansible_collection_readme_playbooks_pass_syntax_check() {
    let venv = venv();
    let collection = repo().join("contrib/ansible/ansible_collections/reconcile/pm2");
    let readme = std::fs::read_to_string(collection.join("README.md")).expect("collection README");
    let main_readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let yaml_blocks = |text: &str| -> Vec<String> {
        text.split("```yaml\n").skip(1).map(|rest| rest.split_once("```").expect("a closed block").0.to_string()).collect()
    };
    let mut blocks = yaml_blocks(&readme);
    assert!(blocks.len() >= 2, "the collection README shows a deploy and a plan playbook");
    let fleet: Vec<String> = yaml_blocks(&main_readme).into_iter().filter(|b| b.contains("reconcile.pm2.")).collect();
    assert!(!fleet.is_empty(), "README.md's fleet section shows a playbook");
    blocks.extend(fleet);
    assert!(
        blocks.iter().any(|b| b.contains("serial:") && b.contains("reconcile.pm2.apply:")),
        "a rolling deploy with serial:"
    );
    let work = tempfile::tempdir().expect("tempdir");
    for (i, block) in blocks.iter().enumerate() {
        let file = work.path().join(format!("playbook{i}.yml"));
        std::fs::write(&file, block).expect("playbook");
        let mut cmd = Command::new(venv.join("bin/ansible-playbook"));
        cmd.args(["--syntax-check", "-i", "localhost,"])
            .arg(&file)
            .current_dir(work.path())
            .env("HOME", work.path())
            .env("ANSIBLE_HOME", work.path().join(".ansible"))
            .env("ANSIBLE_COLLECTIONS_PATH", repo().join("contrib/ansible"));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "README playbook {i} fails --syntax-check:\n{block}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let galaxy = std::fs::read_to_string(collection.join("galaxy.yml")).expect("galaxy.yml");
    assert!(galaxy.contains("namespace: reconcile") && galaxy.contains("name: pm2"), "{galaxy}");
}

/// `ansible-test sanity` on the collection (validate-modules checks the
/// DOCUMENTATION, EXAMPLES and RETURN blocks against each module's argument spec;
/// pylint, pep8, yamllint, import, compile, ...), by the repository's script.
#[test]
fn ansible_test_sanity_passes_on_the_collection() {
    let script = repo().join("contrib/ansible/tests/sanity.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(repo());
    // The first run installs each sanity test's requirements from PyPI.
    let out = run_with_timeout(&mut cmd, Duration::from_secs(1800));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ansible-test sanity failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    for test in ["validate-modules", "pylint", "yamllint", "import", "ansible-doc"] {
        assert!(stdout.contains(&format!("Running sanity test \"{test}\"")), "{test} ran:\n{stdout}");
    }
}

/// `restart` against the real binary: the named app is rolled out (a new pid, one
/// more restart) although nothing changed; the others and the foreign app are not.
#[test]
fn ansible_restart_rolls_out_the_named_app_only() {
    let w = World::new();
    w.write(&[web("hi", SECRET), sleep_app("worker", json!({}))]);
    w.apply(&[]).expect(0);
    let before = w.ours();
    assert_eq!(before.len(), 2, "{before:?}");
    let run = w.playbook("apply.yml", &[], json!({"restart": ["web"]}));
    run.expect(0);
    assert!(run.changed(), "{}", run.result);
    assert_eq!(run.result["apply"]["outcome"], "success", "{}", run.result);
    let after = w.ours();
    let find = |list: &[(String, Value, Value, Value, Value)], name: &str| list.iter().find(|p| p.0 == name).cloned().expect(name);
    let (web_before, web_after) = (find(&before, "web"), find(&after, "web"));
    assert_ne!(web_before.1, web_after.1, "web was restarted: {before:?} -> {after:?}");
    assert_eq!(web_after.3, json!("online"), "{after:?}");
    assert_eq!(find(&before, "worker"), find(&after, "worker"), "worker was not named and not touched");
    w.assert_foreign_untouched();
}
