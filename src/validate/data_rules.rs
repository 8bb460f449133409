//! Rules written as data: each `[[checks]]` entry is a JSON Schema condition evaluated
//! per app (after aliases, coercion and env merge), with `{param}` placeholders filled
//! from the rule's parameters.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::Sink;
use super::registry::{Check, Rule, RuleKind};
use crate::desired::AppView;

/// Runs every enabled data rule on one app.
pub fn check(sink: &mut Sink<'_>, app: &AppView) {
    let registry = sink.ctx.registry;
    for rule in registry.rules.iter().filter(|r| r.file.kind == RuleKind::Data && r.severity.is_some()) {
        for check in &rule.file.checks {
            if let Some((pointer, message, help)) = evaluate(rule, check, app, sink.ctx.env) {
                sink.emit(rule.id(), &pointer, message, help, app.name());
            }
        }
    }
}

/// One check against one app: `Some((pointer, message, help))` when it fails.
pub fn evaluate(rule: &Rule, check: &Check, app: &AppView, env: Option<&str>) -> Option<(String, String, Option<String>)> {
    if let Some(envs) = &check.env {
        if !env.is_some_and(|e| envs.iter().any(|x| x == e)) {
            return None;
        }
    }
    let instance = Value::Object(app.fields.clone());
    if let Some(when) = &check.when {
        if !matches(rule, when, &instance) {
            return None;
        }
    }
    if matches(rule, &check.require, &instance) {
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
    let pointer = if !check.key.is_empty() && app.fields.contains_key(&check.key) {
        app.pointer_of(&check.key)
    } else {
        app.pointer_of("name")
    };
    Some((pointer, message, help))
}

/// Compiles (once per distinct schema) and evaluates a rule schema. A schema that does
/// not compile never matches, so its check always fires and the rule's tests catch it.
fn matches(rule: &Rule, schema: &Value, instance: &Value) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<jsonschema::Validator>>>> = OnceLock::new();
    let schema = rule.instantiate(schema);
    let key = schema.to_string();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = match cache.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let validator = cache.entry(key).or_insert_with(|| jsonschema::validator_for(&schema).ok());
    validator.as_ref().is_some_and(|v| v.is_valid(instance))
}
