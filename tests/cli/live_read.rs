//! The list read over the socket matches `pm2 jlist` for the same daemon.

use std::time::Duration;

use reconcile::live::model::normalize_list;
use reconcile::live::{ExecMode, LiveProcess, Pm2Client, ProcessStatus, runtime};
use serde_json::json;

use crate::support::Pm2Home;

const T: Duration = Duration::from_secs(10);

/// A daemon with fork and cluster apps in three namespaces, a stopped app and an
/// errored one.
fn mixed_daemon() -> Pm2Home {
    let home = Pm2Home::start();
    let app = home.node_app();
    home.start_ecosystem(
        "eco.json",
        &json!({"apps": [
            {"name": "sleeper", "script": "/bin/sleep", "args": "3600", "interpreter": "none",
             "namespace": "alpha", "exec_mode": "fork", "env": {"FOO": "one", "PORT": 3000},
             "min_uptime": 5000, "max_restarts": 10, "kill_timeout": 3000},
            {"name": "web", "script": app, "exec_mode": "cluster", "instances": 2, "namespace": "beta"},
            {"name": "idle", "script": "/bin/sleep", "args": ["3600"], "interpreter": "none", "namespace": "gamma"},
            {"name": "crasher", "script": "/bin/false", "interpreter": "none", "namespace": "alpha",
             "max_restarts": 1, "min_uptime": 5000, "restart_delay": 0}
        ]}),
    );
    home.pm2_ok(&["stop", "idle"]);
    home.wait_status("crasher", "errored");
    home.wait_status("idle", "stopped");
    home.wait_status("web", "online");
    home
}

/// Fields that change between two reads of the same daemon.
fn stable(mut p: LiveProcess) -> LiveProcess {
    p.monit = None;
    p.options.retain(|k, _| !k.starts_with("axm_") && k != "_tree_pids");
    p
}

#[test]
fn socket_list_matches_jlist_field_by_field() {
    let home = mixed_daemon();
    let rt = runtime().unwrap();
    let state = rt.block_on(async {
        let mut client = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        client.ping().await.unwrap();
        client.list().await.unwrap()
    });
    let jlist = home.jlist();
    // The same normalizer, given the daemon env the client used: compare what the
    // socket read gave with what `pm2 jlist` gives.
    let daemon_env = rt.block_on(async {
        let mut conn = reconcile::live::rpc::RpcConnection::connect(&home.live_home(), T).await.unwrap();
        let report = conn.call(&reconcile::live::rpc::Call::get_report()).await.unwrap();
        report[0]["env"].as_object().cloned().unwrap()
    });
    let from_jlist = normalize_list(&jlist, Some(&daemon_env)).unwrap();
    assert_eq!(state.processes.len(), 5);
    assert_eq!(from_jlist.len(), state.processes.len());
    for (a, b) in state.processes.into_iter().zip(from_jlist) {
        assert_eq!(stable(a), stable(b));
    }
}

#[test]
fn normalization_of_a_real_daemon() {
    let home = mixed_daemon();
    let rt = runtime().unwrap();
    let state = rt.block_on(async { Pm2Client::connect(&home.live_home(), T).await.unwrap().list().await.unwrap() });
    let by = |name: &str| state.processes.iter().filter(|p| p.name == name).collect::<Vec<_>>();

    let s = by("sleeper")[0];
    assert_eq!((s.namespace.as_str(), s.exec_mode, &s.status), ("alpha", ExecMode::Fork, &ProcessStatus::Online));
    assert!(s.pid.is_some());
    assert_eq!(s.args, ["3600"]);
    assert_eq!(s.interpreter.as_deref(), Some("none"));
    assert_eq!(s.script.as_deref(), Some(std::path::Path::new("/bin/sleep")));
    assert_eq!(s.env_set.get("FOO"), Some(&json!("one")));
    assert_eq!(s.env_set.get("PORT"), Some(&json!(3000)));
    assert!(s.env_inherited.contains_key("PM2_HOME"), "{:?}", s.env_inherited.keys().collect::<Vec<_>>());
    assert!(!s.env_set.contains_key("PATH"), "shell env is inherited, not set: {:?}", s.env_set.keys());
    assert_eq!(s.option_u64("min_uptime"), Some(5000));
    assert_eq!(s.option_u64("kill_timeout"), Some(3000));
    assert!(s.out_file.as_ref().is_some_and(|p| p.starts_with(home.path())));

    let web = by("web");
    assert_eq!(web.len(), 2);
    assert!(web.iter().all(|w| w.exec_mode == ExecMode::Cluster && w.namespace == "beta" && w.instances == Some(2)));

    assert_eq!(by("idle")[0].status, ProcessStatus::Stopped);
    assert_eq!(by("idle")[0].pid, None);
    assert_eq!(by("crasher")[0].status, ProcessStatus::Errored);
}
