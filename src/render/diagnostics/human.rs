//! Compiler-style findings: severity and rule, `file:line:col`, the line with a
//! marker under the offending text, and a help line.

use std::fmt::Write;
use std::path::Path;

use super::Summary;
use crate::config::source::SourceFile;
use crate::render::style;
use crate::validate::{Diagnostic, Registry, Rule, Severity};

/// Renders findings, then one count line. `sources` provides the snippets.
pub fn human(diagnostics: &[Diagnostic], sources: &[&SourceFile], summary: Summary) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let level = match d.severity {
            Severity::Error => style::ERROR,
            Severity::Warning => style::WARNING,
        };
        let bold = style::BOLD;
        let gutter = style::GUTTER;
        let _ = writeln!(out, "{level}{}[{}]{level:#}{bold}: {}{bold:#}", d.severity.as_str(), d.rule, d.message);
        let source = sources.iter().find(|s| s.path() == d.file.as_path());
        let width = d.line.max(1).to_string().len();
        let pad = " ".repeat(width);
        if d.line == 0 {
            let _ = writeln!(out, "{pad}{gutter}-->{gutter:#} {}", display(&d.file));
        } else {
            let _ = writeln!(out, "{pad}{gutter}-->{gutter:#} {}:{}:{}", display(&d.file), d.line, d.column);
            if let Some(text) = source.and_then(|s| s.line_text(d.line)) {
                // A secret key's value is hidden even where the file did not parse.
                let text = crate::redact::scrub_source_line(text).replace('\t', "    ");
                let shown: String = text.chars().take(160).collect();
                let start = d.column.saturating_sub(1).min(shown.chars().count());
                let rest: String = shown.chars().skip(start).collect();
                let marked = rest.trim_end().trim_end_matches([',', ';']).chars().count().max(1);
                let _ = writeln!(out, "{pad} {gutter}|{gutter:#}");
                let _ = writeln!(out, "{gutter}{:>width$} |{gutter:#} {shown}", d.line);
                let _ = writeln!(out, "{pad} {gutter}|{gutter:#} {}{level}{}{level:#}", " ".repeat(start), "^".repeat(marked));
            }
        }
        let help = style::HELP;
        let _ = writeln!(out, "{pad} {gutter}={gutter:#} {help}help{help:#}: {}", d.help);
        out.push('\n');
    }
    let _ = writeln!(out, "{}", closing_line(summary));
    out
}

/// Warnings as one line, by rule, with how to see them (for `plan`, `apply`, `watch`).
pub fn warnings_line(diagnostics: &[Diagnostic]) -> String {
    let mut by_rule: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for d in diagnostics {
        *by_rule.entry(d.rule.as_str()).or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(rule, n)| if *n == 1 { (*rule).to_string() } else { format!("{rule} ×{n}") }).collect();
    let w = style::WARNING;
    format!(
        "{w}{}{w:#} ({}); `reconcile lint` shows them, or add -v\n",
        plural(diagnostics.len(), "lint warning"),
        rules.join(", ")
    )
}

fn closing_line(summary: Summary) -> String {
    let files = plural(summary.files, "file");
    let apps = plural(summary.apps, "app");
    if summary.errors == 0 && summary.warnings == 0 {
        return format!("no problems in {files} ({apps})");
    }
    format!("{}, {} in {files} ({apps})", plural(summary.errors, "error"), plural(summary.warnings, "warning"))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// A path as the user named it, with `/` separators.
pub fn display(path: &Path) -> String {
    path.display().to_string().replace('\\', "/")
}

/// `lint --explain RULE`: the rule's documentation, as `docs/rules.md` has it.
pub fn explain(rule: &Rule) -> String {
    let mut out = String::new();
    let bold = style::BOLD;
    let severity = rule.severity.map_or("off", Severity::as_str);
    let from = if rule.origin_path.starts_with("builtin:") { "built-in".to_string() } else { format!("from {}", rule.origin_path) };
    let _ = writeln!(out, "{bold}{}{bold:#} ({severity}, {from})\n", rule.id());
    let _ = writeln!(out, "{}\n", rule.file.description);
    let _ = writeln!(out, "How to fix: {}", rule.fill(&rule.file.help, &[]));
    if let Some(origin) = &rule.file.origin {
        let _ = writeln!(out, "Why: {origin}");
    }
    if !rule.params.is_empty() {
        let params: Vec<String> = rule.params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let _ = writeln!(out, "Parameters: {} (set in reconcile.toml: [policies.rules.{}])", params.join(", "), rule.id());
    }
    let _ = writeln!(out, "Severity: set `severity = \"error\"`, `\"warning\"` or `\"off\"` under [policies.rules.{}]", rule.id());
    if let Some(uri) = super::rule_doc(rule) {
        let _ = writeln!(out, "Documentation: {uri}");
    }
    out
}

/// `docs/rules.md`: every rule of `registry` as a section anchored by its id.
pub fn rules_markdown(registry: &Registry) -> String {
    let mut out = String::from(
        "# Lint rules\n\n<!-- Generated from policies/*.toml by the test `docs_rules_md_is_current`; \
         RECONCILE_BLESS=1 rewrites it. -->\n\n\
         Each rule can be re-graded or switched off in `reconcile.toml` \
         (`[policies.rules.RULE] severity = \"warning\"` or `\"off\"`, and its parameters). \
         `reconcile lint --explain RULE` prints the same text; `reconcile lint --list-rules` lists \
         the rules in force, with those from `[policies] paths`.\n\n| rule | severity |\n| --- | --- |\n",
    );
    for rule in &registry.rules {
        let _ = writeln!(out, "| [`{0}`](#{0}) | {1} |", rule.id(), rule.severity.map_or("off", Severity::as_str));
    }
    for rule in &registry.rules {
        let _ = writeln!(out, "\n## {}\n", rule.id());
        let _ = writeln!(out, "Severity: **{}**.\n", rule.severity.map_or("off", Severity::as_str));
        let _ = writeln!(out, "{}\n", rule.file.description);
        let _ = writeln!(out, "How to fix: {}", rule.fill(&rule.file.help, &[]));
        if let Some(origin) = &rule.file.origin {
            let _ = writeln!(out, "\nWhy: {origin}");
        }
        if !rule.params.is_empty() {
            let params: Vec<String> = rule.params.iter().map(|(k, v)| format!("`{k} = {v}`")).collect();
            let _ = writeln!(out, "\nParameters: {} (`[policies.rules.{}]`).", params.join(", "), rule.id());
        }
    }
    out
}

/// `lint --list-rules`: every rule with its severity, kind and description.
pub fn rules_table(registry: &Registry) -> String {
    let mut out = String::new();
    let width = registry.rules.iter().map(|r| r.id().len()).max().unwrap_or(4);
    let _ = writeln!(out, "{:<width$}  {:<8}  {:<4}  DESCRIPTION", "RULE", "SEVERITY", "KIND");
    for rule in &registry.rules {
        let severity = rule.severity.map_or("off", Severity::as_str);
        let kind = match rule.file.kind {
            crate::validate::registry::RuleKind::Data => "data",
            crate::validate::registry::RuleKind::Code => "code",
        };
        let params: Vec<String> = rule.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let params = if params.is_empty() { String::new() } else { format!(" [{}]", params.join(", ")) };
        let _ = writeln!(out, "{:<width$}  {severity:<8}  {kind:<4}  {}{params}", rule.id(), rule.file.description);
    }
    out
}
