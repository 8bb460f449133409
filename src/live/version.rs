//! Which PM2 daemons reconcile talks to, and what differs between them.
//!
//! The protocol (amp frames, axon RPC), the RPC methods and their arguments, the
//! `getMonitorData`/`getReport` shapes and env merging on restart are the same in
//! every supported version; the behaviours below are not. Each is read from the
//! version's source (`node_modules/pm2-5`, `pm2-6`, `pm2`), and
//! `docs/pm2-versions.md` names the file and lines each comes from.

use std::fmt;

/// The versions reconcile supports, as said to the operator.
pub const SUPPORTED_VERSIONS: &str = "5.x (5.4 or later), 6.x and 7.x";

/// The oldest 5.x minor whose daemon behaves as reconcile expects: 5.0-5.3 launch an
/// app sent with `autostart: false` (`lib/God.js` `executeApp` has no early return).
pub const OLDEST_5_MINOR: u32 = 4;

/// A PM2 daemon's version, as `getVersion` answers it (`"7.0.4"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Version {
    /// The major version (5, 6, 7, ...).
    pub major: u32,
    /// The minor version (0 when absent).
    pub minor: u32,
    /// The text the daemon sent.
    pub raw: String,
}

impl Pm2Version {
    /// Parses `"MAJOR.MINOR.PATCH[-pre]"`; `None` when there is no numeric major.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(Self { major, minor, raw: raw.trim().to_string() })
    }

    /// Whether reconcile supports this daemon ([`SUPPORTED_VERSIONS`]).
    pub fn supported(&self) -> bool {
        match self.major {
            5 => self.minor >= OLDEST_5_MINOR,
            6 | 7 => true,
            _ => false,
        }
    }

    /// Whether a cluster `prepare`/`startProcessId`/`restartProcessId`/`reloadProcessId`
    /// is answered when the worker dies before "online". 7.x concludes `executeApp`'s
    /// callback on such an exit; 5.x and 6.x never answer (`lib/God.js`, `executeApp`:
    /// the cluster `exit` handler calls `readyCb` only under Bun).
    pub fn answers_cluster_exit_before_online(&self) -> bool {
        self.major >= 7
    }

    /// Whether a stop waits for the app's whole process tree (7.x: `killProcess`
    /// polls every pid `treekill` signalled, then SIGKILLs survivors) or only for its
    /// main pid (5.x, 6.x: `lib/God/Methods.js` `processIsDead` checks `pid` alone).
    pub fn stop_waits_for_tree(&self) -> bool {
        self.major >= 7
    }
}

impl fmt::Display for Pm2Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Whether a daemon version string is in [`SUPPORTED_VERSIONS`].
pub fn version_supported(version: &str) -> bool {
    Pm2Version::parse(version).is_some_and(|v| v.supported())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm2_5_4_and_later_6_and_7_are_supported() {
        for ok in ["7.0.4", "7.12.0-beta", "6.0.14", "6.0.0-beta.0", "5.4.3", "5.4.0", "5.10.1"] {
            assert!(version_supported(ok), "{ok}");
        }
        for refused in ["5.3.1", "5.0.0", "4.5.6", "8.0.0", "garbage", "", "7"] {
            assert_eq!(version_supported(refused), refused == "7", "{refused}");
        }
    }

    #[test]
    fn hazards_follow_the_major() {
        let v = |s| Pm2Version::parse(s).unwrap();
        assert!(!v("5.4.3").answers_cluster_exit_before_online());
        assert!(!v("6.0.14").answers_cluster_exit_before_online());
        assert!(v("7.0.4").answers_cluster_exit_before_online());
        assert!(!v("6.0.14").stop_waits_for_tree());
        assert!(v("7.0.0").stop_waits_for_tree());
    }
}
