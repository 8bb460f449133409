//! Everything that formats output for people or machines. No other module prints.

pub mod diagnostics;
pub mod apply;
pub mod plan;
pub mod style;
pub mod watch;
pub mod status;
