//! What a hostile pull request can put in the desired state: special files and
//! symlinks, JavaScript that outlives its deadline, secrets in odd places.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::support::process::{bin, run, Output};

/// A secret in the environment of every command below: it must never be printed.
const CANARY: &str = "canary-7f3a9c1e-do-not-print";

fn reconcile_with_secret(dir: &Path, args: &[&str]) -> Output {
    let mut command = bin();
    command.current_dir(dir).args(args).env("CI_DEPLOY_TOKEN", CANARY);
    run(command, Duration::from_secs(60))
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn assert_no_canary(output: &Output) {
    assert!(!output.stdout.contains(CANARY) && !output.stderr.contains(CANARY), "the secret leaked: {output:#?}");
    assert!(!output.stderr.contains("panicked"), "{output:#?}");
}

#[test]
fn an_ecosystem_symlink_to_proc_self_environ_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/proc/self/environ", dir.path().join("eco.json")).unwrap();
    for format in ["human", "json", "sarif", "github"] {
        let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "eco.json", "--format", format]);
        output.expect_code(1);
        assert_no_canary(&output);
        assert!(!output.stdout.contains("CI_DEPLOY_TOKEN"), "{output:#?}");
        assert!(output.stdout.contains("eco.json"), "{output:#?}");
    }
    let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "eco.json"]);
    assert!(output.stdout.contains("leads outside"), "{output:#?}");
    // Named directly, the file is still refused: /proc claims its files are regular.
    let output = reconcile_with_secret(dir.path(), &["--no-js", "lint", "/proc/self/environ"]);
    assert_no_canary(&output);
    output.expect_code(1);
}

#[test]
fn a_reconcile_toml_symlink_to_proc_self_environ_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/proc/self/environ", dir.path().join("reconcile.toml")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert_no_canary(&output);
    assert!(output.stderr.contains("reconcile.toml") && output.stderr.contains("leads outside"), "{output:#?}");
    let output = reconcile_with_secret(dir.path(), &["--config", "/proc/self/environ", "lint"]);
    output.expect_code(1);
    assert_no_canary(&output);
    assert!(output.stderr.contains("pseudo file system"), "{output:#?}");
}

#[test]
fn dev_zero_as_an_ecosystem_file_or_reconcile_toml_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/dev/zero", dir.path().join("eco.json")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "eco.json"]);
    output.expect_code(1);
    assert!(output.stdout.contains("eco.json") && !output.stdout.contains("/dev/zero"), "the target is not named: {output:#?}");
    let output = reconcile_with_secret(dir.path(), &["--config", "/dev/zero", "lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("character device"), "{output:#?}");
    // A policy path and a saved plan are read the same way.
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"app.json\"]\nnamespaces = [\"x\"]\n[policies]\npaths = [\"zero.toml\"]\n").unwrap();
    symlink("/dev/zero", dir.path().join("zero.toml")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("zero.toml") && output.stderr.contains("leads outside"), "{output:#?}");
    symlink("/dev/zero", dir.path().join("plan.json")).unwrap();
    let output = reconcile_with_secret(dir.path(), &["apply", "plan.json"]);
    output.expect_code(1);
    assert!(output.stderr.contains("plan.json"), "{output:#?}");
}

#[test]
fn a_fifo_as_an_ecosystem_file_or_reconcile_toml_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("eco.yaml"));
    let output = reconcile_with_secret(dir.path(), &["lint", "eco.yaml"]);
    output.expect_code(1);
    assert!(output.stdout.contains("eco.yaml") && output.stdout.contains("FIFO"), "{output:#?}");
    mkfifo(&dir.path().join("reconcile.toml"));
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stderr.contains("reconcile.toml") && output.stderr.contains("FIFO"), "{output:#?}");
}

#[test]
fn reconcile_toml_cannot_name_a_file_outside_the_project() {
    // A pull request changes reconcile.toml to point lint at a file elsewhere on the
    // host, one that does not parse, hoping its lines end up in the CI log.
    let outer = tempfile::tempdir().unwrap();
    let project = outer.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("live.json"), "[]").unwrap();
    let elsewhere = outer.path().join("credentials.json");
    std::fs::write(&elsewhere, format!("{{ \"aws_secret\": \"{CANARY}\"\n oops")).unwrap();
    for listed in ["../credentials.json".to_string(), elsewhere.display().to_string()] {
        std::fs::write(project.join("reconcile.toml"), format!("[project]\nname = \"p\"\necosystem = [{listed:?}]\nnamespaces = [\"p\"]\n")).unwrap();
        for args in [&["--no-js", "lint"][..], &["--no-js", "plan", "--live", "live.json"][..]] {
            let output = reconcile_with_secret(&project, args);
            output.expect_code(1);
            assert_no_canary(&output);
            let all = format!("{}{}", output.stdout, output.stderr);
            assert!(all.contains("outside the project directory"), "{args:?} {listed}: {output:#?}");
        }
    }
    // Named on the command line by the operator, it is read (and its error shown).
    let output = reconcile_with_secret(&project, &["--no-js", "lint", elsewhere.to_str().unwrap()]);
    output.expect_code(1);
    assert!(!output.stdout.contains("outside the project directory"), "{output:#?}");
}

#[test]
fn a_symlink_inside_the_project_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(dir.path().join("conf/eco.json"), r#"{"apps": [{"name": "a", "script": "a.js"}]}"#).unwrap();
    symlink("conf/eco.json", dir.path().join("eco.json")).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"x\"]\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "--format", "json"]);
    assert_eq!(output.json()["summary"]["apps"], 1, "{output:#?}");
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet), polled for up to a minute.
fn ends(pid: i32) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

fn pids_in(path: &Path) -> Vec<i32> {
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if !pids.is_empty() || started.elapsed() > Duration::from_secs(30) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_detached_grandchild_holding_stdout_open_does_not_hold_up_lint() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    std::fs::write(
        dir.path().join("eco.config.js"),
        format!(
            "const {{ spawn }} = require('child_process');\n\
             const c = spawn('sleep', ['300'], {{ detached: true, stdio: ['ignore', 'inherit', 'inherit'] }});\n\
             c.unref();\n\
             require('fs').writeFileSync({:?}, String(c.pid));\n\
             module.exports = {{ apps: [{{ name: 'a', script: 'a.js' }}] }};\n",
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.config.js\"]\nnamespaces = [\"x\"]\njs_timeout_ms = 3000\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint", "--format", "json"]);
    // Before, lint waited for the grandchild (300 s) to close the pipe.
    assert!(output.elapsed < Duration::from_secs(50), "took {:?}", output.elapsed);
    assert_eq!(output.json()["summary"]["apps"], 1, "the file's value is still read: {output:#?}");
    let pids = pids_in(&pid_file);
    assert_eq!(pids.len(), 1);
    assert!(ends(pids[0]), "the grandchild holding the output was killed");
}

#[test]
fn at_the_deadline_the_whole_evaluation_process_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    std::fs::write(
        dir.path().join("eco.config.js"),
        format!(
            "const {{ spawn }} = require('child_process');\n\
             const c = spawn('sleep', ['300'], {{ stdio: 'ignore' }});\n\
             require('fs').writeFileSync({:?}, c.pid + ' ' + process.pid);\n\
             while (true) {{}}\n",
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.config.js\"]\nnamespaces = [\"x\"]\njs_timeout_ms = 3000\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["lint"]);
    output.expect_code(1);
    assert!(output.stdout.contains("did not finish within 3s"), "{output:#?}");
    let pids = pids_in(&pid_file);
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(ends(pid), "{pid} outlived the deadline");
    }
}

/// Every output of `lint` in every format, joined.
fn lint_outputs(dir: &Path, file: &str) -> String {
    let mut all = String::new();
    for format in ["human", "json", "sarif", "github"] {
        let output = reconcile_with_secret(dir, &["lint", file, "--format", format]);
        assert!(!output.stderr.contains("panicked"), "{output:#?}");
        all.push_str(&output.stdout);
        all.push_str(&output.stderr);
    }
    all
}

#[test]
fn lint_snippets_of_a_duplicate_token_key_and_a_yaml_error_hide_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dup.json"),
        "{\"apps\": [{\"name\": \"a\", \"script\": \"a.js\", \"env\": {\n  \"API_TOKEN\": \"first-tok-111111\",\n  \"API_TOKEN\": \"second-tok-222222\"\n}}]}\n",
    )
    .unwrap();
    let all = lint_outputs(dir.path(), "dup.json");
    assert!(all.contains("API_TOKEN"), "the finding is still reported: {all}");
    assert!(!all.contains("first-tok") && !all.contains("second-tok"), "{all}");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apps:\n  - name: a\n    script: a.js\n    env:\n      DB_PASSWORD: yaml-pw-333333 : oops\n      PORT: [3000\n",
    )
    .unwrap();
    let all = lint_outputs(dir.path(), "bad.yaml");
    assert!(all.contains("bad.yaml"), "{all}");
    assert!(!all.contains("yaml-pw-333333"), "{all}");
}

#[test]
fn urls_with_passwords_secret_args_and_db_pass_never_reach_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.json"), "[]").unwrap();
    let app = serde_json::json!({"apps": [{"name": "api", "namespace": "x", "script": "/bin/sleep", "interpreter": "none",
        "args": ["--port", "80", "--password=args-pw-444444", "--api-token", "args-tok-555555"],
        "exec_mode": "fork", "min_uptime": 5000, "max_restarts": 5, "restart_delay": 3000,
        "env": {"DATABASE_URL": "postgres://app:url-pw-666666@db:5432/app", "DB_PASS": "dbpass-777777"}}]});
    std::fs::write(dir.path().join("eco.json"), app.to_string()).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"x\"]\n").unwrap();
    let mut all = String::new();
    for format in ["human", "json", "markdown"] {
        let output = reconcile_with_secret(dir.path(), &["plan", "--live", "empty.json", "--format", format]);
        output.expect_code(2);
        all.push_str(&output.stdout);
        all.push_str(&output.stderr);
    }
    let output = reconcile_with_secret(dir.path(), &["plan", "--live", "empty.json", "--out", "plan.json"]);
    output.expect_code(2);
    all.push_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap());
    assert!(all.contains("postgres://app:(sensitive)@db:5432/app"), "the URL is shown without its password: {all}");
    for secret in ["args-pw-444444", "args-tok-555555", "url-pw-666666", "dbpass-777777"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn pm2_error_text_echoing_a_secret_env_value_is_scrubbed_from_apply_and_the_journal() {
    let home = crate::support::Pm2Home::start();
    let project = home.project(&["mine"], 10_000);
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).unwrap();
    std::fs::write(
        project.join("reconcile.toml"),
        format!("{toml}ecosystem = []\n").replace("[project]\n", "[project]\necosystem = [\"eco.json\"]\n").replace("ecosystem = []\n", "")
            + "\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
    )
    .unwrap();
    // A NUL inside an env value: the daemon's spawn refuses it, quoting the value.
    let app = crate::support::sleep_app("leaky", serde_json::json!({"env": {"DB_PASS": "SEKRET-pm2-888888\u{0}x"}}));
    std::fs::write(project.join("eco.json"), serde_json::json!({"apps": [app]}).to_string()).unwrap();
    let mut all = String::new();
    for format in ["human", "json"] {
        let (_, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve", "--format", format]));
        assert!(!stderr.contains("panicked"), "{stderr}");
        all.push_str(&stdout);
        all.push_str(&stderr);
    }
    let journal = std::fs::read_to_string(project.join(".reconcile/journal.jsonl")).unwrap();
    assert!(journal.lines().count() > 2, "{journal}");
    assert!(!all.contains("SEKRET") && !journal.contains("SEKRET"), "output:\n{all}\njournal:\n{journal}");
    assert!(all.contains("null bytes") && journal.contains("null bytes"), "PM2's refusal is still reported: {all}");
}

/// `pm2 jlist` rows as (name, namespace, pid).
fn processes(home: &crate::support::Pm2Home) -> Vec<(String, String, serde_json::Value)> {
    home.jlist()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["pm2_env"]["namespace"].as_str().unwrap().to_string(), p["pid"].clone()))
        .collect()
}

// See: incident 000. Owning `default` with prune on deleted a hand-started app.
#[test]
fn owning_default_with_prune_keeps_a_hand_started_legacy_cron() {
    let home = crate::support::Pm2Home::start();
    home.start_sleep("legacy-cron", "default");
    let project = home.project(&["default"], 10_000);
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).unwrap();
    std::fs::write(
        project.join("reconcile.toml"),
        toml.replace("[project]\n", "[project]\necosystem = [\"eco.json\"]\n")
            + "\n[safety]\nprune = true\n\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
    )
    .unwrap();
    let app = crate::support::sleep_app("api", serde_json::json!({"namespace": "default"}));
    std::fs::write(project.join("eco.json"), serde_json::json!({"apps": [app]}).to_string()).unwrap();
    let cron_before = processes(&home).into_iter().find(|p| p.0 == "legacy-cron").unwrap();

    let (code, stdout, _, _) = crate::support::run(home.reconcile().args(["lint", "--format", "json"]));
    assert_eq!(code, 0, "a warning, not an error: {stdout}");
    let lint: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let warning = lint["diagnostics"].as_array().unwrap().iter().find(|d| d["rule"] == "owns-default").cloned();
    let warning = warning.unwrap_or_else(|| panic!("owning default is flagged: {lint:#}"));
    assert_eq!(warning["severity"], "warning");
    assert!(warning["file"].as_str().unwrap().ends_with("reconcile.toml") && warning["line"] == 4, "{warning:#}");

    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["plan"]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(!stdout.contains("will be deleted"), "{stdout}");
    assert!(stdout.contains("Unmanaged, not started or adopted by this project") && stdout.contains("legacy-cron (default, pm_id 0)"), "{stdout}");
    assert!(stdout.contains("to adopt one"), "{stdout}");

    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let after = processes(&home);
    assert!(after.contains(&cron_before), "legacy-cron survives with the same pid: {after:?}");
    assert!(after.iter().any(|p| p.0 == "api"), "{after:?}");

    // What apply started (stamped) is pruned when it leaves the desired state.
    let other = crate::support::sleep_app("api-v2", serde_json::json!({"namespace": "default"}));
    std::fs::write(project.join("eco.json"), serde_json::json!({"apps": [other]}).to_string()).unwrap();
    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve", "--allow-blast-radius"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let after = processes(&home);
    assert!(!after.iter().any(|p| p.0 == "api"), "the stamped api was pruned: {after:?}");
    assert!(after.contains(&cron_before), "legacy-cron still survives: {after:?}");
}

#[test]
fn imported_apps_are_adopted_and_may_be_pruned_a_stranger_may_not() {
    let home = crate::support::Pm2Home::start();
    home.start_sleep("adoptee", "jobs");
    home.start_sleep("keeper", "jobs");
    let out = home.path().join("imported");
    let (code, stdout, stderr, _) =
        crate::support::run(home.reconcile().args(["import", "--namespace", "jobs", "--as", "json", "--out", out.to_str().unwrap()]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let ledger = std::fs::read_to_string(out.join(".reconcile/adopted.json")).unwrap();
    assert!(ledger.contains("adoptee") && ledger.contains("keeper"), "{ledger}");
    // Started by hand after the import: not adopted.
    home.start_sleep("stranger", "jobs");
    let eco = out.join("ecosystem.config.json");
    let mut document: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eco).unwrap()).unwrap();
    document["apps"].as_array_mut().unwrap().retain(|a| a["name"] != "adoptee");
    std::fs::write(&eco, document.to_string()).unwrap();
    let toml = std::fs::read_to_string(out.join("reconcile.toml")).unwrap();
    std::fs::write(out.join("reconcile.toml"), format!("{toml}\n[safety]\nprune = true\nmax_changed_fraction = 1.0\n")).unwrap();
    let mut apply = crate::support::reconcile(&out);
    apply.env("PM2_HOME", home.path()).args(["apply", "--auto-approve"]);
    let (code, stdout, stderr, _) = crate::support::run(&mut apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let after: Vec<String> = processes(&home).into_iter().map(|p| p.0).collect();
    assert!(!after.contains(&"adoptee".to_string()), "the adopted app left the desired state and was pruned: {after:?}");
    assert!(after.contains(&"keeper".to_string()) && after.contains(&"stranger".to_string()), "{after:?}");
}

#[test]
fn a_second_apply_reaching_the_same_daemon_from_another_home_is_refused() {
    let home = crate::support::Pm2Home::start();
    let project = home.project(&["mine"], 10_000);
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).unwrap();
    // No [pm2] home: each apply finds the daemon through its environment.
    let toml: String = toml.lines().filter(|l| !l.starts_with("home =")).map(|l| format!("{l}\n")).collect();
    std::fs::write(
        project.join("reconcile.toml"),
        toml.replace("[project]\n", "[project]\necosystem = [\"eco.json\"]\n")
            + "\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
    )
    .unwrap();
    // A long health gate keeps the first apply holding the lock.
    let app = crate::support::sleep_app("slow", serde_json::json!({"min_uptime": 4000}));
    std::fs::write(project.join("eco.json"), serde_json::json!({"apps": [app]}).to_string()).unwrap();
    let mut first = crate::support::reconcile(&project);
    first.env("PM2_HOME", home.path()).args(["apply", "--auto-approve"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut first = crate::support::Spawned(first.spawn().unwrap());
    let first_pid = first.0.id();
    let lock = home.path().join("reconcile.lock");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("\"pid\":{first_pid}"))) {
        assert!(started.elapsed() < Duration::from_secs(30), "the first apply never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another home, whose PM2_DAEMON_*_PORT lead to the same daemon.
    let other = tempfile::tempdir().unwrap();
    let mut second = crate::support::reconcile(&project);
    second
        .env("PM2_HOME", other.path())
        .env("PM2_DAEMON_RPC_PORT", home.path().join("rpc.sock"))
        .env("PM2_DAEMON_PUB_PORT", home.path().join("pub.sock"))
        .args(["apply", "--auto-approve"]);
    let (code, stdout, stderr, _) = crate::support::run(&mut second);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("another apply is running") && stderr.contains(&format!("pid {first_pid}")), "{stderr}");
    assert_eq!(first.0.wait().unwrap().code(), Some(0), "the first apply succeeded");
}

/// A project in `home` owning `mine`, with relaxed restart rules and `apps` as its file.
fn project_with(home: &crate::support::Pm2Home, apps: &[serde_json::Value]) -> std::path::PathBuf {
    let project = home.project(&["mine"], 10_000);
    let toml = std::fs::read_to_string(project.join("reconcile.toml")).unwrap();
    std::fs::write(
        project.join("reconcile.toml"),
        toml.replace("[project]\n", "[project]\necosystem = [\"eco.json\"]\n")
            + "\n[policies.rules.min-uptime]\nmin = 300\n\n[policies.rules.restart-delay]\nmin = 0\n",
    )
    .unwrap();
    std::fs::write(project.join("eco.json"), serde_json::json!({"apps": apps}).to_string()).unwrap();
    project
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn preflight_refuses_a_port_held_by_a_foreign_pm2_cluster_app_and_names_it() {
    let home = crate::support::Pm2Home::start();
    let port = free_port();
    let server = home.path().join("server.js");
    std::fs::write(&server, "require('http').createServer((q, s) => s.end('x')).listen(process.env.PORT);\n").unwrap();
    home.start_ecosystem(
        "theirs.json",
        &serde_json::json!({"apps": [{"name": "other", "namespace": "theirs", "script": server, "exec_mode": "cluster", "instances": 1, "env": {"PORT": port}}]}),
    );
    home.wait_for(|| std::net::TcpListener::bind(("0.0.0.0", port)).is_err(), "the foreign cluster app listening");
    let ours = crate::support::sleep_app(
        "api",
        serde_json::json!({"script": server, "interpreter": "node", "args": [], "exec_mode": "cluster", "instances": 2, "env": {"PORT": port}}),
    );
    project_with(&home, &[ours]);
    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("port {port} for `api`")) && stderr.contains("PM2 app `other`") && stderr.contains("namespace `theirs`"), "{stderr}");
    let names: Vec<String> = processes(&home).into_iter().map(|p| p.0).collect();
    assert!(!names.contains(&"api".to_string()), "nothing was started: {names:?}");
    // Once the port is ours (our own cluster workers, through the daemon's listener),
    // an update in place passes preflight.
    home.pm2_ok(&["delete", "other"]);
    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let ours = crate::support::sleep_app(
        "api",
        serde_json::json!({"script": server, "interpreter": "node", "args": [], "exec_mode": "cluster", "instances": 2, "env": {"PORT": port, "LEVEL": "2"}}),
    );
    project_with(&home, &[ours]);
    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

#[test]
fn preflight_checks_a_port_given_only_as_port_in_args() {
    let home = crate::support::Pm2Home::start();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let app = crate::support::sleep_app("web", serde_json::json!({"args": ["3600", "--port", port.to_string()]}));
    project_with(&home, &[app]);
    let (code, stdout, stderr, _) = crate::support::run(home.reconcile().args(["apply", "--auto-approve"]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("port {port} for `web`")) && stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
    assert!(!processes(&home).iter().any(|p| p.0 == "web"), "nothing was started");
}

#[test]
fn what_pm2_itself_refuses_is_a_lint_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    std::fs::write(dir.path().join("default.config.mjs"), "export default { apps: [{ name: 'm', script: 'app.js' }] };\n").unwrap();
    std::fs::write(dir.path().join("named.config.mjs"), "export const apps = [{ name: 'n', script: 'app.js' }];\n").unwrap();
    std::fs::write(dir.path().join("old.json"), r#"{"apps": [{"name": "old", "script": "app.js", "interpreter": "node@4.1.2"}]}"#).unwrap();
    std::fs::write(dir.path().join("missing.json"), r#"{"apps": [{"name": "py", "script": "app.py", "interpreter": "python9.99-nowhere"}]}"#).unwrap();
    let mut command = bin();
    command.current_dir(dir.path()).env_remove("NVM_DIR").args(["lint", "default.config.mjs", "named.config.mjs", "old.json", "missing.json", "--format", "json"]);
    let output = run(command, Duration::from_secs(60));
    output.expect_code(1);
    let refused: Vec<(String, String)> = output.json()["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["rule"] == "pm2-refuses" && d["severity"] == "error")
        .map(|d| (d["file"].as_str().unwrap().to_string(), d["message"].as_str().unwrap().to_string()))
        .collect();
    let files: Vec<&str> = refused.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(files, ["default.config.mjs", "missing.json", "old.json"], "{refused:#?}");
    assert!(refused[0].1.contains("export default") && refused[2].1.contains("node@4.1.2"), "{refused:#?}");
}

#[test]
fn two_apps_with_one_name_in_one_file_are_refused_even_with_unique_name_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.json"), "[]").unwrap();
    let app = |a: &str| serde_json::json!({"name": "dup", "namespace": "x", "script": "/bin/sleep", "interpreter": "none", "exec_mode": "fork", "min_uptime": 5000, "max_restarts": 5, "restart_delay": 3000, "env": {"A": a}});
    std::fs::write(dir.path().join("eco.json"), serde_json::json!({"apps": [app("1"), app("2")]}).to_string()).unwrap();
    std::fs::write(dir.path().join("reconcile.toml"), "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"x\"]\n[policies.rules.unique-name]\nseverity = \"off\"\n").unwrap();
    let output = reconcile_with_secret(dir.path(), &["plan", "--live", "empty.json"]);
    output.expect_code(1);
    assert!(output.stderr.contains("`dup` is desired twice"), "{output:#?}");
}
