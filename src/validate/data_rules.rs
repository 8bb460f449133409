//! Rules written as data: each `[[checks]]` entry is a JSON Schema condition evaluated
//! per app (after aliases, coercion and env merge), with `{param}` placeholders filled
//! from the rule's parameters. Schemas are compiled once, by the registry.

use serde_json::Value;

use super::Sink;
use super::registry::{Check, CompiledCheck, Rule, RuleKind};
use crate::desired::AppView;

/// Runs every enabled data rule on one app.
pub fn check(sink: &mut Sink<'_>, app: &AppView) {
    let registry = sink.ctx.registry;
    for rule in registry.rules.iter().filter(|r| r.file.kind == RuleKind::Data && r.severity.is_some()) {
        for (check, compiled) in rule.file.checks.iter().zip(&rule.compiled) {
            if let Some((pointer, message, help)) = evaluate(rule, check, compiled, app, sink.ctx.env) {
                sink.emit(rule.id(), &pointer, message, help, app.name());
            }
        }
    }
}

/// One check against one app: `Some((pointer, message, help))` when it fails.
pub fn evaluate(
    rule: &Rule,
    check: &Check,
    compiled: &CompiledCheck,
    app: &AppView,
    env: Option<&str>,
) -> Option<(String, String, Option<String>)> {
    if let Some(envs) = &check.env
        && !env.is_some_and(|e| envs.iter().any(|x| x == e)) {
            return None;
        }
    let instance = &app.fields;
    if compiled.when.as_ref().is_some_and(|when| !when.is_valid(instance)) {
        return None;
    }
    if compiled.require.is_valid(instance) {
        return None;
    }
    let value = if check.key.is_empty() {
        String::new()
    } else {
        app.fields.get(&check.key).map_or_else(|| "not set".to_string(), Value::to_string)
    };
    let name = app.name().unwrap_or_else(|| format!("app #{}", app.index + 1));
    let extra = [("value", value), ("name", name)];
    let message = rule.fill(&check.message, &extra);
    let help = check.help.as_ref().map(|h| rule.fill(h, &extra));
    // A missing key is reported on the app's `name` line: that is where it belongs.
    let pointer = if !check.key.is_empty() && app.has(&check.key) {
        app.pointer_of(&check.key)
    } else {
        app.pointer_of("name")
    };
    Some((pointer, message, help))
}
