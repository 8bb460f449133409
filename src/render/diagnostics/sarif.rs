//! `lint --format sarif`: SARIF 2.1.0 for GitHub code scanning. Every enabled rule is
//! listed under the tool driver (with a readable `name` apart from its `id`, and a
//! `helpUri` to its documentation); each finding refers to its rule by id and index,
//! at a path relative to the repository root (`uriBaseId` `%SRCROOT%`).

use serde_json::{Value, json};

use super::SourceRoot;
use crate::validate::{Diagnostic, Registry, Severity};

/// The base id the result paths are relative to.
const SRCROOT: &str = "%SRCROOT%";

/// Renders one SARIF log with one run.
pub fn sarif(diagnostics: &[Diagnostic], registry: &Registry, root: &SourceRoot) -> String {
    let rules: Vec<&crate::validate::Rule> = registry.rules.iter().filter(|r| r.severity.is_some()).collect();
    let descriptors: Vec<Value> = rules
        .iter()
        .map(|rule| {
            let level = match rule.severity {
                Some(Severity::Error) => "error",
                _ => "warning",
            };
            let help = rule.fill(&rule.file.help, &[]);
            let mut descriptor = json!({
                "id": rule.id(),
                "name": pascal_case(rule.id()),
                "shortDescription": { "text": first_sentence(&rule.file.description) },
                "fullDescription": { "text": rule.file.description },
                "help": {
                    "text": format!("{help}\n\n`reconcile lint --explain {}` explains the rule.", rule.id()),
                },
                "defaultConfiguration": { "level": level },
                "properties": { "origin": rule.file.origin.clone().unwrap_or_default() },
            });
            if let Some(uri) = super::rule_doc(rule) {
                descriptor["helpUri"] = json!(uri);
            }
            descriptor
        })
        .collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let mut physical = json!({ "artifactLocation": { "uri": root.relative(&d.file), "uriBaseId": SRCROOT } });
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
    let mut run = json!({
        "tool": { "driver": {
            "name": "reconcile",
            "semanticVersion": env!("CARGO_PKG_VERSION"),
            "informationUri": "https://github.com/reconcile-pm2/reconcile",
            "rules": descriptors,
        }},
        "results": results,
        "columnKind": "unicodeCodePoints",
    });
    if let Some(uri) = root.uri() {
        run["originalUriBaseIds"] = json!({ SRCROOT: { "uri": uri } });
    }
    let log = json!({
        "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    });
    let mut text = serde_json::to_string_pretty(&log).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// `min-uptime` → `MinUptime` (SARIF wants a rule's `name` readable and apart from its id).
fn pascal_case(id: &str) -> String {
    id.split(['-', '_', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_pascal_case_apart_from_the_ids() {
        assert_eq!(pascal_case("min-uptime"), "MinUptime");
        assert_eq!(pascal_case("watch-in-production"), "WatchInProduction");
        assert_eq!(pascal_case("schema"), "Schema");
    }
}
