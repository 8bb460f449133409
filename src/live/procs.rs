//! What `/proc` proves about a process: its parent, its start time, its
//! environment, its descendants. For the PM2 5.x/6.x hazards only: a stop there
//! waits for the app's main pid alone, and a reload that is never answered leaves
//! the old cluster worker running under `_old_<id>`, invisible to the list. Nothing
//! here signals a process that these checks have not tied to this daemon's app.
//!
//! Linux only: elsewhere every function answers "unknown" (`None`/empty), and the
//! callers then do nothing.

use std::path::Path;

use serde_json::Value;

/// A process as identified at one moment: its pid and its start time (clock ticks
/// since boot), so a pid reused by another process is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

impl ProcId {
    /// The process `pid` as it is now, if it runs (a zombie does not).
    pub fn of(pid: u32) -> Option<Self> {
        let stat = Stat::read(pid)?;
        stat.running.then_some(Self { pid, start: stat.start })
    }

    /// Whether this very process still runs.
    pub fn alive(&self) -> bool {
        Self::of(self.pid).is_some_and(|now| now.start == self.start)
    }
}

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    ppid: u32,
    start: u64,
    running: bool,
}

impl Stat {
    fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        let ppid = fields.get(1)?.parse().ok()?;
        // Field 22 of the full line (starttime) is index 19 after `state`.
        let start = fields.get(19)?.parse().ok()?;
        Some(Self { ppid, start, running: !matches!(state, 'Z' | 'X' | 'x') })
    }
}

/// The parent pid of a running process.
pub fn parent(pid: u32) -> Option<u32> {
    Stat::read(pid).filter(|s| s.running).map(|s| s.ppid)
}

/// `pid` and every running descendant of it, each with its start time.
pub fn tree(pid: u32) -> Vec<ProcId> {
    let Some(root) = ProcId::of(pid) else { return Vec::new() };
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = Stat::read(p).filter(|s| s.running) {
                all.push((p, stat.ppid, stat.start));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].pid;
        out.extend(all.iter().filter(|(_, ppid, _)| *ppid == parent).map(|&(pid, _, start)| ProcId { pid, start }));
        i += 1;
    }
    out
}

/// The environment a process started with (`/proc/<pid>/environ`).
fn environ(pid: u32) -> Option<Vec<(String, String)>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// Whether `pid` is provably the cluster worker of `pm_id` (`name` in `namespace`)
/// forked by this home's daemon: a child of `daemon_pid`, whose environment carries
/// PM2's `pm2_env` (what `ClusterMode.js` forks every worker with) naming that pm_id,
/// name and namespace, and `PM2_HOME` = `home`.
pub fn is_cluster_worker_of(pid: u32, daemon_pid: u32, home: &Path, pm_id: u64, name: &str, namespace: &str) -> bool {
    if parent(pid) != Some(daemon_pid) {
        return false;
    }
    let Some(env) = environ(pid) else { return false };
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let Some(pm2_env) = get("pm2_env").and_then(|text| serde_json::from_str::<Value>(text).ok()) else { return false };
    let home = home.to_string_lossy();
    let home_matches = get("PM2_HOME") == Some(home.as_ref())
        || pm2_env.get("env").and_then(|e| e.get("PM2_HOME")).and_then(Value::as_str) == Some(home.as_ref());
    pm2_env.get("pm_id").and_then(Value::as_u64) == Some(pm_id)
        && pm2_env.get("name").and_then(Value::as_str) == Some(name)
        && pm2_env.get("namespace").and_then(Value::as_str).unwrap_or("default") == namespace
        && home_matches
}

/// Sends `signal` to each of `procs` that is still the same process.
pub fn signal_all(procs: &[ProcId], signal: i32) {
    for p in procs.iter().filter(|p| p.alive()) {
        let Ok(pid) = i32::try_from(p.pid) else { continue };
        // SAFETY: kill(2) on a pid just checked to be the process identified earlier.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Waits (polling) until none of `procs` runs, at most `limit`; returns the survivors.
pub async fn wait_gone(procs: &[ProcId], limit: std::time::Duration) -> Vec<ProcId> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let alive: Vec<ProcId> = procs.iter().copied().filter(ProcId::alive).collect();
        if alive.is_empty() || tokio::time::Instant::now() >= until {
            return alive;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_in_its_own_tree() {
        let me = std::process::id();
        let id = ProcId::of(me).expect("this process runs");
        assert!(id.alive());
        assert!(!ProcId { pid: me, start: id.start + 1 }.alive(), "another start time is another process");
        assert_eq!(tree(me).first(), Some(&id));
        assert!(!is_cluster_worker_of(me, parent(me).unwrap_or(0), Path::new("/nowhere"), 0, "x", "default"));
    }
}
