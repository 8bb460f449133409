//! Preflight (safety contract, promise 5): before the first action, each port an
//! app will bind (`PORT` in its env, or `--port N`/`--port=N`/`-p N` in its args)
//! must be free, or held by that app's own current processes (by `pm_id`, or a child
//! of one). Otherwise the apply stops and names the holder: incident 003
//! crash-looped 3,446 times on a port held by a hung process.
//!
//! Which process belongs to which app is known from the live list: a holder that is
//! one of the daemon's children is matched to its `pm_id` and named (`PM2 app
//! `other` (pm_id 4, namespace `theirs`)`), and is ours only if that `pm_id` is the
//! app's. A cluster app's port is held by the daemon itself (it listens for its
//! workers), so the daemon as holder is the app's own only when the app has live
//! cluster workers and no other live app declares that port; another app that
//! declares it is named as the holder.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

/// A port an app will bind, and the pids that may already hold it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortClaim {
    pub app: String,
    pub port: u16,
    /// The app's own current pids (its processes by `pm_id`).
    pub allowed_pids: BTreeSet<u32>,
    /// The PM2 daemon's pid, and whether the app has live cluster workers there (then
    /// the daemon holding the port is the app's own listener, unless another app
    /// declares the port).
    pub daemon_pid: Option<u32>,
    pub own_cluster: bool,
    /// Every live process of the daemon: pid → how to name it.
    pub pm2_processes: Vec<Pm2Process>,
}

/// A live PM2 process, as preflight names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Process {
    pub pid: Option<u32>,
    pub pm_id: u64,
    pub name: String,
    pub namespace: String,
    /// The ports it declares (env `PORT`, `--port` in args).
    pub ports: Vec<u16>,
}

impl Pm2Process {
    fn describe(&self) -> String {
        format!("PM2 app `{}` (pm_id {}, namespace `{}`)", self.name, self.pm_id, self.namespace)
    }
}

/// Ports named in args: `--port N`, `--port=N`, `-p N`.
pub fn ports_in_args(args: &[String]) -> Vec<u16> {
    let words: Vec<&str> = args.iter().flat_map(|a| a.split_whitespace()).collect();
    let mut ports = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let value = match word.strip_prefix("--port=") {
            Some(v) => Some(v),
            None if *word == "--port" || *word == "-p" => words.get(i + 1).copied(),
            None => None,
        };
        if let Some(port) = value.and_then(|v| v.parse().ok())
            && !ports.contains(&port)
        {
            ports.push(port);
        }
    }
    ports
}

/// A port that is taken by someone else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port {port} for `{app}` is held by {}; stop that process or change the app's port, then apply again", holder_text(*pid, command, pm2_app))]
pub struct PortTaken {
    pub app: String,
    pub port: u16,
    /// `None` when the holder is not visible to this user.
    pub pid: Option<u32>,
    pub command: Option<String>,
    /// The PM2 app it is (or, for the daemon, the app that declares the port).
    pub pm2_app: Option<String>,
}

fn holder_text(pid: Option<u32>, command: &Option<String>, pm2_app: &Option<String>) -> String {
    let base = match (pid, command) {
        (Some(pid), Some(command)) => format!("pid {pid} (`{command}`)"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process this user cannot see (another user's?)".into(),
    };
    match pm2_app {
        Some(app) => format!("{base}, {app}"),
        None => base,
    }
}

/// Checks every claim; returns each port that is taken by a process it may not be.
pub fn check_ports(claims: &[PortClaim]) -> Vec<PortTaken> {
    if claims.is_empty() {
        return Vec::new();
    }
    let listeners = listeners::get_all().unwrap_or_default();
    let mut taken = Vec::new();
    for claim in claims {
        let holders: BTreeSet<u32> = listeners
            .iter()
            .filter(|l| l.protocol == listeners::Protocol::TCP && l.socket.port() == claim.port)
            .map(|l| l.process.pid)
            .collect();
        let foreign = holders.iter().find_map(|&pid| foreign_holder(claim, pid).map(|app| (pid, app)));
        if let Some((pid, pm2_app)) = foreign {
            taken.push(PortTaken { app: claim.app.clone(), port: claim.port, pid: Some(pid), command: command_line(pid), pm2_app });
        } else if holders.is_empty() && !bindable(claim.port) {
            taken.push(PortTaken { app: claim.app.clone(), port: claim.port, pid: None, command: None, pm2_app: None });
        }
    }
    taken
}

/// `None` when `pid` holding the claim's port is the app's own; else `Some` with the
/// PM2 app it is, if it is one.
fn foreign_holder(claim: &PortClaim, pid: u32) -> Option<Option<String>> {
    if descends_from_any(pid, &claim.allowed_pids) {
        return None;
    }
    if Some(pid) == claim.daemon_pid {
        // The daemon listens for a cluster app's workers: whose?
        let others: Vec<String> = claim
            .pm2_processes
            .iter()
            .filter(|p| p.ports.contains(&claim.port) && !p.pid.is_some_and(|pid| claim.allowed_pids.contains(&pid)) && p.name != claim.app)
            .map(Pm2Process::describe)
            .collect();
        return match (others.is_empty(), claim.own_cluster) {
            (true, true) => None,
            (true, false) => Some(Some("the PM2 daemon's listener for a cluster app (none declares this port)".into())),
            (false, _) => Some(Some(format!("the PM2 daemon's listener for {}", others.join(", ")))),
        };
    }
    // A process of the daemon (or a child of one): which app is it?
    let app = claim
        .pm2_processes
        .iter()
        .find(|p| p.pid.is_some_and(|own| descends_from_any(pid, &BTreeSet::from([own]))))
        .map(Pm2Process::describe);
    Some(app)
}

/// Whether nothing listens on the port on any address (checked by binding it, for
/// holders that `/proc` does not show us).
fn bindable(port: u16) -> bool {
    // One at a time: a dual-stack `[::]` bind would collide with our own `0.0.0.0` one.
    let in_use = |addr: SocketAddr| matches!(TcpListener::bind(addr), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    !in_use(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) && !in_use(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
}

/// Whether `pid` is one of `allowed` or a descendant of one.
fn descends_from_any(pid: u32, allowed: &BTreeSet<u32>) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if allowed.contains(&current) {
            return true;
        }
        match parent_pid(current) {
            Some(parent) if parent > 1 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}

/// The parent pid, from `/proc/<pid>/stat` (Linux; `None` elsewhere).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The command line of `pid`, from `/proc/<pid>/cmdline`.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> =
        raw.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_we_hold_is_taken_unless_we_are_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let claim = |allowed: BTreeSet<u32>| PortClaim { app: "api".into(), port, allowed_pids: allowed, ..PortClaim::default() };
        let taken = check_ports(&[claim(BTreeSet::new())]);
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].pid, Some(me));
        assert!(taken[0].to_string().contains(&format!("pid {me}")), "{}", taken[0]);
        assert!(check_ports(&[claim(BTreeSet::from([me]))]).is_empty());
        drop(listener);
        assert!(check_ports(&[claim(BTreeSet::new())]).is_empty(), "free once released");
    }

    #[test]
    fn the_daemon_holding_a_port_is_ours_only_for_our_own_cluster_app() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        // This test process plays the daemon.
        let other = Pm2Process { pid: Some(1), pm_id: 4, name: "other".into(), namespace: "theirs".into(), ports: vec![port] };
        let claim = |own_cluster: bool, others: Vec<Pm2Process>| PortClaim {
            app: "api".into(),
            port,
            daemon_pid: Some(me),
            own_cluster,
            pm2_processes: others,
            ..PortClaim::default()
        };
        assert!(check_ports(&[claim(true, vec![])]).is_empty(), "our own cluster listener");
        let taken = check_ports(&[claim(true, vec![other.clone()])]);
        assert_eq!(taken.len(), 1);
        assert!(taken[0].to_string().contains("PM2 app `other` (pm_id 4, namespace `theirs`)"), "{}", taken[0]);
        let taken = check_ports(&[claim(false, vec![])]);
        assert!(taken[0].to_string().contains("cluster app"), "{}", taken[0]);
    }

    #[test]
    fn ports_are_read_from_args() {
        let args: Vec<String> = ["--port", "3000", "--port=3001", "-p 3002", "--portal", "9"].map(String::from).to_vec();
        assert_eq!(ports_in_args(&args), [3000, 3001, 3002]);
    }

    #[test]
    fn parent_of_this_process_is_known() {
        let parent = parent_pid(std::process::id()).unwrap();
        assert!(descends_from_any(std::process::id(), &BTreeSet::from([parent])));
    }
}
