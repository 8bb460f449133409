//! Integration tests: the built `reconcile` binary, run as an operator would.

// Helpers outside #[test] functions may unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

mod ansible;
mod apply;
mod gate;
mod ci_examples;
mod code_scanning;
mod corpus_round_trip;
mod deploy;
mod docs;
mod dump;
mod exit_codes;
mod faults;
mod import;
mod lint;
mod metrics_format;
mod noise;
mod plan;
mod plan_git;
mod pull;
mod quickstart;
mod round_trip;
mod live_read;
mod live_write;
mod status;
mod versions;
mod untrusted;
mod watch;
