//! One app as PM2 would see it after `verifyConfs` and `validateJSON`, keeping the
//! pointer of every key in the file so findings can point at what was written.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::source::pointer_segment;

/// Key aliases PM2 accepts (`lib/API/schema.json` `alias`, and `cmd`/`command` from
/// `Common.verifyConfs`), mapped to the canonical key.
pub const ALIASES: &[(&str, &str)] = &[
    ("exec", "script"),
    ("cmd", "script"),
    ("command", "script"),
    ("interpreter", "exec_interpreter"),
    ("interpreter_args", "node_args"),
    ("interpreterArgs", "node_args"),
    ("out", "out_file"),
    ("output", "out_file"),
    ("out_log", "out_file"),
    ("error", "error_file"),
    ("err", "error_file"),
    ("err_file", "error_file"),
    ("err_log", "error_file"),
    ("log", "log_file"),
    ("pid", "pid_file"),
    ("cron", "cron_restart"),
    ("combine_logs", "merge_logs"),
    ("user", "uid"),
];

/// Keys PM2 coerces from numeric strings to numbers (`validateJSON`).
const NUMERIC_KEYS: &[&str] = &[
    "instances",
    "restart_delay",
    "exp_backoff_restart_delay",
    "kill_timeout",
    "listen_timeout",
    "max_restarts",
    "port",
    "kill_retry_time",
    "watch_delay",
];

/// Where the apps are not where PM2 looks for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// `apps` is there but not a list.
    #[error("`apps` is {found}; it must be a list of app objects")]
    AppsNotAList { found: &'static str },
    /// The document holds no app at all.
    #[error("no apps found; write `apps: [ {{ name: ..., script: ... }} ]` or a list of apps")]
    NoApps,
    /// An element of the list is not an object.
    #[error("app #{index} is {found}; each app must be an object")]
    AppNotAnObject { index: usize, found: &'static str },
}

/// One app in canonical form, for schema and policy checks and for planning.
#[derive(Debug, Clone)]
pub struct AppView {
    /// Position in the list (0-based).
    pub index: usize,
    /// Pointer of the app object in the document (`/apps/2`, or `` for a bare app).
    pub pointer: String,
    /// The app as written (before aliases), for the JSON Schema; always an object.
    pub raw: Value,
    /// Canonical keys, coerced values, `env` merged for the chosen env; always an object.
    pub fields: Value,
    /// Pointer in the file of each canonical key (aliases point at what was written).
    pub key_pointers: HashMap<String, String>,
    /// The env name merged (`--env NAME`), if any, and whether `env_<name>` existed.
    pub env_name: Option<String>,
    pub env_block_found: bool,
}

impl AppView {
    /// Whether a canonical key is set.
    pub fn has(&self, key: &str) -> bool {
        self.fields.get(key).is_some()
    }

    /// The keys as written.
    pub fn raw_keys(&self) -> impl Iterator<Item = &String> {
        self.raw.as_object().into_iter().flat_map(|m| m.keys())
    }

    /// The app's name: as written, else what PM2 derives from the script.
    pub fn name(&self) -> Option<String> {
        if let Some(name) = self.fields.get("name").and_then(Value::as_str) {
            return Some(name.to_string());
        }
        let script = self.fields.get("script")?.as_str()?;
        if script.contains(' ') {
            return Some(script.to_string());
        }
        let base = script.rsplit(['/', '\\']).next().unwrap_or(script);
        Some(match base.rfind('.') {
            Some(dot) if dot > 0 => base[..dot].to_string(),
            _ => base.to_string(),
        })
    }

    /// The namespace PM2 will put it in (`default` when unset).
    pub fn namespace(&self) -> String {
        self.fields.get("namespace").and_then(Value::as_str).unwrap_or("default").to_string()
    }

    /// Pointer in the file for a canonical key, or where it would go (the app itself).
    pub fn pointer_of(&self, key: &str) -> String {
        self.key_pointers.get(key).cloned().unwrap_or_else(|| self.pointer.clone())
    }

    /// Pointer of an env variable: in `env_<name>` if that is where the value came from.
    pub fn env_pointer(&self, var: &str) -> String {
        if let Some(name) = &self.env_name {
            let block = format!("env_{name}");
            if self.raw.get(&block).and_then(Value::as_object).is_some_and(|env| env.contains_key(var)) {
                return format!("{}/{}/{}", self.pointer, pointer_segment(&block), pointer_segment(var));
            }
        }
        if self.raw.get("env").and_then(Value::as_object).is_some_and(|env| env.contains_key(var)) {
            return format!("{}/env/{}", self.pointer, pointer_segment(var));
        }
        self.pointer_of("env")
    }
}

/// Finds the apps where PM2 does (`apps`, then `pm2`, then the document itself) and
/// builds their canonical views for `env_name`.
pub fn extract_apps(document: &Value, env_name: Option<&str>) -> Result<Vec<AppView>, ExtractError> {
    let (list, base): (Vec<&Value>, String) = match document {
        Value::Array(items) => (items.iter().collect(), String::new()),
        Value::Object(object) => match object.get("apps").or_else(|| object.get("pm2")) {
            Some(Value::Array(items)) => {
                let key = if object.contains_key("apps") { "apps" } else { "pm2" };
                (items.iter().collect(), format!("/{key}"))
            }
            Some(Value::Object(single)) if single.contains_key("script") || single.contains_key("name") => {
                let key = if object.contains_key("apps") { "apps" } else { "pm2" };
                return Ok(vec![build(0, format!("/{key}"), single, env_name)]);
            }
            Some(other) => return Err(ExtractError::AppsNotAList { found: kind(other) }),
            None if looks_like_app(object) => return Ok(vec![build(0, String::new(), object, env_name)]),
            None => return Err(ExtractError::NoApps),
        },
        _ => return Err(ExtractError::NoApps),
    };
    if list.is_empty() {
        return Err(ExtractError::NoApps);
    }
    list.into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Object(app) => Ok(build(index, format!("{base}/{index}"), app, env_name)),
            other => Err(ExtractError::AppNotAnObject { index, found: kind(other) }),
        })
        .collect()
}

fn looks_like_app(object: &Map<String, Value>) -> bool {
    ["script", "name", "cmd", "command", "exec"].iter().any(|k| object.contains_key(*k))
}

/// A JSON type name for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The canonical key for an alias, or the snake_case form of a camelCase key (PM2
/// accepts both spellings); other keys are returned unchanged.
fn canonical(key: &str) -> std::borrow::Cow<'_, str> {
    if let Some((_, canon)) = ALIASES.iter().find(|(alias, _)| *alias == key) {
        return std::borrow::Cow::Borrowed(canon);
    }
    if key.chars().any(|c| c.is_ascii_uppercase()) && key.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        return std::borrow::Cow::Owned(crate::validate::schema::snake_case(key));
    }
    std::borrow::Cow::Borrowed(key)
}

fn build(index: usize, pointer: String, raw: &Map<String, Value>, env_name: Option<&str>) -> AppView {
    let mut fields = Map::new();
    let mut key_pointers = HashMap::new();
    // Canonical keys first, so that an explicit key wins over its alias (as in PM2).
    for (key, value) in raw.iter().filter(|(k, _)| canonical(k) == k.as_str()) {
        // PM2 drops a falsy snake_case value in favour of its (absent) camelCase alias
        // (Config.js validateJSON), so `max_restarts: 0` reaches the daemon as unset;
        // the value is kept here so that rules can say so.
        fields.insert(key.clone(), value.clone());
        key_pointers.insert(key.clone(), format!("{pointer}/{}", pointer_segment(key)));
    }
    for (key, value) in raw.iter().filter(|(k, _)| canonical(k) != k.as_str()) {
        let canon = canonical(key).into_owned();
        if !fields.contains_key(&canon) {
            fields.insert(canon.clone(), value.clone());
            key_pointers.insert(canon, format!("{pointer}/{}", pointer_segment(key)));
        }
    }
    coerce(&mut fields);
    let mut env = fields.get("env").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut env_block_found = false;
    if let Some(name) = env_name
        && let Some(block) = raw.get(&format!("env_{name}")).and_then(Value::as_object) {
            env_block_found = true;
            env.extend(block.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    fields.insert("env".into(), Value::Object(env));
    AppView {
        index,
        pointer,
        raw: Value::Object(raw.clone()),
        fields: Value::Object(fields),
        key_pointers,
        env_name: env_name.map(str::to_string),
        env_block_found,
    }
}

/// Numeric strings to numbers, `max` instances to 0, and PM2's `5s` / `200M` suffixes.
fn coerce(fields: &mut Map<String, Value>) {
    for key in NUMERIC_KEYS {
        if let Some(Value::String(text)) = fields.get(*key) {
            let trimmed = text.trim();
            let number = if *key == "instances" && trimmed == "max" { Some(0.0) } else { trimmed.parse::<f64>().ok() };
            if let Some(n) = number.and_then(serde_json::Number::from_f64) {
                fields.insert((*key).to_string(), Value::Number(integral(n)));
            }
        }
    }
    if let Some(ms) = fields.get("min_uptime").and_then(|v| suffixed(v, &[('h', 3_600_000.0), ('m', 60_000.0), ('s', 1000.0)])) {
        fields.insert("min_uptime".into(), ms);
    }
    if let Some(bytes) = fields
        .get("max_memory_restart")
        .and_then(|v| suffixed(v, &[('G', 1024.0 * 1024.0 * 1024.0), ('M', 1024.0 * 1024.0), ('K', 1024.0)]))
    {
        fields.insert("max_memory_restart".into(), bytes);
    }
}

fn integral(n: serde_json::Number) -> serde_json::Number {
    match n.as_f64() {
        #[allow(clippy::cast_possible_truncation)]
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).into(),
        _ => n,
    }
}

fn suffixed(value: &Value, units: &[(char, f64)]) -> Option<Value> {
    let text = value.as_str()?.trim();
    if let Ok(n) = text.parse::<f64>() {
        return serde_json::Number::from_f64(n).map(|n| Value::Number(integral(n)));
    }
    let unit = text.chars().last()?;
    let factor = units.iter().find(|(u, _)| *u == unit)?.1;
    let n: f64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    serde_json::Number::from_f64(n * factor).map(|n| Value::Number(integral(n)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn apps_are_found_where_pm2_looks() {
        assert_eq!(extract_apps(&json!({"apps": [{"script": "a.js"}]}), None).unwrap()[0].pointer, "/apps/0");
        assert_eq!(extract_apps(&json!([{"script": "a.js"}]), None).unwrap()[0].pointer, "/0");
        assert_eq!(extract_apps(&json!({"script": "a.js"}), None).unwrap()[0].pointer, "");
        assert_eq!(
            extract_apps(&json!({"apps": "web"}), None).unwrap_err(),
            ExtractError::AppsNotAList { found: "a string" }
        );
        assert_eq!(extract_apps(&json!({"deploy": {}}), None).unwrap_err(), ExtractError::NoApps);
        assert_eq!(extract_apps(&json!({"apps": []}), None).unwrap_err(), ExtractError::NoApps);
    }

    #[test]
    fn aliases_resolve_and_the_canonical_key_wins() {
        let apps = extract_apps(&json!([{"cmd": "x", "out": "o.log", "out_file": "real.log"}]), None).unwrap();
        assert_eq!(apps[0].fields["script"], "x");
        assert_eq!(apps[0].fields["out_file"], "real.log");
        assert_eq!(apps[0].pointer_of("script"), "/0/cmd");
        assert_eq!(apps[0].name().as_deref(), Some("x"));
        let apps = extract_apps(&json!([{"minUptime": 5000, "execMode": "fork"}]), None).unwrap();
        assert_eq!(apps[0].fields["min_uptime"], 5000);
        assert_eq!(apps[0].fields["exec_mode"], "fork");
    }

    #[test]
    fn values_are_coerced_as_pm2_does() {
        let apps = extract_apps(
            &json!([{"instances": "max", "restart_delay": "60000", "min_uptime": "5s", "max_memory_restart": "200M"}]),
            None,
        )
        .unwrap();
        let fields = &apps[0].fields;
        assert_eq!(fields["instances"], 0);
        assert_eq!(fields["restart_delay"], 60000);
        assert_eq!(fields["min_uptime"], 5000);
        assert_eq!(fields["max_memory_restart"], 209_715_200);
    }

    #[test]
    fn env_blocks_merge_like_pm2_start_env() {
        let doc = json!([{"script": "a.js", "env": {"A": "1", "B": "1"}, "env_production": {"B": "2"}}]);
        let apps = extract_apps(&doc, Some("production")).unwrap();
        assert_eq!(apps[0].fields["env"], json!({"A": "1", "B": "2"}));
        assert!(apps[0].env_block_found);
        assert_eq!(apps[0].env_pointer("B"), "/0/env_production/B");
        assert!(!extract_apps(&doc, Some("staging")).unwrap()[0].env_block_found);
    }

    #[test]
    fn names_derive_from_the_script() {
        let apps = extract_apps(&json!([{"script": "./dist/server.js"}, {"script": "npm run start"}]), None).unwrap();
        assert_eq!(apps[0].name().as_deref(), Some("server"));
        assert_eq!(apps[1].name().as_deref(), Some("npm run start"));
    }
}
