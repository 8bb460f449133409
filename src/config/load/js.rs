//! `.js`/`.cjs`/`.mjs` ecosystem files: evaluated by `node` in a child process with a
//! deadline, as PM2 itself evaluates them (`require`, or `import()` for ES modules).
//! Evaluating runs the file's code: `--no-js` refuses it (see the README's security notes).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::config::ecosystem::{LoadError, LoadOptions, Parsed};
use crate::config::source::{Location, SourceFile, SourceMap, pointer_segment};

const EVALUATOR: &str = include_str!("js_eval.js");
const MARKER: &str = "\u{1e}reconcile-result:";
/// Output beyond this is dropped (the result of a real ecosystem file is a few KB).
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Evaluates a JavaScript ecosystem file with `node`.
pub fn evaluate(source: &SourceFile, options: &LoadOptions) -> Result<Parsed, LoadError> {
    let path = source.path.clone();
    if !options.allow_js {
        return Err(LoadError::JsDisabled { path });
    }
    let absolute = std::path::absolute(&path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
    let dir = absolute.parent().map_or_else(|| std::path::PathBuf::from("."), std::path::Path::to_path_buf);
    let mut child = Command::new("node")
        .arg("-e")
        .arg(EVALUATOR)
        .arg(&absolute)
        .arg(MARKER)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: whatever the file starts is killed with it.
        .process_group(0)
        .spawn()
        .map_err(|source| LoadError::NodeMissing { path: path.clone(), source })?;
    let group = Group { pgid: child.id() };
    let deadline = Instant::now() + options.js_timeout;
    // The pipes' identities, to find descendants that escaped the group (setsid,
    // `detached: true`) but still hold the output open.
    let pipes: Vec<String> = [child.stdout.as_ref().map(AsRawFd::as_raw_fd), child.stderr.as_ref().map(AsRawFd::as_raw_fd)]
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|link| link.to_string_lossy().into_owned())
        .collect();
    let (sender, outputs) = mpsc::channel::<(bool, String)>();
    if let Some(pipe) = child.stdout.take() {
        let sender = sender.clone();
        thread::spawn(move || sender.send((true, read_capped(pipe))));
    }
    if let Some(pipe) = child.stderr.take() {
        thread::spawn(move || sender.send((false, read_capped(pipe))));
    }
    let timed_out = |group: &Group, child: &mut std::process::Child| {
        group.kill();
        kill_pipe_holders(&pipes);
        let _ = child.kill();
        let _ = child.wait();
        LoadError::JsTimeout { path: path.clone(), after: options.js_timeout }
    };
    loop {
        // Not reaped yet (WNOWAIT): while node is a zombie its pid, the group's id,
        // cannot be reused, so killing the group below can only reach its members.
        match exited(child.id()) {
            Ok(true) => break,
            Ok(false) if Instant::now() >= deadline => return Err(timed_out(&group, &mut child)),
            Ok(false) => thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                group.kill();
                let _ = child.wait();
                return Err(LoadError::Read { path, source });
            }
        }
    }
    // Node is done; anything the file left behind in the group goes now.
    group.kill();
    let _ = child.wait();
    let (mut stdout, mut stderr) = (None, None);
    let mut holders_killed = false;
    while stdout.is_none() || stderr.is_none() {
        // Output still open after node exited is held by a descendant that left the
        // group: it is ended too, so that it cannot hold the command up.
        let wait = if holders_killed {
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500))
        } else {
            Duration::from_millis(50)
        };
        match outputs.recv_timeout(wait) {
            Ok((true, text)) => stdout = Some(text),
            Ok((false, text)) => stderr = Some(text),
            Err(mpsc::RecvTimeoutError::Timeout) if !holders_killed => {
                kill_pipe_holders(&pipes);
                holders_killed = true;
            }
            Err(_) => return Err(LoadError::JsTimeout { path, after: options.js_timeout }),
        }
    }
    let stdout = stdout.unwrap_or_default();
    let stderr = stderr.unwrap_or_default();
    let result = stdout.rfind(MARKER).map(|i| &stdout[i + MARKER.len()..]);
    let Some(result) = result else {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("node exited without a result");
        return Err(LoadError::JsFailed { path, location: None, message: last.trim().to_string() });
    };
    let outcome: Outcome = serde_json::from_str(result.trim_end()).map_err(|err| LoadError::JsFailed {
        path: path.clone(),
        location: None,
        message: format!("cannot read the evaluated value: {err}"),
    })?;
    match outcome {
        Outcome { error: Some(error), .. } => Err(failure(source, &absolute, error)),
        Outcome { value, esm_default, .. } => {
            let document = value.unwrap_or(Value::Null);
            let map = locate(source, &document);
            Ok(Parsed { document, map, duplicates: Vec::new(), esm_default })
        }
    }
}

#[derive(Deserialize)]
struct Outcome {
    value: Option<Value>,
    error: Option<JsError>,
    /// The apps are only the ES module's `export default` (PM2 cannot read that).
    #[serde(default)]
    esm_default: bool,
}

#[derive(Deserialize)]
struct JsError {
    name: String,
    message: String,
    code: Option<String>,
    stack: String,
}

/// The evaluation's process group (its leader is `node`).
struct Group {
    pgid: u32,
}

impl Group {
    /// SIGKILL to every process still in the group.
    fn kill(&self) {
        if let Ok(pgid) = i32::try_from(self.pgid)
            && pgid > 1
        {
            // SAFETY: kill(2) with a negative pid signals that process group only; the
            // group was created for this evaluation (`process_group(0)`).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Whether the child `pid` has exited, without reaping it.
fn exited(pid: u32) -> std::io::Result<bool> {
    let pid = libc::id_t::from(pid);
    // SAFETY: `siginfo_t` is plain data that waitid fills; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid pointer; WNOWAIT leaves it waitable.
    let rc = unsafe { libc::waitid(libc::P_PID, pid, &raw mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after a successful waitid, si_pid is set (0 when nothing has exited yet).
    Ok(unsafe { info.si_pid() } != 0)
}

/// Kills the processes (other than this one) that hold one of `pipes` (as
/// `/proc/self/fd` names them, `pipe:[inode]`) open. The pipes were made for one
/// evaluation, so only its descendants can hold them.
fn kill_pipe_holders(pipes: &[String]) {
    if pipes.is_empty() {
        return;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|link| pipes.iter().any(|p| link.as_os_str() == p.as_str()))
        });
        if holds && let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) on one pid that holds this evaluation's private pipe.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn read_capped(pipe: impl Read) -> String {
    let mut buffer = Vec::new();
    let _ = pipe.take(MAX_OUTPUT_BYTES as u64).read_to_end(&mut buffer);
    String::from_utf8_lossy(&buffer).into_owned()
}

fn failure(source: &SourceFile, absolute: &std::path::Path, error: JsError) -> LoadError {
    let location = stack_location(&error.stack, &absolute.to_string_lossy());
    let message = match error.code.as_deref() {
        Some("MODULE_NOT_FOUND" | "ERR_MODULE_NOT_FOUND") => {
            let first = error.message.lines().next().unwrap_or(&error.message);
            format!("{first}; install the project's dependencies (npm ci) before linting, or avoid require() in the ecosystem file")
        }
        _ => format!("{}: {}", error.name, error.message.lines().next().unwrap_or(&error.message)),
    };
    LoadError::JsFailed { path: source.path.clone(), location, message }
}

/// Finds `file:line[:column]` of the evaluated file in a Node stack trace (the first
/// mention that carries a position: "Require stack" lists the file without one).
fn stack_location(stack: &str, file: &str) -> Option<Location> {
    stack.match_indices(file).find_map(|(start, _)| {
        let rest = stack[start + file.len()..].strip_prefix(':')?;
        let mut numbers = rest.split(|c: char| !c.is_ascii_digit());
        let line = numbers.next()?.parse().ok()?;
        let column = rest
            .split_once(':')
            .and_then(|(_, c)| c.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(1);
        Some(Location { line, column })
    })
}

/// Best-effort positions for an evaluated document: each key is searched for in the
/// source after its parent's position; each app after the previous one, by its name.
fn locate(source: &SourceFile, document: &Value) -> SourceMap {
    let mut map = SourceMap::default();
    walk(source, document, String::new(), 0, &mut map);
    map
}

fn walk(source: &SourceFile, value: &Value, pointer: String, from: usize, map: &mut SourceMap) {
    map.insert_value(pointer.clone(), source.location(from));
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let child_pointer = format!("{pointer}/{}", pointer_segment(key));
                match find_key(&source.text, key, from) {
                    Some(at) => {
                        map.insert_key(child_pointer.clone(), source.location(at));
                        walk(source, child, child_pointer, at, map);
                    }
                    None => walk(source, child, child_pointer, from, map),
                }
            }
        }
        Value::Array(items) => {
            let mut cursor = from;
            for (i, item) in items.iter().enumerate() {
                let start = item
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|name| find_literal(&source.text, name, cursor))
                    .and_then(|name_at| source.text[..name_at].rfind('{'))
                    .filter(|&brace| brace >= cursor)
                    .unwrap_or(cursor);
                walk(source, item, format!("{pointer}/{i}"), start, map);
                cursor = start + 1;
            }
        }
        _ => {}
    }
}

/// Offset of `key` written as an object key (`key:`, `'key':`, `"key":`) at or after `from`.
fn find_key(text: &str, key: &str, from: usize) -> Option<usize> {
    let mut search = from;
    while let Some(found) = text.get(search..)?.find(key) {
        let at = search + found;
        let before = text[..at].chars().next_back();
        let after = &text[at + key.len()..];
        let (quoted_start, rest) = match before {
            Some(q @ ('"' | '\'')) => (at - 1, after.strip_prefix(q)),
            _ => (at, Some(after)),
        };
        let boundary = !matches!(text[..quoted_start].chars().next_back(), Some(c) if c.is_alphanumeric() || c == '_' || c == '$');
        if boundary && rest.is_some_and(|r| r.trim_start().starts_with(':')) {
            return Some(quoted_start);
        }
        search = at + key.len();
    }
    None
}

fn find_literal(text: &str, value: &str, from: usize) -> Option<usize> {
    ['\'', '"', '`'].iter().filter_map(|q| text.get(from..)?.find(&format!("{q}{value}{q}")).map(|i| from + i)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_order_after_their_parent() {
        let text = "module.exports = {\n  apps: [\n    { name: 'a', min_uptime: 1 },\n    {\n      'name': \"b\",\n      min_uptime: 2,\n    },\n  ],\n};\n";
        let source = SourceFile::new("eco.js", text);
        let document = serde_json::json!({"apps": [{"name": "a", "min_uptime": 1}, {"name": "b", "min_uptime": 2}]});
        let map = locate(&source, &document);
        assert_eq!(map.locate("/apps/0/min_uptime"), Some(Location { line: 3, column: 18 }));
        assert_eq!(map.locate("/apps/1/min_uptime"), Some(Location { line: 6, column: 7 }));
        assert_eq!(map.locate("/apps/1/name"), Some(Location { line: 5, column: 7 }));
    }

    #[test]
    fn stack_locations_are_read() {
        let stack = "ReferenceError: x is not defined\n    at Object.<anonymous> (/p/eco.js:5:14)\n";
        assert_eq!(stack_location(stack, "/p/eco.js"), Some(Location { line: 5, column: 14 }));
        assert_eq!(stack_location("/p/eco.js:7\n  bad\n", "/p/eco.js"), Some(Location { line: 7, column: 1 }));
        let missing = "Error: Cannot find module 'x'\nRequire stack:\n- /p/eco.js\n    at Object.<anonymous> (/p/eco.js:1:16)";
        assert_eq!(stack_location(missing, "/p/eco.js"), Some(Location { line: 1, column: 16 }));
    }
}
