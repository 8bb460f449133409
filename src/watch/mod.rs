//! `watch`: drift and crash-loop detection, self-heal, metrics, GitOps pull mode
//! (DESIGN.md, Watch and Beyond one host).
//!
//! - [`drift`]: the drift set (pure) and restart windows for crash loops;
//! - [`heal`]: the per-app heal rate limit (pure);
//! - [`files`]: the desired-state files, watched and debounced;
//! - [`metrics`]: Prometheus metrics on loopback;
//! - [`gitops`]: following a git branch into a local clone;
//! - [`gitcmd`]: the system `git`, bounded and credential-safe;
//! - [`report`]: what the watcher says, one line each (the JSON contract);
//! - [`agent`]: the loop that ties them together.

pub mod agent;
pub mod drift;
pub mod files;
pub mod gitcmd;
pub mod gitops;
pub mod heal;
pub mod metrics;
pub mod report;

pub use agent::{Agent, Checked, Config, Loader};
pub use drift::{Drift, DriftKind};
pub use heal::HealPolicy;
pub use report::Report;
