//! `lint --format sarif`: SARIF 2.1.0 for GitHub code scanning. Every enabled rule is
//! listed under the tool driver; each finding refers to its rule by id and index.

use serde_json::{Value, json};

use super::human::display;
use crate::validate::{Diagnostic, Registry, Severity};

/// Renders one SARIF log with one run.
pub fn sarif(diagnostics: &[Diagnostic], registry: &Registry) -> String {
    let rules: Vec<&crate::validate::Rule> = registry.rules.iter().filter(|r| r.severity.is_some()).collect();
    let descriptors: Vec<Value> = rules
        .iter()
        .map(|rule| {
            let level = match rule.severity {
                Some(Severity::Error) => "error",
                _ => "warning",
            };
            json!({
                "id": rule.id(),
                "name": rule.id(),
                "shortDescription": { "text": first_sentence(&rule.file.description) },
                "fullDescription": { "text": rule.file.description },
                "help": { "text": rule.fill(&rule.file.help, &[]) },
                "defaultConfiguration": { "level": level },
                "properties": { "origin": rule.file.origin.clone().unwrap_or_default() },
            })
        })
        .collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let mut physical = json!({ "artifactLocation": { "uri": display(&d.file) } });
            if d.line > 0 {
                physical["region"] = json!({ "startLine": d.line, "startColumn": d.column.max(1) });
            }
            let mut result = json!({
                "ruleId": d.rule,
                "level": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "message": { "text": format!("{}\nhelp: {}", d.message, d.help) },
                "locations": [{ "physicalLocation": physical }],
            });
            if let Some(index) = rules.iter().position(|r| r.id() == d.rule) {
                result["ruleIndex"] = json!(index);
            }
            result
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "reconcile",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/reconcile-pm2/reconcile",
                "rules": descriptors,
            }},
            "results": results,
        }],
    });
    let mut text = serde_json::to_string_pretty(&log).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text.to_string(),
    }
}
