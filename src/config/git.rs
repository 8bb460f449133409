//! The desired state at a git ref (`plan --base REF`), through libgit2: the project
//! directory's files at that commit, written to a temporary directory so they load
//! exactly as the working tree's do. Also the commit and dirty flag plans record.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, StatusOptions, TreeWalkMode, TreeWalkResult};

/// Why the git view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{dir} is not inside a git repository; --base and --head need one")]
    NotARepository { dir: PathBuf },
    #[error("cannot resolve `{reference}` in {repo}: {message}; fetch it first (e.g. `git fetch origin main`)")]
    UnknownRef { reference: String, repo: PathBuf, message: String },
    #[error("{project} is not inside the repository at {repo}")]
    OutsideRepository { project: PathBuf, repo: PathBuf },
    #[error("cannot read the project at `{reference}`: {message}")]
    Read { reference: String, message: String },
    #[error("`{reference}` holds symlinks that lead out of the repository ({}); refused: they would read files outside it. Replace them with the files themselves", paths.join(", "))]
    EscapingSymlinks { reference: String, paths: Vec<String> },
    #[error("cannot write the files of `{reference}` to {dir}")]
    Write {
        reference: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The commit and whether the working tree differs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    pub dirty: bool,
}

/// HEAD of the repository containing `dir`, if any.
pub fn head(dir: &Path) -> Option<Revision> {
    let repo = Repository::discover(dir).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?.id().to_string();
    let mut options = StatusOptions::new();
    options.include_untracked(false).include_ignored(false);
    let dirty = repo.statuses(Some(&mut options)).map(|s| !s.is_empty()).unwrap_or(true);
    Some(Revision { commit, dirty })
}

/// Writes the files under `project_dir` as they are at `reference` into `dest`,
/// keeping their paths relative to `project_dir`. Returns the commit id.
pub fn checkout_project(project_dir: &Path, reference: &str, dest: &Path) -> Result<String, GitError> {
    let repo = Repository::discover(project_dir).map_err(|_| GitError::NotARepository { dir: project_dir.into() })?;
    let workdir = repo.workdir().map(Path::to_path_buf).unwrap_or_default();
    let project = std::path::absolute(project_dir).unwrap_or_else(|_| project_dir.to_path_buf());
    let workdir_abs = std::fs::canonicalize(&workdir).unwrap_or(workdir.clone());
    let project_abs = std::fs::canonicalize(&project).unwrap_or(project.clone());
    let prefix = project_abs
        .strip_prefix(&workdir_abs)
        .map_err(|_| GitError::OutsideRepository { project: project.clone(), repo: workdir.clone() })?
        .to_path_buf();
    let unknown = |e: git2::Error| GitError::UnknownRef { reference: reference.into(), repo: workdir.clone(), message: e.message().into() };
    let commit = repo.revparse_single(reference).and_then(|o| o.peel_to_commit()).map_err(unknown)?;
    let tree = commit.tree().map_err(|e| GitError::Read { reference: reference.into(), message: e.message().into() })?;
    let escaping = escaping_symlinks(&repo, &tree);
    if !escaping.is_empty() {
        return Err(GitError::EscapingSymlinks { reference: reference.into(), paths: escaping });
    }
    let mut failure: Option<GitError> = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let path = Path::new(parent).join(entry.name().unwrap_or_default());
        let Ok(relative) = path.strip_prefix(&prefix) else { return TreeWalkResult::Ok };
        if relative.components().any(|c| c.as_os_str() == "node_modules" || c.as_os_str() == ".git") {
            return TreeWalkResult::Ok;
        }
        let blob = match repo.find_blob(entry.id()) {
            Ok(blob) => blob,
            Err(e) => {
                failure = Some(GitError::Read { reference: reference.into(), message: e.message().into() });
                return TreeWalkResult::Abort;
            }
        };
        let target = dest.join(relative);
        let written = target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            if entry.filemode() == SYMLINK_MODE {
                // Checked above to stay inside the tree; the reader checks it again.
                std::os::unix::fs::symlink(String::from_utf8_lossy(blob.content()).as_ref(), &target)
            } else {
                std::fs::write(&target, blob.content())
            }
        });
        if let Err(source) = written {
            failure = Some(GitError::Write { reference: reference.into(), dir: dest.into(), source });
            return TreeWalkResult::Abort;
        }
        TreeWalkResult::Ok
    })
    .map_err(|e| GitError::Read { reference: reference.into(), message: e.message().into() })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(commit.id().to_string()),
    }
}

/// Git's file mode of a symlink entry.
const SYMLINK_MODE: i32 = 0o120_000;

/// The paths of the symlinks in `tree` that resolve (following the tree's own
/// symlinks, as the file system would after a checkout) to somewhere outside it:
/// absolute targets, `..` past the top, or a chain of links that leaves.
pub fn escaping_symlinks(repo: &Repository, tree: &git2::Tree<'_>) -> Vec<String> {
    let mut links = std::collections::HashMap::new();
    let _ = tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.filemode() == SYMLINK_MODE
            && let Ok(blob) = repo.find_blob(entry.id())
        {
            let path = format!("{parent}{}", entry.name().unwrap_or_default());
            links.insert(path, String::from_utf8_lossy(blob.content()).into_owned());
        }
        TreeWalkResult::Ok
    });
    let mut escaping: Vec<String> = links.keys().filter(|path| !resolves_inside(path, &links)).cloned().collect();
    escaping.sort();
    escaping
}

/// Whether the link at `path` (tree-relative, `/`-separated) resolves inside the tree.
fn resolves_inside(path: &str, links: &std::collections::HashMap<String, String>) -> bool {
    // The components of the real path so far, and what is left to walk (reversed).
    let mut real: Vec<String> = path.split('/').map(String::from).collect();
    real.pop();
    let Some(target) = links.get(path) else { return true };
    let mut pending: Vec<String> = Vec::new();
    if !push_target(target, &mut pending) {
        return false;
    }
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if real.pop().is_none() {
                    return false;
                }
            }
            name => {
                real.push(name.to_string());
                if let Some(next) = links.get(&real.join("/")) {
                    hops += 1;
                    // Like ELOOP: a cycle or a very long chain is refused.
                    if hops > 40 {
                        return false;
                    }
                    real.pop();
                    if !push_target(next, &mut pending) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Queues a link target's components; `false` for an absolute target.
fn push_target(target: &str, pending: &mut Vec<String>) -> bool {
    if target.starts_with('/') || target.contains('\\') {
        return false;
    }
    pending.extend(target.split('/').rev().map(String::from));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(a, b)| ((*a).to_string(), (*b).to_string())).collect()
    }

    #[test]
    fn symlinks_are_resolved_through_the_trees_own_links() {
        let inside = links(&[("eco.json", "conf/eco.json"), ("a/b", "../c")]);
        assert!(resolves_inside("eco.json", &inside) && resolves_inside("a/b", &inside));
        let out = links(&[("abs", "/proc/self/environ"), ("up", "../x"), ("deep/up", "../../etc/passwd")]);
        for path in ["abs", "up", "deep/up"] {
            assert!(!resolves_inside(path, &out), "{path}");
        }
        // `p/d -> ../a` then `p/e -> d/../..`: lexically inside, really outside.
        let chain = links(&[("p/d", "../a"), ("p/e", "d/../..")]);
        assert!(resolves_inside("p/d", &chain));
        assert!(!resolves_inside("p/e", &chain));
        let cycle = links(&[("x", "y"), ("y", "x")]);
        assert!(!resolves_inside("x", &cycle));
    }
}
