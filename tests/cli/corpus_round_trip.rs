//! The corpus round trip (issue 16): every loadable file of `../shared/corpus/ecosystem/`
//! whose scripts can be stood in for is started by plain `pm2 start FILE`, and
//! `reconcile plan` right after must say `noop` for every app.
//!
//! A file can be stood in for when every app's script resolves inside the copy the
//! test makes (so an idle stand-in can be written there: a node, shell or python
//! script by extension, a shell script for `interpreter: none`), its interpreter is
//! here, and it starts at most 4 processes. Files that name absolute directories
//! elsewhere, commands on PATH (`npm`, `yarn`), or need modules, are skipped with the
//! reason printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::process::corpus;
use crate::support::{Pm2Home, reconcile, run_with_timeout};

/// An idle stand-in for a script, or why there is none.
fn stand_in(script: &Path, interpreter: Option<&str>) -> Result<&'static str, String> {
    let ext = script.extension().and_then(|e| e.to_str()).unwrap_or("");
    match (interpreter.map(|i| i.rsplit('/').next().unwrap_or(i)), ext) {
        (Some("none"), _) | (Some("bash" | "sh"), _) | (None, "sh") => Ok("#!/bin/sh\nexec sleep 3600\n"),
        (Some(i), _) if i.starts_with("python") => {
            if which(i) { Ok("import time\nwhile True:\n    time.sleep(3600)\n") } else { Err(format!("no {i} here")) }
        }
        (None | Some("node"), "js" | "cjs" | "mjs" | "") => Ok("setInterval(() => {}, 1 << 30);\n"),
        (Some(other), _) => Err(format!("interpreter {other}")),
        (None, other) => Err(format!("a .{other} script")),
    }
}

fn which(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(command).is_file()))
}

/// Writes stand-ins for every app of the copied file at `file`; returns the apps'
/// names and namespaces, or why the file cannot be stood in for.
fn prepare(file: &Path, dir: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    use reconcile::config::{EcosystemFile, LoadOptions};
    let loaded = EcosystemFile::load(file, &LoadOptions::default()).map_err(|e| format!("does not load: {e}"))?;
    let views = reconcile::desired::extract_apps(&loaded.document, None).map_err(|e| format!("no apps: {e}"))?;
    let host = reconcile::desired::Host::current();
    let mut names = Vec::new();
    let mut namespaces = Vec::new();
    let mut processes = 0;
    for view in &views {
        let app = reconcile::desired::DesiredApp::build(view, file, 0, dir, &host);
        if !app.script.starts_with(dir) {
            return Err(format!("`{}` runs {} (outside the copy)", app.name, app.script.display()));
        }
        if !app.cwd.starts_with(dir) {
            return Err(format!("`{}` has cwd {}", app.name, app.cwd.display()));
        }
        let text = stand_in(&app.script, app.interpreter.as_deref())?;
        std::fs::create_dir_all(app.script.parent().unwrap()).unwrap();
        std::fs::create_dir_all(&app.cwd).unwrap();
        if !app.script.exists() {
            std::fs::write(&app.script, text).unwrap();
            std::fs::set_permissions(&app.script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        processes += app.instances;
        names.push(app.name.clone());
        if !namespaces.contains(&app.namespace) {
            namespaces.push(app.namespace.clone());
        }
    }
    if processes > 4 {
        return Err(format!("{processes} processes"));
    }
    Ok((names, namespaces))
}

/// Every rule that could refuse the plan for reasons that are not the round trip's.
const RELAXED: &[&str] = &[
    "exec-mode", "min-uptime", "max-restarts", "restart-delay", "kill-timeout", "log-files", "unique-port",
    "reserved-name", "watch-in-production", "pm2-refuses", "missing-env", "unknown-key", "duplicate-key", "owns-default",
];

#[test]
fn loadable_corpus_files_plan_as_noop_after_pm2_start() {
    let home = Pm2Home::start();
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| reconcile::config::Format::from_path(p).is_some())
        .collect();
    files.sort();
    for original in files {
        let name = original.file_name().unwrap().to_string_lossy().to_string();
        // What `pm2 start FILE` reads as an ecosystem file (lib/Common.js, isConfigFile).
        if ![".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"].iter().any(|e| name.contains(e)) {
            skipped.push(format!("{name}: PM2 does not read it as an ecosystem file"));
            continue;
        }
        let dir = home.path().join("corpus").join(name.split('-').next().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(&name);
        std::fs::copy(&original, &file).unwrap();
        let (apps, namespaces) = match prepare(&file, &dir) {
            Ok(found) => found,
            Err(why) => {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
        };
        let ns: Vec<String> = namespaces.iter().map(|n| format!("{n:?}")).collect();
        let mut toml = format!("[project]\necosystem = [{name:?}]\nnamespaces = [{}]\n\n[pm2]\ntimeout_ms = 10000\n", ns.join(", "));
        for rule in RELAXED {
            toml.push_str(&format!("\n[policies.rules.{rule}]\nseverity = \"off\"\n"));
        }
        std::fs::write(dir.join("reconcile.toml"), toml).unwrap();
        // HOME as `reconcile` gets it from the harness, so `~/` paths expand alike.
        let started = run_with_timeout(home.pm2_command(&["start", &name]).current_dir(&dir).env("HOME", &dir), Duration::from_secs(60));
        if !started.status.success() {
            skipped.push(format!("{name}: pm2 start failed: {}", String::from_utf8_lossy(&started.stderr).lines().last().unwrap_or("")));
            let _ = home.pm2(&["delete", "all"]);
            continue;
        }
        // Until every process has settled (a crash-looping stand-in never does: it is
        // skipped below).
        let since = std::time::Instant::now();
        while since.elapsed() < Duration::from_secs(20) {
            let list = home.jlist();
            let procs = list.as_array().cloned().unwrap_or_default();
            if !procs.is_empty() && procs.iter().all(|p| p["pm2_env"]["status"] == "online") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // A stand-in that does not stay up (`node_args: '-r dotenv/config'` needs a
        // module the copy does not have) cannot show a round trip.
        std::thread::sleep(Duration::from_millis(1500));
        let list = home.jlist();
        let down: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["pm2_env"]["status"] != "online" || p["pm2_env"]["restart_time"] != 0)
            .map(|p| p["name"].as_str().unwrap_or("").to_string())
            .collect();
        if !down.is_empty() {
            skipped.push(format!("{name}: the stand-in of {} does not stay online (node_args or modules it needs)", down.join(", ")));
            let _ = home.pm2(&["delete", "all"]);
            continue;
        }
        let out = run_with_timeout(reconcile(&dir).env("PM2_HOME", home.path()).args(["plan", "--format", "json"]), Duration::from_secs(60));
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let changes: Vec<String> = plan["changes"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|c| c["action"] != "noop")
                    .map(|c| {
                        let paths: Vec<&str> = c["attributes"].as_array().unwrap().iter().filter_map(|a| a["path"].as_str()).collect();
                        format!("{} {} ({})", c["action"].as_str().unwrap_or(""), c["name"].as_str().unwrap_or(""), paths.join(", "))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if out.status.code() == Some(0) {
            checked.push(format!("{name} ({} apps)", apps.len()));
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            failed.push(format!("{name}: exit {:?}: {}{}", out.status.code(), changes.join("; "), if changes.is_empty() { stderr.to_string() } else { String::new() }));
        }
        let _ = home.pm2(&["delete", "all"]);
    }
    eprintln!("corpus round trip: {} files plan noop, {} skipped:\n  {}", checked.len(), skipped.len(), skipped.join("\n  "));
    assert!(failed.is_empty(), "{} files do not plan noop after pm2 start:\n  {}", failed.len(), failed.join("\n  "));
    assert!(checked.len() >= 10, "too few corpus files could be stood in for: {checked:?}\nskipped: {skipped:#?}");
}
