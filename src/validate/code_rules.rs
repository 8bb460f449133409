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

/// Why a name is read as a selector by PM2's CLI, if it is.
fn reserved(name: &str, namespaces: &BTreeSet<String>) -> Option<String> {
    if name == "all" {
        return Some("is `all`, which PM2's CLI reads as every process".into());
    }
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        return Some("is a number, which PM2's CLI may read as a process id".into());
    }
    if name.len() > 1 && name.starts_with('/') && name.ends_with('/') {
        return Some("is a /regex/, which PM2's CLI matches against every name".into());
    }
    if namespaces.contains(name) {
        return Some("is also a namespace, so `pm2 stop` by that word is ambiguous".into());
    }
    None
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
