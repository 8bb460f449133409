//! Preflight (safety contract, promise 5): before the first action, each port an
//! app will bind must be free, or held by that app's own current process (or a
//! child of it, or — for a cluster app — the PM2 daemon, which holds the listening
//! socket for its workers). Otherwise the apply stops and names the holder:
//! incident 003 crash-looped 3,446 times on a port held by a hung process.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

/// A port an app will bind, and the pids that may already hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    pub app: String,
    pub port: u16,
    /// The app's own current pids (and the daemon's, for cluster apps).
    pub allowed_pids: BTreeSet<u32>,
}

/// A port that is taken by someone else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port {port} for `{app}` is held by {}; stop that process or change the app's port, then apply again", holder_text(*pid, command))]
pub struct PortTaken {
    pub app: String,
    pub port: u16,
    /// `None` when the holder is not visible to this user.
    pub pid: Option<u32>,
    pub command: Option<String>,
}

fn holder_text(pid: Option<u32>, command: &Option<String>) -> String {
    match (pid, command) {
        (Some(pid), Some(command)) => format!("pid {pid} (`{command}`)"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process this user cannot see (another user's?)".into(),
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
        if let Some(&pid) = holders.iter().find(|&&pid| !descends_from_any(pid, &claim.allowed_pids)) {
            taken.push(PortTaken { app: claim.app.clone(), port: claim.port, pid: Some(pid), command: command_line(pid) });
        } else if holders.is_empty() && !bindable(claim.port) {
            taken.push(PortTaken { app: claim.app.clone(), port: claim.port, pid: None, command: None });
        }
    }
    taken
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
        let claim = |allowed: BTreeSet<u32>| PortClaim { app: "api".into(), port, allowed_pids: allowed };
        let taken = check_ports(&[claim(BTreeSet::new())]);
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].pid, Some(me));
        assert!(taken[0].to_string().contains(&format!("pid {me}")), "{}", taken[0]);
        assert!(check_ports(&[claim(BTreeSet::from([me]))]).is_empty());
        drop(listener);
        assert!(check_ports(&[claim(BTreeSet::new())]).is_empty(), "free once released");
    }

    #[test]
    fn parent_of_this_process_is_known() {
        let parent = parent_pid(std::process::id()).unwrap();
        assert!(descends_from_any(std::process::id(), &BTreeSet::from([parent])));
    }
}
