//! The plan as data: what would change, attribute by attribute. Renderers read it;
//! `apply` executes its changes. Field names are the `plan --format json` contract.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happens to one app (terraform-like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing to do.
    Noop,
    /// Start a new app.
    Create,
    /// Restart (or reload) in place with the new settings.
    Update,
    /// Change the number of processes.
    Scale,
    /// Delete and start again: an attribute cannot change in place.
    Replace,
    /// Delete an owned app that is not desired (only with `[safety] prune`).
    Delete,
}

impl Action {
    /// The symbol in human output.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Noop => " ",
            Self::Create => "+",
            Self::Update => "~",
            Self::Scale => "↕",
            Self::Replace => "-/+",
            Self::Delete => "-",
        }
    }

    /// The word in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Noop => "noop",
            Self::Create => "create",
            Self::Update => "update",
            Self::Scale => "scale",
            Self::Replace => "replace",
            Self::Delete => "delete",
        }
    }
}

/// Why an app is in the plan; for rendering only, never for apply (like terraform's
/// `ActionReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Desired, not live.
    NotLive,
    /// Attributes differ.
    AttributesChanged,
    /// Live fields match but the stamped spec hash differs (a change PM2 does not show).
    SpecHashChanged,
    /// Live, but stopped or errored.
    NotRunning,
    /// Nothing changed; `apply --restart NAME` asked for a rollout.
    Restart,
    /// Owned and live, not desired.
    NotDesired,
}

/// One attribute's before and after. Secret env values are already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    /// `script`, `env.PORT`, `instances`, ...
    pub path: String,
    pub before: Value,
    pub after: Value,
    /// This attribute cannot change in place.
    pub forces_replacement: bool,
}

/// One app's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub name: String,
    pub namespace: String,
    pub action: Action,
    pub attributes: Vec<AttributeChange>,
    pub reason: Option<Reason>,
    /// The live processes it acts on (numeric ids; empty for `create`).
    pub pm_ids: Vec<u64>,
    /// The desired spec hash (absent for `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The change stops the app for a while: a restart of a fork app, or a delete and
    /// start. A cluster app is reloaded one instance at a time, without downtime.
    #[serde(default)]
    pub downtime: bool,
}

/// A live process outside the owned namespaces: listed, never acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub name: String,
    pub namespace: String,
    pub pm_id: u64,
    /// In an owned namespace, but neither started by this project (no spec-hash
    /// stamp) nor adopted (not in the adoption ledger): prune never deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unproven: bool,
}

/// Counts by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub scale: usize,
    pub delete: usize,
    pub noop: usize,
}

/// The blast-radius guard, evaluated at plan time and enforced by apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    pub deletes: usize,
    pub max_deletes: usize,
    /// Live owned apps the plan deletes or replaces, over all live owned apps (in-place
    /// updates are releases, not destruction, and do not count).
    pub changed_fraction: f64,
    pub max_changed_fraction: f64,
    /// Why apply would refuse (empty: within limits).
    pub violations: Vec<String>,
}

/// What a plan was made against, so a saved plan can be refused when either moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    /// Hash of every desired app's spec hash.
    pub desired_hash: String,
    /// Hash of the owned live processes (pm_id, pid, status, restarts, spec) and the
    /// names of the others.
    pub live_fingerprint: String,
    /// `daemon` or `snapshot`.
    pub live_source: String,
    /// The PM2 daemon's version (`getVersion`), when the live state came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm2_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// `plan --base REF`: the commit REF resolved to (the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// Each desired app's spec hash, by name: says which app moved.
    #[serde(default)]
    pub desired_apps: std::collections::BTreeMap<String, String>,
    /// What the fingerprint covers, process by process: says which process moved.
    #[serde(default)]
    pub live: Vec<LiveMark>,
}

/// One live process as a plan depends on it. Processes outside the owned namespaces
/// carry only their identity (their state is not the plan's business).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMark {
    pub pm_id: u64,
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version of this document.
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub namespaces: Vec<String>,
    pub changes: Vec<Change>,
    pub ignored: Vec<Ignored>,
    /// Owned live processes that are not desired and stay (prune is off).
    pub unmanaged: Vec<Ignored>,
    pub summary: Summary,
    pub guard: Guard,
    pub basis: Basis,
}

impl Basis {
    /// The git ref the plan compares against (`plan --base REF`), when no daemon was read.
    pub fn git_baseline(&self) -> Option<&str> {
        self.live_source.strip_prefix("git ")
    }
}

impl Plan {
    /// Whether anything would change.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Noop)
    }
}
