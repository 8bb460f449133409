//! Integration tests: the built `reconcile` binary, run as an operator would.

mod lint;
mod support;
