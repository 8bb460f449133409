//! `lint --format json`: `{"diagnostics": [...], "summary": {...}}` (DESIGN.md, Contracts).

use super::Summary;
use crate::validate::Diagnostic;

/// Renders the findings as one JSON document.
pub fn json(diagnostics: &[Diagnostic], summary: Summary) -> String {
    let document = serde_json::json!({ "diagnostics": diagnostics, "summary": summary });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}
