//! The revision of each app's code: desired state like its spec, stamped on the
//! processes `apply` starts or restarts, compared by `plan` (attribute `revision`).
//!
//! `git` (the default): the content of the git work tree that holds the app's script
//! (else its `cwd`), read through libgit2, committed and uncommitted changes alike,
//! less the project's own desired-state files (ecosystem files, `reconcile.toml`,
//! policy files, the journal) and what PM2 writes (untracked `*.log`/`*.pid`, the
//! apps' log and pid files). The revision is a git tree id: HEAD's tree with every
//! dirty file (from one status scan) put in at its working-tree content and every
//! excluded path taken out, computed in memory (only the trees on those paths are
//! hashed again; nothing is written to the repository). So a commit that changes no
//! content, or a revert to an earlier tree, gives the same revision, and committing
//! an uncommitted change does not change it. `paths` narrows it to some files or
//! directories (then it is a digest of their ids).
//!
//! `files`: a digest of the contents of the files matched by globs, for hosts
//! deployed without git. `off`: no revision.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Status, StatusOptions};
use sha2::{Digest, Sha256};

use super::DesiredApp;
use crate::config::Project;
use crate::config::project::{RevisionMode, RevisionSection};

/// Files PM2 or `reconcile` write that never count as code (`files` mode).
const BUILTIN_IGNORES: &[&str] = &["**/*.log", "**/*.pid", "**/.git/**", ".reconcile/**", "**/node_modules/.cache/**"];

/// How many hex digits of a revision the plan shows (like a short commit id).
pub const SHORT: usize = 12;

/// A revision shortened for display.
pub fn short(revision: &str) -> &str {
    revision.get(..SHORT).unwrap_or(revision)
}

/// Where revisions are read.
#[derive(Debug, Clone, Copy)]
pub enum At<'a> {
    /// The working tree: committed and uncommitted content.
    WorkTree,
    /// A git ref (`plan --base`): its committed tree. `files` mode has no revision there.
    Ref(&'a str),
}

/// Why a revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("reading the code revision of `{app}` from the git repository at {repo}: {message}")]
    Git { app: String, repo: PathBuf, message: String },
    #[error("[revision] paths of `{app}`: {path} is outside the git work tree {repo}; list paths inside it (relative to reconcile.toml)")]
    Outside { app: String, path: PathBuf, repo: PathBuf },
    #[error("[revision] mode = \"git\" for `{app}`, but neither its script nor its cwd is in a git work tree; set mode = \"files\" (with `files` globs) or \"off\" for it in reconcile.toml")]
    NoRepository { app: String },
    #[error("reading the code revision of `{app}` (mode = \"files\"): {path}: {source}")]
    Files {
        app: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[revision]: bad glob: {0}")]
    Glob(String),
}

/// One app's effective `[revision]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    mode: RevisionMode,
    /// `mode` was written (not the default): no repository is then an error.
    explicit: bool,
    paths: Vec<PathBuf>,
    files: Vec<String>,
    ignore: Vec<String>,
}

fn scope_of(section: &RevisionSection, app: &str, root: &Path) -> Scope {
    let own = section.apps.get(app);
    let written = own.and_then(|a| a.mode).or(section.mode);
    let mode = written.unwrap_or_default();
    let paths = own.and_then(|a| a.paths.clone()).or_else(|| section.paths.clone()).unwrap_or_default();
    Scope {
        mode,
        explicit: written.is_some(),
        paths: paths.iter().map(|p| crate::desired::spec::normalize(&root.join(p))).collect(),
        files: own.and_then(|a| a.files.clone()).or_else(|| section.files.clone()).unwrap_or_default(),
        ignore: own.and_then(|a| a.ignore.clone()).or_else(|| section.ignore.clone()).unwrap_or_default(),
    }
}

/// A computed revision, and when the code it covers last changed on disk (ms since
/// the epoch; for processes started before revisions were stamped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub id: String,
    pub newest_ms: Option<i64>,
}

/// Sets `revision` and `code_changed_ms` of every app, per its `[revision]` settings.
pub fn assign(apps: &mut [DesiredApp], project: &Project, at: At<'_>) -> Result<(), RevisionError> {
    let root = std::path::absolute(&project.root).unwrap_or_else(|_| project.root.clone());
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let excluded = excluded_paths(project, &root, apps);
    // Pull mode: the project lies in a checkout of the fleet's repository (its `scope`),
    // which holds desired state, every host's, not code. An app whose work tree is that
    // checkout has no code revision unless `[revision]` says otherwise, or every push for
    // one host would roll out every host's apps.
    let pull_checkout = std::fs::canonicalize(&project.scope).ok().filter(|scope| *scope != root);
    // One view per repository and scanned paths (empty: the whole work tree).
    let mut repos: HashMap<(PathBuf, Vec<PathBuf>), GitView> = HashMap::new();
    let mut done: HashMap<(Option<PathBuf>, Scope), Option<Computed>> = HashMap::new();
    for app in apps.iter_mut() {
        let scope = scope_of(&project.settings.revision, &app.name, &root);
        let computed = match scope.mode {
            RevisionMode::Off => None,
            RevisionMode::Files => match at {
                At::Ref(_) => None,
                At::WorkTree => {
                    let key = (None, scope.clone());
                    if let Some(found) = done.get(&key) {
                        found.clone()
                    } else {
                        let found = Some(files_revision(&app.name, &root, &scope, &excluded)?);
                        done.insert(key, found.clone());
                        found
                    }
                }
            },
            RevisionMode::Git => {
                let Some(workdir) = repo_of(app) else {
                    // The default on a host deployed without git: no revision (README).
                    if scope.explicit {
                        return Err(RevisionError::NoRepository { app: app.name.clone() });
                    }
                    tracing::debug!(app = %app.name, "not in a git work tree: no code revision");
                    app.revision = None;
                    app.code_changed_ms = None;
                    continue;
                };
                if !scope.explicit && scope.paths.is_empty() && pull_checkout.is_some() && std::fs::canonicalize(&workdir).ok() == pull_checkout {
                    tracing::debug!(app = %app.name, "in the pull checkout (desired state, not code): no code revision");
                    app.revision = None;
                    app.code_changed_ms = None;
                    continue;
                }
                let git_err = |e: git2::Error| RevisionError::Git { app: app.name.clone(), repo: workdir.clone(), message: e.message().to_string() };
                let key = (Some(workdir.clone()), scope.clone());
                if let Some(found) = done.get(&key) {
                    found.clone()
                } else {
                    let mut relative = Vec::new();
                    for path in &scope.paths {
                        match path.strip_prefix(&workdir) {
                            Ok(rel) => relative.push(rel.to_path_buf()),
                            Err(_) => return Err(RevisionError::Outside { app: app.name.clone(), path: path.clone(), repo: workdir.clone() }),
                        }
                    }
                    // A narrowed revision scans only its paths, unless the whole tree
                    // was scanned already for another app.
                    let whole = (workdir.clone(), Vec::new());
                    let view_key = if repos.contains_key(&whole) { whole } else { (workdir.clone(), relative.clone()) };
                    if !repos.contains_key(&view_key) {
                        let view = GitView::open(&workdir, at, &excluded, &view_key.1).map_err(git_err)?;
                        repos.insert(view_key.clone(), view);
                    }
                    let found = Some(repos[&view_key].revision(&relative).map_err(git_err)?);
                    done.insert(key, found.clone());
                    found
                }
            }
        };
        app.revision = computed.as_ref().map(|c| c.id.clone());
        app.code_changed_ms = computed.and_then(|c| c.newest_ms);
    }
    Ok(())
}

/// The work tree holding the app's script, else its cwd (a command like `sleep` or
/// `npm run start` lives outside the repository; its code is where it runs).
fn repo_of(app: &DesiredApp) -> Option<PathBuf> {
    let dirs = [app.script.parent().map(Path::to_path_buf), Some(app.cwd.clone())];
    dirs.into_iter().flatten().find_map(|dir| {
        let repo = Repository::discover(&dir).ok()?;
        let workdir = repo.workdir()?.to_path_buf();
        Some(std::fs::canonicalize(&workdir).unwrap_or(workdir))
    })
}

/// The project's own desired-state files and what PM2 writes for its apps: never code.
fn excluded_paths(project: &Project, root: &Path, apps: &[DesiredApp]) -> Vec<PathBuf> {
    let settings = &project.settings;
    let mut out: Vec<PathBuf> = vec![root.join(crate::config::project::FILE_NAME), root.join(".reconcile")];
    if let Some(name) = project.path.file_name() {
        out.push(root.join(name));
    }
    out.extend(settings.project.ecosystem.iter().map(|p| root.join(p)));
    out.extend(settings.policies.paths.iter().map(|p| root.join(p)));
    if let Some(journal) = &settings.journal.path {
        out.push(root.join(journal));
    }
    for app in apps {
        out.extend([&app.out_file, &app.error_file, &app.log_file, &app.pid_file].into_iter().flatten().cloned());
    }
    let mut out: Vec<PathBuf> = out.iter().map(|p| crate::desired::spec::normalize(p)).collect();
    out.sort();
    out.dedup();
    out
}

/// One repository, read once: HEAD's (or a ref's) tree, and the working-tree content
/// of every dirty path, as overrides of that tree.
struct GitView {
    repo: Repository,
    workdir: PathBuf,
    tree: Option<Oid>,
    /// Path (relative, `/`-separated) → its content now (`None`: gone or excluded).
    overrides: BTreeMap<PathBuf, Option<(i32, Oid)>>,
    /// Newest modification time of the tracked files, per path, from the index (ms).
    index_mtimes: Vec<(PathBuf, i64)>,
    /// Whether excluded paths must be filtered (relative to the work tree).
    excluded: Vec<PathBuf>,
}

impl GitView {
    /// `pathspec`: scan only these paths (relative, literal prefixes); empty: all.
    fn open(workdir: &Path, at: At<'_>, excluded: &[PathBuf], pathspec: &[PathBuf]) -> Result<Self, git2::Error> {
        let repo = Repository::open(workdir)?;
        let excluded: Vec<PathBuf> = excluded.iter().filter_map(|p| p.strip_prefix(workdir).ok().map(Path::to_path_buf)).collect();
        let is_excluded = |path: &Path| excluded.iter().any(|e| path.starts_with(e));
        let tree = match at {
            At::WorkTree => match repo.head() {
                Ok(head) => Some(head.peel_to_tree()?.id()),
                Err(e) if e.code() == git2::ErrorCode::UnbornBranch || e.code() == git2::ErrorCode::NotFound => None,
                Err(e) => return Err(e),
            },
            At::Ref(reference) => Some(repo.revparse_single(reference)?.peel_to_tree()?.id()),
        };
        let mut overrides = BTreeMap::new();
        let mut index_mtimes = Vec::new();
        if let At::WorkTree = at {
            let mut options = StatusOptions::new();
            options.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false).exclude_submodules(true);
            if !pathspec.is_empty() {
                options.disable_pathspec_match(true);
                for path in pathspec {
                    options.pathspec(path);
                }
            }
            let in_scope = |path: &Path| pathspec.is_empty() || pathspec.iter().any(|p| path.starts_with(p));
            for entry in repo.statuses(Some(&mut options))?.iter() {
                let Some(path) = entry.path() else { continue };
                let path = PathBuf::from(path);
                let untracked = entry.status().contains(Status::WT_NEW) && !entry.status().intersects(Status::INDEX_NEW | Status::INDEX_MODIFIED);
                let pm2_written = untracked && path.extension().is_some_and(|e| e == "log" || e == "pid");
                if is_excluded(&path) || pm2_written {
                    continue;
                }
                let content = workdir_content(&workdir.join(&path))?;
                overrides.insert(path, content);
            }
            for entry in repo.index()?.iter() {
                let path = PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned());
                if !is_excluded(&path) && in_scope(&path) {
                    index_mtimes.push((path, i64::from(entry.mtime.seconds()) * 1000 + i64::from(entry.mtime.nanoseconds() / 1_000_000)));
                }
            }
        }
        for path in &excluded {
            overrides.insert(path.clone(), None);
        }
        Ok(Self { repo, workdir: workdir.to_path_buf(), tree, overrides, index_mtimes, excluded })
    }

    /// The revision of the whole tree (`paths` empty) or of some paths in it.
    fn revision(&self, paths: &[PathBuf]) -> Result<Computed, git2::Error> {
        let id = if paths.is_empty() {
            let root = self.tree.map(|t| (0o040_000, t));
            self.effective(root, Path::new(""))?.map_or_else(|| "0".repeat(40), |(_, oid)| oid.to_string())
        } else {
            let mut digest = Sha256::new();
            for path in paths {
                let base = match self.tree {
                    Some(tree) => match self.repo.find_tree(tree)?.get_path(path) {
                        Ok(entry) => Some((entry.filemode(), entry.id())),
                        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                let effective = self.effective(base, path)?;
                digest.update(path.to_string_lossy().as_bytes());
                digest.update(b"\0");
                digest.update(effective.map_or_else(|| "-".to_string(), |(_, oid)| oid.to_string()).as_bytes());
                digest.update(b"\n");
            }
            digest.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
        };
        let within = |p: &Path| paths.is_empty() || paths.iter().any(|s| p.starts_with(s));
        let tracked = self.index_mtimes.iter().filter(|(p, _)| within(p)).map(|(_, ms)| *ms).max();
        let dirty = self
            .overrides
            .iter()
            .filter(|(p, c)| c.is_some() && within(p) && !self.excluded.iter().any(|e| p.starts_with(e)))
            .filter_map(|(p, _)| mtime_ms(&self.workdir.join(p)))
            .max();
        Ok(Computed { id, newest_ms: tracked.max(dirty) })
    }

    /// The entry at `prefix` (mode, id) with every override under it applied: the id
    /// git would give it if the work tree were committed as it is.
    fn effective(&self, base: Option<(i32, Oid)>, prefix: &Path) -> Result<Option<(i32, Oid)>, git2::Error> {
        if let Some(exact) = self.overrides.get(prefix) {
            return Ok(*exact);
        }
        let under: Vec<&PathBuf> =
            self.overrides.range(prefix.to_path_buf()..).map(|(p, _)| p).take_while(|p| p.starts_with(prefix)).filter(|p| *p != prefix).collect();
        if under.is_empty() {
            return Ok(base);
        }
        // name → (mode, id), with git's tree order applied when serializing.
        let mut entries: BTreeMap<Vec<u8>, (i32, Oid)> = BTreeMap::new();
        if let Some((mode, oid)) = base
            && mode == 0o040_000
        {
            for entry in self.repo.find_tree(oid)?.iter() {
                entries.insert(entry.name_bytes().to_vec(), (entry.filemode(), entry.id()));
            }
        }
        let mut children: Vec<&std::ffi::OsStr> = under
            .iter()
            .filter_map(|p| p.strip_prefix(prefix).ok()?.components().next().map(|c| c.as_os_str()))
            .collect();
        children.dedup();
        for child in children {
            let name = child.as_encoded_bytes().to_vec();
            let child_base = entries.get(&name).copied();
            match self.effective(child_base, &prefix.join(child))? {
                Some(value) => entries.insert(name, value),
                None => entries.remove(&name),
            };
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some((0o040_000, tree_id(&entries)?)))
    }
}

/// The git id of a tree with these entries (serialized in git's order: by name, a
/// directory compared as if its name ended in `/`).
fn tree_id(entries: &BTreeMap<Vec<u8>, (i32, Oid)>) -> Result<Oid, git2::Error> {
    let key = |name: &[u8], mode: i32| {
        let mut k = name.to_vec();
        if mode == 0o040_000 {
            k.push(b'/');
        }
        k
    };
    let mut sorted: Vec<(&Vec<u8>, &(i32, Oid))> = entries.iter().collect();
    sorted.sort_by_key(|(name, (mode, _))| key(name, *mode));
    let mut bytes = Vec::with_capacity(sorted.len() * 40);
    for (name, (mode, oid)) in sorted {
        bytes.extend_from_slice(format!("{mode:o} ").as_bytes());
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(oid.as_bytes());
    }
    Oid::hash_object(ObjectType::Tree, &bytes)
}

/// A work-tree path as git would store it: mode and blob id; `None` when it is gone.
fn workdir_content(path: &Path) -> Result<Option<(i32, Oid)>, git2::Error> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(None) };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        return Ok(Some((0o120_000, Oid::hash_object(ObjectType::Blob, target.as_os_str().as_encoded_bytes())?)));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let mode = if meta.permissions().mode() & 0o111 != 0 { 0o100_755 } else { 0o100_644 };
    Ok(Some((mode, Oid::hash_file(ObjectType::Blob, path)?)))
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    i64::try_from(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// `files` mode: a digest of (path, content digest) of every matched file under the
/// project directory.
fn files_revision(app: &str, root: &Path, scope: &Scope, excluded: &[PathBuf]) -> Result<Computed, RevisionError> {
    let set = |globs: &mut dyn Iterator<Item = &str>| -> Result<globset::GlobSet, RevisionError> {
        let mut builder = globset::GlobSetBuilder::new();
        for glob in globs {
            builder.add(globset::GlobBuilder::new(glob).literal_separator(true).build().map_err(|e| RevisionError::Glob(e.to_string()))?);
        }
        builder.build().map_err(|e| RevisionError::Glob(e.to_string()))
    };
    let wanted = set(&mut scope.files.iter().map(String::as_str))?;
    let ignored = set(&mut BUILTIN_IGNORES.iter().copied().chain(scope.ignore.iter().map(String::as_str)))?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let walk = walkdir::WalkDir::new(root).follow_links(false).into_iter().filter_entry(|e| e.file_name() != ".git");
    for entry in walk {
        let entry = entry.map_err(|e| RevisionError::Files {
            app: app.into(),
            path: e.path().map_or_else(|| root.to_path_buf(), Path::to_path_buf),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(root) else { continue };
        if wanted.is_match(relative) && !ignored.is_match(relative) && !excluded.iter().any(|e| entry.path().starts_with(e)) {
            files.push((relative.to_string_lossy().into_owned(), entry.path().to_path_buf()));
        }
    }
    files.sort();
    let mut digest = Sha256::new();
    let mut newest: Option<i64> = None;
    for (relative, path) in &files {
        let content = std::fs::read(path).map_err(|source| RevisionError::Files { app: app.into(), path: path.clone(), source })?;
        digest.update(relative.as_bytes());
        digest.update(b"\0");
        digest.update(Sha256::digest(&content));
        newest = newest.max(mtime_ms(path));
    }
    Ok(Computed { id: digest.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect(), newest_ms: newest })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn view(dir: &Path, excluded: &[&str]) -> GitView {
        let excluded: Vec<PathBuf> = excluded.iter().map(|e| dir.join(e)).collect();
        GitView::open(dir, At::WorkTree, &excluded, &[]).unwrap()
    }

    #[test]
    fn the_revision_is_the_tree_git_would_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &std::fs::canonicalize(tmp.path()).unwrap();
        git(dir, &["init", "-q"]);
        write(dir, "apps/api/server.js", "v1");
        write(dir, "apps/web/server.js", "w1");
        write(dir, "packages/common/index.js", "c1");
        write(dir, "ecosystem.config.js", "e1");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", "one"]);
        let clean = view(dir, &[]).revision(&[]).unwrap();
        // Rehashing without overrides gives git's own tree id (the serializer is git's).
        let head = Repository::open(dir).unwrap().head().unwrap().peel_to_tree().unwrap().id().to_string();
        assert_eq!(clean.id, head);
        // Uncommitted, then committed: the same revision.
        write(dir, "apps/api/server.js", "v2");
        write(dir, "apps/api/new.js", "n");
        let dirty = view(dir, &[]).revision(&[]).unwrap();
        assert_ne!(dirty.id, clean.id);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", "two"]);
        assert_eq!(view(dir, &[]).revision(&[]).unwrap().id, dirty.id, "committing the same content is the same revision");
        // A commit that changes nothing, and a revert to the first tree.
        git(dir, &["commit", "-q", "--allow-empty", "-m", "empty"]);
        assert_eq!(view(dir, &[]).revision(&[]).unwrap().id, dirty.id);
        git(dir, &["revert", "--no-edit", "HEAD~1"]);
        assert_eq!(view(dir, &[]).revision(&[]).unwrap().id, clean.id, "a revert is the earlier revision");
        // Excluded files (desired state) do not count, committed or not.
        let excluded = view(dir, &["ecosystem.config.js"]).revision(&[]).unwrap();
        write(dir, "ecosystem.config.js", "e2");
        assert_eq!(view(dir, &["ecosystem.config.js"]).revision(&[]).unwrap().id, excluded.id);
        git(dir, &["commit", "-qam", "env"]);
        assert_eq!(view(dir, &["ecosystem.config.js"]).revision(&[]).unwrap().id, excluded.id);
        // Untracked logs never count.
        write(dir, "apps/api/out.log", "line");
        assert_eq!(view(dir, &["ecosystem.config.js"]).revision(&[]).unwrap().id, excluded.id);
    }

    /// The figure in the README: a 10,000-file repository, three files edited and one
    /// added. Run with `cargo test --release --lib revision_of_a_10k_file_repo -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn revision_of_a_10k_file_repo() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &std::fs::canonicalize(tmp.path()).unwrap();
        git(dir, &["init", "-q"]);
        for d in 0..100 {
            for f in 0..100 {
                write(dir, &format!("packages/p{d}/src/file{f}.js"), &format!("module.exports = {d} * {f};\n"));
            }
        }
        write(dir, "ecosystem.config.js", "module.exports = {apps: []};\n");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", "10k files"]);
        write(dir, "packages/p1/src/file1.js", "changed\n");
        write(dir, "packages/p50/src/file7.js", "changed\n");
        write(dir, "packages/p99/src/file99.js", "changed\n");
        write(dir, "packages/p3/src/new.js", "new\n");
        let excluded = [dir.join("ecosystem.config.js"), dir.join("reconcile.toml")];
        let mut times = Vec::new();
        let narrow = [PathBuf::from("packages/p1"), PathBuf::from("packages/p2")];
        let mut narrow_times = Vec::new();
        for _ in 0..7 {
            let start = std::time::Instant::now();
            let view = GitView::open(dir, At::WorkTree, &excluded, &[]).unwrap();
            let whole = view.revision(&[]).unwrap();
            times.push(start.elapsed());
            let start = std::time::Instant::now();
            let view = GitView::open(dir, At::WorkTree, &excluded, &narrow).unwrap();
            let narrowed = view.revision(&narrow).unwrap();
            narrow_times.push(start.elapsed());
            assert_ne!(whole.id, narrowed.id);
        }
        // Where the time goes: the status scan alone, and the index walk alone.
        let repo = Repository::open(dir).unwrap();
        let mut scan = Vec::new();
        let mut index = Vec::new();
        for _ in 0..7 {
            let start = std::time::Instant::now();
            let mut options = StatusOptions::new();
            options.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false).exclude_submodules(true);
            assert_eq!(repo.statuses(Some(&mut options)).unwrap().len(), 4);
            scan.push(start.elapsed());
            let start = std::time::Instant::now();
            assert_eq!(repo.index().unwrap().iter().count(), 10_001);
            index.push(start.elapsed());
        }
        scan.sort();
        index.sort();
        println!("of which: status scan {:?}, index walk {:?} (medians)", scan[3], index[3]);
        times.sort();
        narrow_times.sort();
        println!("10k files, 4 dirty: whole tree {:?} (median of 7; min {:?}), narrowed to 2 dirs {:?}", times[3], times[0], narrow_times[3]);
    }

    #[test]
    fn narrowed_paths_see_only_their_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &std::fs::canonicalize(tmp.path()).unwrap();
        git(dir, &["init", "-q"]);
        write(dir, "apps/api/server.js", "v1");
        write(dir, "apps/web/server.js", "w1");
        write(dir, "packages/common/index.js", "c1");
        write(dir, "package-lock.json", "{}");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-qm", "one"]);
        let api: Vec<PathBuf> = ["apps/api", "packages/common", "package-lock.json"].iter().map(PathBuf::from).collect();
        let before = view(dir, &[]).revision(&api).unwrap();
        write(dir, "apps/web/server.js", "w2");
        assert_eq!(view(dir, &[]).revision(&api).unwrap().id, before.id, "another app's code");
        write(dir, "packages/common/index.js", "c2");
        let common = view(dir, &[]).revision(&api).unwrap();
        assert_ne!(common.id, before.id, "a shared package");
        write(dir, "package-lock.json", "{\"a\":1}");
        let lock = view(dir, &[]).revision(&api).unwrap();
        assert_ne!(lock.id, common.id, "the lock file");
        // Scanning only the narrowed paths gives the same revision as a full scan.
        let scanned = GitView::open(dir, At::WorkTree, &[], &api).unwrap().revision(&api).unwrap();
        assert_eq!(scanned, lock);
    }
}
