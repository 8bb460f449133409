//! Rules that data cannot express, because they look across apps or at the project:
//! `unique-name`, `unique-port`, `reserved-name`, `owned-namespace`, `missing-env`.
//! Their metadata lives in `policies/` like every other rule.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::{Context, Diagnostic, FileApps, Sink};
use crate::config::source::Location;
use crate::desired::AppView;

/// Runs the code rules over every app of every file.
pub fn check(files: &[FileApps<'_>], ctx: Context<'_>, out: &mut Vec<Diagnostic>) {
    let mut namespaces: BTreeSet<String> = files.iter().flat_map(|f| f.apps.iter().map(AppView::namespace)).collect();
    if let Some(owned) = ctx.owned {
        namespaces.extend(owned.iter().cloned());
    }
    let mut names: HashMap<String, (String, Location)> = HashMap::new();
    let mut ports: HashMap<u64, (String, String, Location)> = HashMap::new();
    for entry in files {
        let mut sink = Sink { file: entry.file, ctx, out: &mut *out };
        for app in &entry.apps {
            let name = app.name();
            let display = name.clone().unwrap_or_else(|| format!("app #{}", app.index + 1));
            let here = |pointer: &str| entry.file.map.locate(pointer).unwrap_or(Location { line: 1, column: 1 });
            let file_name = entry.file.source.path().display().to_string();

            if let Some(owned) = ctx.owned {
                let namespace = app.namespace();
                if !owned.contains(&namespace) {
                    let shown = if app.has("namespace") { format!("`{namespace}`") } else { "not set (PM2 uses `default`)".into() };
                    sink.emit(
                        "owned-namespace",
                        &app.pointer_of("namespace"),
                        format!("the namespace of `{display}` is {shown}; this project owns: {}", owned.join(", ")),
                        None,
                        name.clone(),
                    );
                }
            }

            if let Some(name) = &name {
                if let Some(reason) = reserved(name, &namespaces) {
                    sink.emit("reserved-name", &app.pointer_of("name"), format!("app name `{name}` {reason}"), None, Some(name.clone()));
                }
                let at = here(&app.pointer_of("name"));
                match names.get(name) {
                    Some((first_file, first_at)) => sink.emit(
                        "unique-name",
                        &app.pointer_of("name"),
                        format!("app name `{name}` is also used at {first_file}:{}; PM2 names are global", first_at.line),
                        None,
                        Some(name.clone()),
                    ),
                    None => {
                        names.insert(name.clone(), (file_name.clone(), at));
                    }
                }
            }

            for (port, pointer) in claimed_ports(app) {
                let at = here(&pointer);
                match ports.get(&port) {
                    Some((other, first_file, first_at)) if other != &display => sink.emit(
                        "unique-port",
                        &pointer,
                        format!("port {port} of `{display}` is also claimed by `{other}` at {first_file}:{}", first_at.line),
                        None,
                        name.clone(),
                    ),
                    Some(_) => {}
                    None => {
                        ports.insert(port, (display.clone(), file_name.clone(), at));
                    }
                }
            }

            if let Some(env) = &app.env_name
                && !app.env_block_found {
                    sink.emit(
                        "missing-env",
                        &app.pointer,
                        format!("`{display}` has no env_{env} block; PM2 starts it with `env` alone"),
                        Some(format!("add an `env_{env}` block to `{display}`, or choose another env")),
                        name.clone(),
                    );
                }
        }
    }
}

/// The longest app name whose log file name fits a file system's 255 bytes:
/// PM2 writes `<name>-error-<pm_id>.log` (7 + up to 6 digits + 4 bytes around the name).
pub const MAX_NAME_BYTES: usize = 255 - "-error-".len() - 6 - ".log".len();

/// Why PM2 would misread, rename or mangle a name, if it would.
fn reserved(name: &str, namespaces: &BTreeSet<String>) -> Option<String> {
    if name.is_empty() {
        return Some("is empty: PM2 names the app after its script instead, so apply could not find what it started".into());
    }
    if name == "all" {
        return Some("is `all`, which PM2's CLI reads as every process".into());
    }
    if js_number(name) {
        return Some("reads as a number (JavaScript's `isNaN` is false for it), so PM2's CLI takes it for a process id".into());
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character (a newline, a tab...), which breaks PM2's output and log lines".into());
    }
    if name.contains(['/', '\\']) {
        return Some("contains a path separator; PM2 builds its log and pid file paths from the name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "is {} bytes long; PM2's log file `<name>-error-<pm_id>.log` must fit in 255 bytes, so at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.len() > 1 && name.starts_with('/') && name.ends_with('/') {
        return Some("is a /regex/, which PM2's CLI matches against every name".into());
    }
    if namespaces.contains(name) {
        return Some("is also a namespace, so `pm2 stop` by that word is ambiguous".into());
    }
    None
}

/// Whether JavaScript's `Number(name)` is a number (PM2's CLI tests `isNaN(name)`):
/// blank, decimal with an optional sign and exponent, `Infinity`, or `0x`/`0o`/`0b`.
fn js_number(name: &str) -> bool {
    let t = name.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return true;
    }
    let radix = |prefix: [&str; 2], radix: u32| {
        prefix.iter().find_map(|p| t.strip_prefix(p)).is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_digit(radix)))
    };
    if radix(["0x", "0X"], 16) || radix(["0o", "0O"], 8) || radix(["0b", "0B"], 2) {
        return true;
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return true;
    }
    unsigned.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && unsigned.chars().any(|c| c.is_ascii_digit())
        && unsigned.parse::<f64>().is_ok()
}

/// Ports an app claims: `PORT` in its merged env, `port`, and `--port N`, `--port=N`, `-p N` in args.
pub fn claimed_ports(app: &AppView) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    let as_port = |v: &Value| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(port) = app.fields.get("env").and_then(|e| e.get("PORT")).and_then(as_port) {
        found.push((port, app.env_pointer("PORT")));
    }
    if let Some(port) = app.fields.get("port").and_then(as_port) {
        found.push((port, app.pointer_of("port")));
    }
    let args: Vec<String> = match app.fields.get("args") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).flat_map(|s| s.split_whitespace()).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    for (i, arg) in args.iter().enumerate() {
        let value = if let Some(v) = arg.strip_prefix("--port=") {
            Some(v.to_string())
        } else if arg == "--port" || arg == "-p" {
            args.get(i + 1).cloned()
        } else {
            None
        };
        if let Some(port) = value.and_then(|v| v.parse().ok()) {
            found.push((port, app.pointer_of("args")));
        }
    }
    found.dedup_by_key(|(port, _)| *port);
    found
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_the_cli_reads_as_numbers_or_pm2_would_mangle_are_reserved() {
        let ns = BTreeSet::new();
        for bad in ["", "1e3", "0x1", " 0", "-5", "1.5", "Infinity", "0b11", "a\nb", "a/b", "a\\b", "all", "42"] {
            assert!(reserved(bad, &ns).is_some(), "{bad:?}");
        }
        assert!(reserved(&"x".repeat(MAX_NAME_BYTES + 1), &ns).is_some());
        for good in ["web", "api-2", "e1", "0xg", "1.2.3", "v8", &"x".repeat(MAX_NAME_BYTES)] {
            assert!(reserved(good, &ns).is_none(), "{good:?}");
        }
    }
}
