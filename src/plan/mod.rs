//! The plan: the smallest set of changes that makes live match desired, scoped to
//! the owned namespaces. Data first ([`model`]), computed by a pure [`diff`].

pub mod baseline;
pub mod diff;
pub mod model;

pub use diff::{Conflict, diff, restart, restrict};
pub use model::{Action, AttributeChange, Basis, Change, LiveMark, Plan};
