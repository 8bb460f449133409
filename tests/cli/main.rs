//! Integration tests: the built `reconcile` binary, run as an operator would.

mod support;

mod apply;
mod faults;
mod lint;
mod plan;
mod plan_git;
mod live_read;
mod live_write;
mod status;
mod watch;
