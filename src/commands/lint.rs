//! `reconcile lint`: load the ecosystem files, run every check, report.

use std::path::PathBuf;

use anyhow::Result;

use super::{load_options, open_project, print, require_format};
use crate::ExitStatus;
use crate::cli::{Format, GlobalArgs, LintArgs};
use crate::config::{EcosystemFile, SourceFile};
use crate::config::project::PoliciesSection;
use crate::render::diagnostics::{self, Summary};
use crate::validate::{self, Context, Registry, Severity};

/// Runs `lint`.
pub fn run(global: &GlobalArgs, args: &LintArgs) -> Result<ExitStatus> {
    require_format("lint", global.format, &[Format::Human, Format::Json, Format::Sarif, Format::Github])?;
    let project = open_project(global)?;
    let default_policies = PoliciesSection::default();
    let (policies, root) = match &project {
        Some(p) => (&p.settings.policies, p.root.clone()),
        None => (&default_policies, PathBuf::from(".")),
    };
    let registry = Registry::load(policies, &root)?;
    if let Some(id) = &args.explain {
        let Some(rule) = registry.rules.iter().find(|r| r.id() == id) else {
            let known: Vec<&str> = registry.rules.iter().map(crate::validate::Rule::id).collect();
            anyhow::bail!("no rule `{id}`; the rules are: {} (`reconcile lint --list-rules` describes them)", known.join(", "));
        };
        print(&diagnostics::explain(rule))?;
        return Ok(ExitStatus::Success);
    }
    if args.list_rules {
        print(&diagnostics::rules_table(&registry))?;
        return Ok(ExitStatus::Success);
    }
    let files: Vec<PathBuf> = if args.files.is_empty() {
        project.as_ref().map(|p| p.ecosystem_paths()).unwrap_or_default()
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        anyhow::bail!(
            "no ecosystem files to lint: name them (`reconcile lint ecosystem.config.js`), or list them under [project] ecosystem in reconcile.toml"
        );
    }
    let mut options = load_options(global, project.as_ref());
    // Files named on the command line are the operator's choice, wherever they are.
    options.confine &= args.files.is_empty();
    let mut loaded = Vec::new();
    let mut findings = Vec::new();
    let mut unloaded_sources = Vec::new();
    for path in &files {
        match EcosystemFile::load(path, &options) {
            Ok(file) => loaded.push(file),
            Err(error) => {
                if error.location().is_some()
                    && let Ok(text) =
                        crate::config::read::read_text(path, options.scope.as_deref(), crate::config::ecosystem::MAX_FILE_BYTES)
                {
                        unloaded_sources.push(SourceFile::new(path, text));
                    }
                findings.push(validate::load_error(&error));
            }
        }
    }
    let env = args.env.as_deref().or_else(|| project.as_ref().and_then(|p| p.settings.project.env.as_deref()));
    let owned = project.as_ref().map(|p| p.settings.project.namespaces.as_slice());
    let (apps, checked) = validate::run(&loaded, Context { registry: &registry, env, owned });
    findings.extend(checked);
    if let Some(project) = &project {
        findings.extend(validate::project_findings(&registry, project));
    }
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let summary = Summary::new(files.len(), apps.iter().map(|f| f.apps.len()).sum(), &findings);
    let sources: Vec<_> = loaded.iter().map(|f| &f.source).chain(&unloaded_sources).collect();
    let text = match global.format {
        Format::Json => diagnostics::json(&findings, summary),
        Format::Sarif => diagnostics::sarif(&findings, &registry, &diagnostics::SourceRoot::discover()),
        Format::Github => diagnostics::github(&findings, &diagnostics::SourceRoot::discover()),
        _ => diagnostics::human(&findings, &sources, summary),
    };
    print(&text)?;
    let failed = findings.iter().any(|d| d.severity == Severity::Error);
    Ok(if failed { ExitStatus::Error } else { ExitStatus::Success })
}
