//! The `schema` and `unknown-key` checks, against `schemas/ecosystem.schema.json`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

use crate::desired::app::ALIASES;

/// The ecosystem schema, as shipped in `schemas/`.
pub const ECOSYSTEM_SCHEMA: &str = include_str!("../../schemas/ecosystem.schema.json");

/// The `reconcile.toml` schema, as shipped in `schemas/`.
pub const PROJECT_SCHEMA: &str = include_str!("../../schemas/reconcile.schema.json");

struct AppSchema {
    root: Value,
    known_keys: BTreeSet<String>,
}

/// `#/$defs/app` of the ecosystem schema, compiled into the binary by jsonschema's
/// `validator` macro. Compiling it at run time took ~1.3 ms of every `lint` and `plan`
/// (regexes for its patterns included), on the core the PM2 daemon needs meanwhile.
#[jsonschema::validator(
    schema = r#"{"$ref": "https://reconcile.dev/schemas/ecosystem.schema.json#/$defs/app"}"#,
    resources = { "https://reconcile.dev/schemas/ecosystem.schema.json" => { path = "schemas/ecosystem.schema.json" } },
    validate_formats = false
)]
struct AppValidator;

fn app_schema() -> &'static AppSchema {
    static SCHEMA: OnceLock<AppSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // Both are compiled into the binary and checked by unit tests, so a failure
        // here is a build defect, not bad input.
        #[allow(clippy::expect_used)]
        let root: Value = serde_json::from_str(ECOSYSTEM_SCHEMA).expect("ecosystem schema is valid JSON");
        let mut known_keys: BTreeSet<String> = root
            .pointer("/$defs/app/properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        known_keys.extend(ALIASES.iter().map(|(alias, _)| (*alias).to_string()));
        AppSchema { root, known_keys }
    })
}

/// Compiles a schema that ships inside reconcile (the built-in rules' checks, which
/// take parameters from `reconcile.toml` and so are compiled at run time) as draft 7.
///
/// Why: each compile first validates the schema against its draft's meta-schema.
/// With jsonschema's `macros` feature those meta-validators are generated at build
/// time; before, the 2020-12 one was built on first use in every process (2.0 ms,
/// against 0.36 ms for draft 7). Draft 7 is kept: our schemas use no keyword whose
/// meaning differs between the two drafts (no `$ref` beside other assertions,
/// nothing added after draft 7: the test `shipped_schemas_use_only_draft_7_keywords`
/// keeps it so); `format` stays an annotation, as in 2020-12. User policy files are
/// still compiled as 2020-12.
pub fn builtin_validator(schema: &Value) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options().with_draft(jsonschema::Draft::Draft7).should_validate_formats(false).build(schema)
}

/// A schema violation inside one app: the pointer relative to the app, and why.
#[derive(Debug, Clone)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
    pub expected: Option<String>,
}

/// Checks one app as written against `#/$defs/app`.
pub fn check_app(app: &Value) -> Vec<Violation> {
    let schema = app_schema();
    let mut seen = BTreeSet::new();
    AppValidator::iter_errors(app)
        .filter_map(|error| {
            let pointer = error.instance_path().as_str().to_string();
            if !seen.insert(pointer.clone()) {
                return None;
            }
            let key = pointer.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
            let mut message = error.to_string();
            if message.len() > 200 {
                let cut = (0..=200).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
                message.truncate(cut);
                message.push('…');
            }
            let message = if key.is_empty() { message } else { format!("`{key}`: {message}") };
            let expected = property_description(&schema.root, &key);
            Some(Violation { pointer, message, expected })
        })
        .collect()
}

fn property_description(root: &Value, key: &str) -> Option<String> {
    let description = root.pointer(&format!("/$defs/app/properties/{key}/description"))?.as_str()?;
    let first = description.split(". ").next().unwrap_or(description).trim_end_matches('.');
    Some(first.to_string())
}

/// Whether PM2 knows this app key (including aliases, `env_<name>` blocks, and the
/// camelCase spelling PM2 accepts for every key, `lib/tools/Config.js`).
pub fn is_known_key(key: &str) -> bool {
    key.starts_with("env_") || app_schema().known_keys.contains(key) || app_schema().known_keys.contains(&snake_case(key))
}

/// `maxRestarts` to `max_restarts`.
pub fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every key PM2 knows, for "did you mean".
pub fn known_keys() -> Vec<&'static str> {
    app_schema().known_keys.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_shipped_schemas_compile() {
        let project: Value = serde_json::from_str(PROJECT_SCHEMA).unwrap();
        jsonschema::validator_for(&project).unwrap();
        assert!(is_known_key("exec_mode") && is_known_key("out") && is_known_key("env_production"));
        assert!(!is_known_key("exec_mod"));
        assert!(is_known_key("maxRestarts") && !is_known_key("Exec_mode"));
    }

    /// Keywords whose meaning is not the same in draft 7 and 2020-12 (see
    /// [`builtin_validator`]); a `$ref` beside an assertion is ignored by draft 7, and
    /// `items` as an array is a tuple there.
    const NOT_DRAFT_7: &[&str] = &[
        "prefixItems", "additionalItems", "dependentRequired", "dependentSchemas", "dependencies",
        "unevaluatedProperties", "unevaluatedItems", "minContains", "maxContains", "$anchor", "$dynamicRef",
        "$dynamicAnchor", "$recursiveRef", "contentSchema", "format",
    ];

    fn draft_7_safe(node: &Value, path: &str, found: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                let assertions = map.keys().filter(|k| !["$ref", "description", "title", "$comment", "default", "examples"].contains(&k.as_str()));
                if map.contains_key("$ref") && assertions.count() > 0 {
                    found.push(format!("{path}: $ref beside other keywords"));
                }
                for (key, value) in map {
                    let container = ["properties", "$defs", "patternProperties"].contains(&key.as_str());
                    // `items` with one schema means the same in both; as an array it does not.
                    let tuple = key == "items" && value.is_array();
                    if !container && (NOT_DRAFT_7.contains(&key.as_str()) || tuple) {
                        found.push(format!("{path}/{key}"));
                    }
                    match (container, value) {
                        (true, Value::Object(children)) => {
                            for (name, child) in children {
                                draft_7_safe(child, &format!("{path}/{key}/{name}"), found);
                            }
                        }
                        _ => draft_7_safe(value, &format!("{path}/{key}"), found),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    draft_7_safe(item, &format!("{path}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn shipped_schemas_use_only_draft_7_keywords() {
        let mut found = Vec::new();
        draft_7_safe(&serde_json::from_str(ECOSYSTEM_SCHEMA).unwrap(), "", &mut found);
        let registry = crate::validate::Registry::load(&crate::config::project::PoliciesSection::default(), std::path::Path::new(".")).unwrap();
        for rule in &registry.rules {
            for (i, check) in rule.file.checks.iter().enumerate() {
                for schema in check.when.iter().chain(std::iter::once(&check.require)) {
                    draft_7_safe(schema, &format!("{}#{i}", rule.id()), &mut found);
                }
            }
        }
        assert!(found.is_empty(), "compiled as draft 7 by builtin_validator, but: {found:?}");
        // The check can fail.
        let mut bad = Vec::new();
        draft_7_safe(&json!({"properties": {"a": {"$ref": "#/x", "minimum": 1}, "b": {"prefixItems": []}, "c": {"items": [{}]}, "d": {"items": {}}}}), "", &mut bad);
        assert_eq!(bad.len(), 3, "{bad:?}");
    }

    #[test]
    fn violations_point_at_the_key() {
        let violations = check_app(&json!({"name": "a", "instances": "many", "autorestart": "yes"}));
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/instances") && pointers.contains(&"/autorestart"), "{violations:?}");
    }

    #[test]
    fn what_pm2_accepts_passes() {
        let app = json!({"name": "a", "script": "a.js", "instances": "max", "min_uptime": "5s",
            "max_memory_restart": "200M", "args": ["--a", "1"], "node_args": "--inspect", "env": {"PORT": 80}});
        assert!(check_app(&app).is_empty(), "{:?}", check_app(&app));
    }
}
