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

/// pm2-internals.md §4, re-checked on a real daemon: which attribute changes a restart
/// with the updated spec applies in place (`apply`'s update: `restartProcessId` with
/// the merged env and `current_conf`, as `pm2 restart ecosystem.config.js` sends), and
/// which it silently leaves as they were, so that only delete + start applies them.
/// Each app starts from a base spec, the file then changes one attribute per app;
/// `plan` must class it as an update or a replace, every app is restarted in place
/// anyway, and a fresh `plan` must then be noop for exactly the updates, while each
/// replace still shows the attribute that forces it.
#[test]
fn restart_applies_update_attributes_in_place_and_never_replace_attributes() {
    let home = Pm2Home::start();
    home.start_sleep("bystander", "theirs");
    let dir = home.path().join("project");
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::fs::write(dir.join("app.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    std::fs::write(dir.join("other.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    std::fs::write(dir.join("other/app.js"), "setInterval(() => {}, 1 << 30);\n").unwrap();
    let base = |name: &str| {
        json!({"name": name, "namespace": "mine", "script": "app.js", "exec_mode": "fork", "args": ["--a"],
            "node_args": [], "env": {"KEEP": "1", "DROP": "x"}, "min_uptime": 5000, "max_restarts": 5,
            "restart_delay": 2000, "kill_timeout": 3000, "max_memory_restart": "300M",
            "out_file": format!("logs/{name}-out.log"), "error_file": format!("logs/{name}-err.log")})
    };
    // (app, attribute the plan reports, the change, what the plan must call it)
    let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
        ("u-env-add", "env.NEW", json!({"env": {"KEEP": "1", "DROP": "x", "NEW": "y"}}), "update"),
        ("u-env-change", "env.KEEP", json!({"env": {"KEEP": "2", "DROP": "x"}}), "update"),
        ("u-args", "args", json!({"args": ["--b", "two words"]}), "update"),
        ("u-node-args", "node_args", json!({"node_args": ["--max-old-space-size=64"]}), "update"),
        ("u-kill-timeout", "kill_timeout", json!({"kill_timeout": 4000}), "update"),
        ("u-max-memory", "max_memory_restart", json!({"max_memory_restart": "400M"}), "update"),
        ("r-env-remove", "env.DROP", json!({"env": {"KEEP": "1"}}), "replace"),
        ("r-script", "script", json!({"script": "other.js"}), "replace"),
        ("r-cwd", "cwd", json!({"cwd": "other"}), "replace"),
        ("r-exec-mode", "exec_mode", json!({"exec_mode": "cluster"}), "replace"),
        ("r-out-file", "out_file", json!({"out_file": "logs/moved-out.log"}), "replace"),
    ];
    let write = |apps: &[serde_json::Value]| {
        std::fs::write(dir.join("eco.json"), serde_json::to_string_pretty(&json!({ "apps": apps })).unwrap()).unwrap();
    };
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    write(&names.iter().map(|n| base(n)).collect::<Vec<_>>());
    std::fs::write(
        dir.join("reconcile.toml"),
        "[project]\necosystem = [\"eco.json\"]\nnamespaces = [\"mine\"]\n\n[pm2]\ntimeout_ms = 10000\n\n\
         [safety]\nmax_changed_fraction = 1.0\n\n[policies.rules.log-files]\nseverity = \"off\"\n\n\
         [policies.rules.exec-mode]\nseverity = \"off\"\n",
    )
    .unwrap();
    let mut start = std::process::Command::new(crate::support::pm2_bin());
    start.args(["start", "eco.json"]).current_dir(&dir).env("PM2_HOME", home.path()).env_remove("_");
    assert!(crate::support::run_with_timeout(&mut start, T * 6).status.success());
    for name in &names {
        home.wait_status(name, "online");
    }
    let plan = || {
        let out = crate::support::run_with_timeout(
            crate::support::reconcile(&dir).env("PM2_HOME", home.path()).args(["plan", "--format", "json"]),
            T * 6,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    let change = |plan: &serde_json::Value, name: &str| {
        plan["changes"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
    };
    let paths = |change: &serde_json::Value| -> Vec<String> {
        change["attributes"].as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap().to_string()).collect()
    };
    assert!(plan()["changes"].as_array().unwrap().iter().all(|c| c["action"] == "noop"), "the base specs start as noop");

    let changed: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, _, patch, _)| {
            let mut app = base(name);
            for (k, v) in patch.as_object().unwrap() {
                app[k] = v.clone();
            }
            app
        })
        .collect();
    write(&changed);
    let before = plan();
    for (name, attribute, _, class) in &cases {
        let c = change(&before, name);
        assert_eq!(c["action"], *class, "{name}: {c:#}");
        assert!(paths(&c).contains(&attribute.to_string()), "{name} reports {attribute}: {c:#}");
    }

    // Restart every app in place with its new spec, as `apply` updates one.
    let rt = runtime().unwrap();
    let ids: Vec<(String, u64, Option<u32>)> = rt.block_on(async {
        let mut c = Pm2Client::connect(&home.live_home(), T).await.unwrap();
        let state = c.list().await.unwrap();
        let resolver = Resolver::with_pm2_dir(pm2_package(), T).unwrap();
        let mut ids = Vec::new();
        for app in &changed {
            let name = app["name"].as_str().unwrap();
            let p = state.by_name(name).next().unwrap();
            let resolved = resolver.resolve(app, &dir, None, &home.live_home()).await.unwrap();
            let owned_p = c.confirm_owned(p.pm_id, name, &owned()).await.unwrap();
            c.restart(&owned_p, resolved.update_env().clone()).await.unwrap();
            ids.push((name.to_string(), p.pm_id, p.pid));
        }
        ids
    });
    for name in &names {
        home.wait_status(name, "online");
    }
    let state = rt.block_on(async { Pm2Client::connect(&home.live_home(), T).await.unwrap().list().await.unwrap() });
    for (name, pm_id, pid) in &ids {
        let p = state.get(*pm_id).unwrap_or_else(|| panic!("{name} kept its pm_id"));
        assert_eq!(&p.name, name);
        assert_ne!(&p.pid, pid, "{name} was restarted");
    }
    let after = plan();
    for (name, attribute, _, class) in &cases {
        let c = change(&after, name);
        if *class == "update" {
            assert_eq!(c["action"], "noop", "{name}: a restart applied {attribute} in place: {c:#}");
        } else {
            assert_eq!(c["action"], "replace", "{name}: a restart left {attribute} as it was: {c:#}");
            assert!(paths(&c).contains(&attribute.to_string()), "{name} still reports {attribute}: {c:#}");
        }
    }
    // The daemon-level fact behind env removal being a replace: the restarted process
    // itself still runs with the removed variable.
    let dropped = state.by_name("r-env-remove").next().and_then(|p| p.pid).unwrap();
    let environ = std::fs::read(format!("/proc/{dropped}/environ")).unwrap();
    assert!(environ.split(|b| *b == 0).any(|kv| kv == b"DROP=x"), "r-env-remove still sees DROP=x");
    let bystander = home.jlist().as_array().unwrap().iter().find(|p| p["name"] == "bystander").unwrap()["pm2_env"]["restart_time"].clone();
    assert_eq!(bystander, json!(0), "nothing outside the owned namespace restarted");
}
