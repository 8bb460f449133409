//! Shared terminal styles. `anstream` strips them when the output is not a terminal
//! or `--color never` is given.

use anstyle::{AnsiColor, Style};

/// Errors.
pub const ERROR: Style = AnsiColor::Red.on_default().bold();
/// Warnings.
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
/// Help lines, notes.
pub const HELP: Style = AnsiColor::Cyan.on_default().bold();
/// Gutters and arrows.
pub const GUTTER: Style = AnsiColor::Blue.on_default().bold();
/// Emphasis.
pub const BOLD: Style = Style::new().bold();
