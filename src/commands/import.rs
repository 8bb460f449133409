//! `reconcile import`: read the live state, write it back as an ecosystem file and a
//! `reconcile.toml`. Glue only; the conversion is `crate::import`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{live_source, open_project, print, require_format};
use crate::ExitStatus;
use crate::cli::{Format, GlobalArgs, ImportArgs, ImportFormat};
use crate::import::{self, NoteAt, NoteKind, check, emit};
use crate::live::{self, LiveSource};
use crate::redact::Redactor;
use crate::render::style;

/// What `import` did, for `--format json` (and the human summary).
#[derive(Debug, Serialize)]
struct Report {
    ecosystem: PathBuf,
    project: PathBuf,
    namespaces: Vec<String>,
    apps: Vec<String>,
    /// `app env KEY` for every secret written as it is.
    secrets: Vec<String>,
    /// Rules graded as warnings in reconcile.toml because the apps break them today.
    downgraded_rules: Vec<String>,
    warnings: Vec<String>,
}

/// Runs `import`.
pub fn run(global: &GlobalArgs, args: &ImportArgs) -> Result<ExitStatus> {
    require_format("import", global.format, &[Format::Human, Format::Json])?;
    let mut namespaces: Vec<String> = Vec::new();
    for namespace in args.namespace.iter().map(|n| n.trim()) {
        anyhow::ensure!(!namespace.is_empty(), "--namespace is empty; name the PM2 namespaces to import");
        if !namespaces.iter().any(|n| n == namespace) {
            namespaces.push(namespace.to_string());
        }
    }
    let file_name = match args.file_format {
        ImportFormat::Yaml => "ecosystem.config.yaml",
        ImportFormat::Json => "ecosystem.config.json",
        ImportFormat::Js => "ecosystem.config.cjs",
    };
    let ecosystem_path = args.out.join(file_name);
    let project_path = args.out.join(crate::config::project::FILE_NAME);
    if !args.force {
        for path in [&ecosystem_path, &project_path] {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; import never overwrites a file: pick another --out DIR, or pass --force to replace it",
                    path.display()
                );
            }
        }
    }

    // An existing reconcile.toml here still says where the daemon is and what is secret.
    let project = open_project(global)?;
    let settings = project.as_ref().map(|p| p.settings.clone()).unwrap_or_default();
    let source = live_source(global, project.as_ref())?;
    let state = live::read(&source, Duration::from_millis(settings.pm2.timeout_ms))?;
    let redactor = Redactor::new(&settings.secrets.patterns);
    let apps = import::from_live(&state, &namespaces, &redactor)?;
    let document = import::document(&apps);
    let broken = check::broken_rules(&document, &ecosystem_path, &namespaces)
        .context("import wrote a file its own checks refuse; please report this")?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let out_dir = std::path::absolute(&args.out).with_context(|| format!("resolving {}", args.out.display()))?;
    let mut warnings = Vec::new();
    let unclean = check::unclean(&document, &out_dir, &state, &namespaces, &redactor);
    for app in &unclean {
        warnings.push(format!(
            "`{}` will not plan clean ({}: {}); the file cannot say this, so plan shows it",
            app.app,
            app.action.as_str(),
            app.paths.join(", ")
        ));
    }
    let secrets: Vec<String> = apps
        .iter()
        .flat_map(|app| {
            app.notes.iter().filter(|n| n.kind == NoteKind::Secret).filter_map(move |n| match &n.at {
                NoteAt::Env(key) => Some(format!("{} env {key}", app.name)),
                _ => None,
            })
        })
        .collect();
    if args.file_format == ImportFormat::Json {
        // JSON has no comments: what YAML and JavaScript say next to the value is said here.
        for app in &apps {
            for note in &app.notes {
                warnings.push(format!("{file_name}: `{}`: {}", app.name, note.text));
            }
        }
    }

    let command = format!("reconcile import --namespace {}", namespaces.join(","));
    let header = emit::header(&command, &import::origin_text(&state), !secrets.is_empty(), unclean.is_empty());
    let ecosystem_text = match args.file_format {
        ImportFormat::Yaml => emit::yaml(&header, &apps),
        ImportFormat::Json => emit::json(&apps),
        ImportFormat::Js => emit::js(&header, &apps),
    };
    let name = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .map_or_else(|| namespaces[0].clone(), str::to_string);
    let home = pm2_home_setting(&source);
    let project_text = emit::project(&emit::ProjectFile {
        header: &header,
        name: &name,
        ecosystem: file_name,
        namespaces: &namespaces,
        pm2_home: home.as_deref(),
        broken: &broken,
    });
    write_new(&ecosystem_path, &ecosystem_text, args.force)?;
    if let Err(err) = write_new(&project_path, &project_text, args.force) {
        // Never leave half an import behind.
        let _ = std::fs::remove_file(&ecosystem_path);
        return Err(err);
    }

    // The imported processes are adopted: prune may delete them once they leave the
    // desired state (see `apply::adopted`); nothing else unstamped ever is.
    let ledger = crate::apply::adopted::ledger_path(&out_dir.join(crate::apply::journal::DEFAULT_PATH));
    let imported: std::collections::BTreeSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    let adopting = state
        .processes
        .iter()
        .filter(|p| namespaces.contains(&p.namespace) && imported.contains(p.name.as_str()))
        .map(|p| crate::apply::adopted::Adopted { namespace: p.namespace.clone(), name: p.name.clone(), pm_id: p.pm_id });
    crate::apply::adopted::record(&ledger, adopting, &state)?;

    let clean = unclean.is_empty();
    let report = Report {
        ecosystem: ecosystem_path,
        project: project_path,
        namespaces,
        apps: apps.iter().map(|a| a.name.clone()).collect(),
        secrets,
        downgraded_rules: broken.iter().map(|b| b.rule.clone()).collect(),
        warnings,
    };
    print_warnings(&report.warnings)?;
    match global.format {
        Format::Json => print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?,
        _ => print(&human(&report, clean))?,
    }
    Ok(ExitStatus::Success)
}

/// `[pm2] home` for the new reconcile.toml: the daemon's home, unless it is the
/// default `~/.pm2` (then the file stays portable between users).
fn pm2_home_setting(source: &LiveSource) -> Option<String> {
    let LiveSource::Daemon(home) = source else { return None };
    let default = std::env::var_os("HOME").map(|h| Path::new(&h).join(".pm2"));
    (default.as_deref() != Some(home.dir.as_path())).then(|| home.dir.display().to_string())
}

fn write_new(path: &Path, text: &str, force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn print_warnings(warnings: &[String]) -> Result<()> {
    let mut stderr = anstream::stderr().lock();
    for warning in warnings {
        writeln!(stderr, "{}warning:{} {}", style::WARNING, style::WARNING.render_reset(), crate::redact::scrub(warning))?;
    }
    Ok(())
}

fn human(report: &Report, clean: bool) -> String {
    let mut out = format!(
        "Imported {} app{} from {}: {}\n  wrote {}\n  wrote {}\n",
        report.apps.len(),
        if report.apps.len() == 1 { "" } else { "s" },
        report.namespaces.join(", "),
        report.apps.join(", "),
        report.ecosystem.display(),
        report.project.display(),
    );
    if !report.secrets.is_empty() {
        out.push_str(&format!(
            "  {} secret value{} written as {} (flagged): {}\n",
            report.secrets.len(),
            if report.secrets.len() == 1 { "" } else { "s" },
            if report.secrets.len() == 1 { "it is" } else { "they are" },
            report.secrets.join("; ")
        ));
    }
    if !report.downgraded_rules.is_empty() {
        out.push_str(&format!(
            "  rules the apps break today, graded as warnings in reconcile.toml: {}\n",
            report.downgraded_rules.join(", ")
        ));
    }
    out.push_str(if clean {
        "Next: `reconcile plan` (it shows no changes), then commit both files.\n"
    } else {
        "Next: `reconcile plan` shows the changes warned about above; review them before you commit both files.\n"
    });
    out
}
