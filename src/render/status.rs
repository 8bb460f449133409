//! `reconcile status` output: a table for people, the JSON contract for machines.
//!
//! JSON (DESIGN.md, Contracts): `{"processes": [{"pm_id", "name", "namespace",
//! "status", "pid", "restarts", "uptime_ms", "owned", ...}], "warnings": [...],
//! "summary": {...}, "source": {...}, "daemon": {...}}`.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use super::style;
use crate::apply::dump::DumpCheck;
use crate::cli::{ColorChoice, Format};
use crate::live::ProcessStatus;
use crate::live::health::{StatusReport, StatusRow};

/// The JSON document: the report, and the dump comparison when there is one.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    report: &'a StatusReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    dump: Option<&'a DumpCheck>,
}

/// Writes the report to stdout (and, for people, warnings to stderr). `dump`: how
/// the owned apps compare with PM2's dump, when it was compared.
pub fn write(report: &StatusReport, dump: Option<&DumpCheck>, format: Format, color: ColorChoice) -> io::Result<()> {
    let choice = match color {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    // Rendered in memory and written once: stdout is line-buffered, and pretty JSON
    // for 100 apps is ~1,500 lines (as many syscalls).
    let mut out = anstream::AutoStream::new(io::stdout().lock(), choice);
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&Document { report, dump })?;
            text.push('\n');
            out.write_all(crate::redact::scrub(&text).as_bytes())?;
            out.flush()
        }
        _ => {
            let mut text = human(report);
            if let Some(dump) = dump {
                text.push_str(&human_dump(dump));
            }
            out.write_all(crate::redact::scrub(&text).as_bytes())?;
            out.flush()?;
            let mut err = anstream::AutoStream::new(io::stderr().lock(), choice);
            err.write_all(crate::redact::scrub(&human_warnings(report)).as_bytes())
        }
    }
}

/// The table: owned processes, then ignored ones, then a count line.
pub fn human(report: &StatusReport) -> String {
    let mut s = String::new();
    let (owned, ignored): (Vec<&StatusRow>, Vec<&StatusRow>) = report.processes.iter().partition(|r| r.owned);
    if report.processes.is_empty() {
        s.push_str("no processes\n");
    }
    if !owned.is_empty() {
        s.push_str(&format!("{}owned{}\n", style::BOLD, style::BOLD.render_reset()));
        table(&mut s, &owned);
    }
    if !ignored.is_empty() {
        let why = if report.has_project { "not in an owned namespace" } else { "no reconcile.toml, so nothing is owned" };
        s.push_str(&format!("{}ignored{} ({why})\n", style::BOLD, style::BOLD.render_reset()));
        table(&mut s, &ignored);
    }
    let sum = &report.summary;
    let daemon = report.daemon.as_ref().map(|d| format!(" (PM2 {})", d.version)).unwrap_or_default();
    s.push_str(&format!(
        "{} process{}: {} owned, {} ignored, {} online, {} warning{}{daemon}\n",
        sum.total,
        if sum.total == 1 { "" } else { "es" },
        sum.owned,
        sum.ignored,
        sum.online,
        sum.warnings,
        if sum.warnings == 1 { "" } else { "s" }
    ));
    s
}

/// The dump line: current, or which owned apps a reboot would not bring back as they run.
pub fn human_dump(dump: &DumpCheck) -> String {
    let path = dump.path.display();
    if let Some(error) = &dump.error {
        let w = style::WARNING;
        return format!("{w}dump{w:#}: cannot compare with PM2's dump: {error}\n");
    }
    if dump.unsaved.is_empty() {
        return match dump.state {
            "absent" => format!("dump: PM2 has no dump ({path}); no owned app runs\n"),
            _ => format!("dump: every owned app is saved in {path}\n"),
        };
    }
    let w = style::WARNING;
    let mut s = format!(
        "{w}unsaved{w:#}: {} owned app(s) differ from PM2's dump {path} (what `pm2 resurrect` brings back at boot); `reconcile apply` saves them\n",
        dump.unsaved.len()
    );
    for u in &dump.unsaved {
        let ids = if u.pm_ids.is_empty() { String::new() } else { format!(" (pm_id {})", u.pm_ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) };
        s.push_str(&format!("  {}{ids}, namespace {}: {}\n", u.name, u.namespace, u.detail));
    }
    s
}

/// One line per warning, compiler-style.
pub fn human_warnings(report: &StatusReport) -> String {
    report
        .warnings
        .iter()
        .map(|w| {
            let owner = if w.owned { "" } else { " (ignored)" };
            format!(
                "{}warning{}: `{}` (pm_id {}, namespace {}){owner} {}\n",
                style::WARNING,
                style::WARNING.render_reset(),
                w.name,
                w.pm_id,
                w.namespace,
                w.message
            )
        })
        .collect()
}

fn table(s: &mut String, rows: &[&StatusRow]) {
    let header = ["ID", "NAME", "NAMESPACE", "MODE", "STATUS", "PID", "RESTARTS", "UPTIME"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.pm_id.to_string(),
                r.name.clone(),
                r.namespace.clone(),
                r.exec_mode.as_str().to_string(),
                r.status.as_str().to_string(),
                r.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                r.restarts.to_string(),
                r.uptime_ms.map_or_else(|| "-".into(), duration),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |s: &mut String, row: &[String], status_style: Style| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            s.push_str("  ");
            if i == 4 {
                s.push_str(&format!("{status_style}{c}{}", status_style.render_reset()));
            } else {
                s.push_str(c);
            }
            if i + 1 < row.len() {
                s.push_str(&" ".repeat(pad));
            }
        }
        s.push('\n');
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    line(s, &head, Style::new());
    for (row, r) in cells.iter().zip(rows) {
        line(s, row, status_style(&r.status));
    }
}

fn status_style(status: &ProcessStatus) -> Style {
    match status {
        ProcessStatus::Online => AnsiColor::Green.on_default(),
        ProcessStatus::Errored => AnsiColor::Red.on_default().bold(),
        ProcessStatus::Stopped | ProcessStatus::Stopping | ProcessStatus::WaitingRestart => AnsiColor::Yellow.on_default(),
        _ => Style::new(),
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(61_000), "1m 1s");
        assert_eq!(duration(3_660_000), "1h 1m");
        assert_eq!(duration(90_000_000), "1d 1h");
    }
}
