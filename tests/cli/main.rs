//! Integration tests: the built `reconcile` binary, run as an operator would.

// Helpers outside #[test] functions may unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

mod apply;
mod ci_examples;
mod docs;
mod faults;
mod import;
mod lint;
mod plan;
mod plan_git;
mod pull;
mod quickstart;
mod round_trip;
mod live_read;
mod live_write;
mod status;
mod watch;
