//! The desired apps, read from ecosystem files the way `pm2 start FILE --env NAME`
//! reads them: where the apps are in the document, aliases resolved, numbers and
//! durations coerced, `env` merged with `env_<name>`, and normalized to what the
//! daemon would report ([`DesiredApp`]).

pub mod app;
pub mod revision;
pub mod spec;

pub use app::{AppView, ExtractError, extract_apps};
pub use spec::{DesiredApp, Host};
