//! Builders for unit tests: desired apps and live processes in a few lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::desired::{DesiredApp, Host, extract_apps};
use crate::live::{ExecMode, LiveOrigin, LiveProcess, LiveState, ProcessStatus};

/// Desired apps from a JSON list, as if in `/srv/app/eco.json`, env `production`.
pub fn desired(apps: Value) -> Vec<DesiredApp> {
    let host = Host { cpus: 4, path: Some("/usr/bin:/bin".into()) };
    extract_apps(&apps, Some("production"))
        .unwrap()
        .iter()
        .map(|view| DesiredApp::build(view, Path::new("/srv/app/eco.json"), 1, Path::new("/srv/app"), &host))
        .collect()
}

/// A live process that matches `app` exactly (as if started from its spec).
pub fn live_of(app: &DesiredApp, pm_id: u64) -> LiveProcess {
    let mut process = crate::plan::baseline::live_from_desired(std::slice::from_ref(app)).processes.remove(0);
    process.pm_id = pm_id;
    process.pid = Some(1000 + u32::try_from(pm_id).unwrap());
    process
}

/// A foreign process: some other project's app.
pub fn foreign(name: &str, namespace: &str, pm_id: u64) -> LiveProcess {
    LiveProcess {
        pm_id,
        name: name.into(),
        namespace: namespace.into(),
        status: ProcessStatus::Online,
        pid: Some(5000 + u32::try_from(pm_id).unwrap()),
        restarts: 0,
        unstable_restarts: 0,
        started_at_ms: Some(1),
        created_at_ms: Some(1),
        exec_mode: ExecMode::Fork,
        script: Some(PathBuf::from("/srv/other/app.js")),
        cwd: Some(PathBuf::from("/srv/other")),
        args: Vec::new(),
        node_args: Vec::new(),
        interpreter: Some("node".into()),
        instances: Some(1),
        out_file: None,
        error_file: None,
        log_file: None,
        pid_file: None,
        env_set: BTreeMap::new(),
        env_inherited: crate::live::model::InheritedEnv::default(),
        spec_hash: None,
        revision: None,
        monit: None,
        options: BTreeMap::new(),
    }
}

/// A live state read from a daemon, with these processes.
pub fn live(processes: Vec<LiveProcess>) -> LiveState {
    LiveState { origin: LiveOrigin::Daemon { home: "/h".into() }, daemon: None, read_at_ms: 0, processes, adopted: Default::default() }
}
