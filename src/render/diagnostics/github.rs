//! `lint --format github`: GitHub Actions workflow commands, one annotation a finding.

use std::fmt::Write;

use super::SourceRoot;
use crate::validate::{Diagnostic, Severity};

/// Renders `::error file=...,line=...,col=...,title=rule::message` lines, with `file`
/// relative to the repository root (what GitHub matches against the diff).
pub fn github(diagnostics: &[Diagnostic], root: &SourceRoot) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let command = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut properties = format!("file={}", escape_property(&root.relative(&d.file)));
        if d.line > 0 {
            let _ = write!(properties, ",line={},col={}", d.line, d.column);
        }
        let _ = write!(properties, ",title={}", escape_property(&format!("reconcile {}", d.rule)));
        let message = format!("{}\nhelp: {}", d.message, d.help);
        let _ = writeln!(out, "::{command} {properties}::{}", escape_data(&message));
    }
    out
}

fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_escape_their_fields() {
        let d = Diagnostic {
            rule: "min-uptime".into(),
            severity: Severity::Error,
            file: "a,b.js".into(),
            line: 3,
            column: 5,
            message: "50% of\nit".into(),
            help: "h".into(),
            app: None,
        };
        let root = SourceRoot { dir: std::env::current_dir().unwrap() };
        assert_eq!(github(&[d], &root), "::error file=a%2Cb.js,line=3,col=5,title=reconcile min-uptime::50%25 of%0Ait%0Ahelp: h\n");
    }
}
