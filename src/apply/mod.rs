//! `apply`: a plan turned into PM2 calls under the safety contract (DESIGN.md,
//! Apply — the safety contract). Each promise has its place:
//!
//! 1. scope — every call by a confirmed-owned `pm_id` ([`crate::live::Pm2Client`]);
//! 2. blast-radius guard — evaluated by the plan, enforced by the command;
//! 3. one apply per PM2 home — [`lock`];
//! 4. journal — [`journal`];
//! 5. preflight (ports) — [`preflight`];
//! 6. health gate and `--rollback` — [`execute`];
//! 7. verification — [`verify`];
//! 8. stale saved plans — [`verify::moved`];
//! 9. convergence — every apply re-plans from a fresh read, and a plan of noops
//!    makes no call.
//! 10. reboot-safe — PM2's dump holds the owned apps as applied ([`dump`]).

pub mod adopted;
pub mod dump;
pub mod execute;
pub mod identity;
pub mod journal;
pub mod lock;
pub mod pipeline;
pub mod preflight;
pub mod verify;

pub use execute::{Event, Executor, Outcome, Settings};
pub use journal::Journal;
pub use lock::{ApplyLock, Holder};
