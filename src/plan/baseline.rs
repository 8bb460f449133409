//! A desired state standing in for live state (`plan --base REF`): each app as the
//! daemon would report it had it been started from its spec.

use serde_json::json;

use crate::desired::DesiredApp;
use crate::live::{LiveOrigin, LiveProcess, LiveState, ProcessStatus};

/// One online process per instance of each app, stamped with its spec hash.
pub fn live_from_desired(apps: &[DesiredApp]) -> LiveState {
    let mut processes = Vec::new();
    for app in apps {
        for _ in 0..app.instances.max(1) {
            processes.push(LiveProcess {
                pm_id: processes.len() as u64,
                name: app.name.clone(),
                namespace: app.namespace.clone(),
                status: ProcessStatus::Online,
                pid: None,
                restarts: 0,
                unstable_restarts: 0,
                started_at_ms: None,
                created_at_ms: None,
                exec_mode: app.exec_mode,
                script: Some(app.script.clone()),
                cwd: Some(app.cwd.clone()),
                args: app.args.clone(),
                node_args: app.node_args.clone(),
                interpreter: app.interpreter.clone(),
                instances: Some(app.instances),
                out_file: app.out_file.clone(),
                error_file: app.error_file.clone(),
                log_file: app.log_file.clone(),
                pid_file: app.pid_file.clone(),
                env_set: app.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
                env_inherited: crate::live::model::InheritedEnv::default(),
                spec_hash: Some(app.hash.clone()),
                revision: app.revision.clone(),
                monit: None,
                options: app.options.clone(),
            });
        }
    }
    LiveState { origin: LiveOrigin::Snapshot { path: "git".into() }, daemon: None, read_at_ms: 0, processes, adopted: Default::default() }
}
