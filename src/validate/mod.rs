//! Checks before anything runs: JSON Schema and policies.
