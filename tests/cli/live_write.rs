//! The mutating calls `apply` will use, each against a real daemon; and the hazard
//! that a malformed call crashes the daemon.

use std::time::Duration;

use reconcile::live::rpc::{Call, NotifyAction, RpcConnection, WatchedAction};
use reconcile::live::{
    BusEvent, EventStream, LiveError, LiveState, Pm2Client, ProcessEventKind, ProcessStatus, Resolver, runtime,
};
use serde_json::{Map, json};

use crate::support::{Pm2Home, pm2_package};

const T: Duration = Duration::from_secs(10);

fn owned() -> Vec<String> {
    vec!["mine".to_string()]
}

/// (pid, restarts, status) of every process outside `mine`.
fn bystanders(state: &LiveState) -> Vec<(u64, Option<u32>, u64, ProcessStatus)> {
    state.processes.iter().filter(|p| p.namespace != "mine").map(|p| (p.pm_id, p.pid, p.restarts, p.status.clone())).collect()
}

#[test]
fn start_stop_restart_reload_delete_touch_only_one_owned_pm_id() {
    let home = Pm2Home::start();
    home.start_sleep("bystander", "theirs");
    home.start_sleep("neighbour", "mine");
    let daemon = home.daemon_pid();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut c = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        let before = bystanders(&c.list().await.unwrap());

        // Create: resolved by PM2's own code, started with `prepare`, stamped.
        let resolver = Resolver::with_pm2_dir(pm2_package(), T).unwrap();
        let spec = json!({"name": "svc", "script": "sleep", "args": "3600", "interpreter": "none",
            "namespace": "mine", "exec_mode": "fork", "env": {"FOO": "1"}, "kill_timeout": 500});
        let app = resolver.resolve(&spec, home.path(), None, &home.live_home()).await.unwrap().with_spec_hash("h1");
        assert_eq!(app.payload()["pm_exec_path"], "/usr/bin/sleep", "resolved on PATH as the CLI does");
        let ids = c.start(&app, &owned()).await.unwrap();
        assert_eq!(ids.len(), 1);
        let id = ids[0];
        let state = c.list().await.unwrap();
        let svc = state.get(id).unwrap();
        assert_eq!((svc.name.as_str(), svc.namespace.as_str()), ("svc", "mine"));
        assert_eq!(svc.spec_hash.as_deref(), Some("h1"));
        assert_eq!(svc.env_set.get("FOO"), Some(&json!("1")));
        assert_eq!(svc.option_u64("kill_timeout"), Some(500));

        // Names are global: a second start of the same name is refused, in any namespace.
        assert!(matches!(c.start(&app, &owned()).await, Err(LiveError::NameTaken { .. })));
        let theirs = json!({"name": "x", "script": "/bin/sleep", "interpreter": "none", "namespace": "theirs"});
        let theirs = resolver.resolve(&theirs, home.path(), None, &home.live_home()).await.unwrap();
        assert!(matches!(c.start(&theirs, &owned()).await, Err(LiveError::NamespaceNotOwned { .. })));

        // Stop.
        let p = c.confirm_owned(id, "svc", &owned()).await.unwrap();
        c.stop(&p).await.unwrap();
        assert_eq!(c.list().await.unwrap().get(id).unwrap().status, ProcessStatus::Stopped);

        // Restart with an updated env.
        let p = c.confirm_owned(id, "svc", &owned()).await.unwrap();
        let mut env = Map::new();
        env.insert("BAR".into(), json!("2"));
        c.restart(&p, env).await.unwrap();
        let state = c.list().await.unwrap();
        let svc = state.get(id).unwrap();
        assert_eq!(svc.status, ProcessStatus::Online);
        assert_eq!(svc.env_set.get("BAR"), Some(&json!("2")));
        assert_eq!(svc.env_set.get("FOO"), Some(&json!("1")));
        let pid_before_reload = svc.pid;

        // Reload (a fork app: a restart with the new env).
        let p = c.confirm_owned(id, "svc", &owned()).await.unwrap();
        let mut env = Map::new();
        env.insert("BAR".into(), json!("3"));
        c.reload(&p, env).await.unwrap();
        let state = c.list().await.unwrap();
        let svc = state.get(id).unwrap();
        assert_eq!(svc.env_set.get("BAR"), Some(&json!("3")));
        assert_ne!(svc.pid, pid_before_reload);

        // Delete.
        let p = c.confirm_owned(id, "svc", &owned()).await.unwrap();
        c.delete(p).await.unwrap();
        let after = c.list().await.unwrap();
        assert!(after.get(id).is_none());
        assert!(after.by_name("neighbour").next().is_some());
        assert_eq!(bystanders(&after), before, "nothing outside the owned namespace changed");
    });
    assert_eq!(home.daemon_pid(), daemon, "the daemon never restarted");
}

#[test]
fn a_cluster_app_starts_through_prepare_with_every_instance() {
    let home = Pm2Home::start();
    let app = home.node_app();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut c = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        let resolver = Resolver::with_pm2_dir(pm2_package(), T).unwrap();
        let spec = json!({"name": "web", "script": app, "instances": 2, "exec_mode": "cluster", "namespace": "mine"});
        let app = resolver.resolve(&spec, home.path(), None, &home.live_home()).await.unwrap();
        let ids = c.start(&app, &owned()).await.unwrap();
        assert_eq!(ids.len(), 2);
    });
    home.wait_status("web", "online");
    let jlist = home.jlist();
    assert!(jlist.as_array().unwrap().iter().all(|p| p["pm2_env"]["exec_mode"] == "cluster_mode"));
}

#[test]
fn confirm_owned_refuses_what_a_fresh_read_does_not_prove() {
    let home = Pm2Home::start();
    home.start_sleep("theirs-app", "theirs");
    home.start_sleep("mine-app", "mine");
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut c = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        let state = c.list().await.unwrap();
        let theirs = state.by_name("theirs-app").next().unwrap().pm_id;
        let mine = state.by_name("mine-app").next().unwrap().pm_id;
        assert!(matches!(c.confirm_owned(theirs, "theirs-app", &owned()).await, Err(LiveError::NotOwned { .. })));
        assert!(matches!(c.confirm_owned(mine, "other-name", &owned()).await, Err(LiveError::NameChanged { .. })));
        assert!(matches!(c.confirm_owned(999, "mine-app", &owned()).await, Err(LiveError::ProcessGone { pm_id: 999 })));
        assert_eq!(c.confirm_owned(mine, "mine-app", &owned()).await.unwrap().pm_id(), mine);
    });
}

/// pm2-internals.md §0.1: a call of the wrong shape crashes the daemon, whose crash
/// handler restarts every app on the host. Every wrapper, including its error paths
/// (unknown ids), must leave the daemon and its apps as they were.
#[test]
fn every_call_wrapper_is_accepted_by_the_real_daemon_without_a_crash() {
    let home = Pm2Home::start();
    home.start_sleep("keep", "theirs");
    let daemon = home.daemon_pid();
    let keep_pid = home.jlist()[0]["pid"].clone();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut conn = RpcConnection::connect(&home.live_home(), T).await.unwrap();
        let ok = [Call::ping(), Call::get_version(), Call::get_report(), Call::get_monitor_data()];
        for call in ok {
            conn.call(&call).await.unwrap_or_else(|e| panic!("{}: {e}", call.method()));
        }
        let unknown = [
            Call::stop_watch(WatchedAction::Stop, 999),
            Call::stop_watch(WatchedAction::Delete, 999),
            Call::stop_process_id(999),
            Call::restart_process_id(999, Map::new()),
            Call::reload_process_id(999, Map::new()),
            Call::delete_process_id(999),
            Call::notify_by_process_id(999, NotifyAction::Restart),
        ];
        for call in unknown {
            match conn.call(&call).await {
                Ok(_) | Err(LiveError::Remote { .. }) => {}
                Err(e) => panic!("{} broke the connection: {e}", call.method()),
            }
        }
        // A payload prepare would crash on is refused before it is sent.
        assert!(matches!(Call::prepare(json!({"name": "x"})), Err(LiveError::InvalidCall { .. })));
        conn.call(&Call::ping()).await.unwrap();
    });
    assert_eq!(home.daemon_pid(), daemon);
    assert_eq!(home.jlist()[0]["pid"], keep_pid, "the bystander app was not restarted");
}

#[test]
fn process_events_arrive_as_a_typed_stream() {
    let home = Pm2Home::start();
    home.start_sleep("ev", "mine");
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut events = EventStream::subscribe(&home.live_home(), T, true).await.unwrap();
        let mut c = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        let id = c.list().await.unwrap().by_name("ev").next().unwrap().pm_id;
        let p = c.confirm_owned(id, "ev", &owned()).await.unwrap();
        c.restart(&p, Map::new()).await.unwrap();
        let p = c.confirm_owned(id, "ev", &owned()).await.unwrap();
        c.stop(&p).await.unwrap();

        let mut kinds = Vec::new();
        while !kinds.contains(&ProcessEventKind::Stop) {
            let next = tokio::time::timeout(T, events.next()).await.expect("events within 10 s");
            if let Some(BusEvent::Process(ev)) = next.unwrap() {
                assert_eq!((ev.pm_id, ev.name.as_deref()), (Some(id), Some("ev")));
                kinds.push(ev.kind);
            }
        }
        // restart: exit(stopping), exit(stopped), online, restart; stop: exit x2, stop.
        for k in [ProcessEventKind::Exit, ProcessEventKind::Online, ProcessEventKind::Restart, ProcessEventKind::Stop] {
            assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
        }
    });
}

#[test]
fn restart_overlimit_is_an_event() {
    let home = Pm2Home::start();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut events = EventStream::subscribe(&home.live_home(), T, true).await.unwrap();
        home.start_ecosystem(
            "eco.json",
            &json!({"apps": [{"name": "crasher", "script": "/bin/false", "interpreter": "none",
                "namespace": "mine", "max_restarts": 2, "min_uptime": 5000, "restart_delay": 0}]}),
        );
        loop {
            let next = tokio::time::timeout(T, events.next()).await.expect("overlimit within 10 s");
            match next.unwrap() {
                Some(BusEvent::Process(ev)) if ev.kind == ProcessEventKind::RestartOverlimit => {
                    assert_eq!(ev.status, Some(ProcessStatus::Errored));
                    break;
                }
                Some(_) => {}
                None => panic!("bus closed"),
            }
        }
    });
}

#[test]
fn the_bus_ends_when_the_daemon_dies() {
    let home = Pm2Home::start();
    let rt = runtime().unwrap();
    rt.block_on(async {
        let mut events = EventStream::subscribe(&home.live_home(), T, true).await.unwrap();
        home.kill_daemon_hard();
        let next = tokio::time::timeout(T, events.next()).await.expect("EOF within 10 s");
        assert!(matches!(next, Ok(None)), "{next:?}");
    });
}
