//! The desired apps, read from ecosystem files the way `pm2 start FILE --env NAME`
//! reads them: where the apps are in the document, aliases resolved, numbers and
//! durations coerced, and `env` merged with `env_<name>`.

pub mod app;

pub use app::{AppView, ExtractError, extract_apps};
