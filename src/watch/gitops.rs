//! GitOps pull mode (`watch --git-remote URL --branch NAME`): one agent per host
//! follows a branch, Flux-style. The branch is fetched through libgit2 into a local
//! clone (`.reconcile/checkout`), and when it moves the clone is checked out at the
//! new commit.
//!
//! libgit2 is built without network transports (no OpenSSL, no libssh2): `file://`
//! URLs and local paths work; `https://` and `ssh://` are refused with a clear error.
//! (They would need git2's `https`/`ssh` features and a vendored OpenSSL.)

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{FetchOptions, Oid, Repository};

/// Where the clone goes, relative to the directory `watch` runs in.
pub const CHECKOUT_DIR: &str = ".reconcile/checkout";

/// What to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The remote: a `file://` URL or a local path.
    pub remote: String,
    pub branch: String,
    /// The local clone.
    pub checkout: PathBuf,
}

/// Why the branch could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "--git-remote {remote}: this build fetches only from local repositories (a file:// URL or a path); https and ssh are not built in (libgit2 without network transports). Mirror the repository locally, or fetch it with git on a timer and point --git-remote at that copy"
    )]
    Unsupported { remote: String },
    #[error("cannot fetch branch `{branch}` from {remote}: {message}")]
    Fetch { remote: String, branch: String, message: String },
    #[error("branch `{branch}` is not on {remote}: {message}; check --branch")]
    NoBranch { remote: String, branch: String, message: String },
    #[error("commit {commit} holds symlinks that lead out of the repository ({}); not checked out: they would make the agent read files outside it. Replace them with the files themselves", paths.join(", "))]
    EscapingSymlinks { commit: String, paths: Vec<String> },
    #[error("cannot use the local clone {dir}: {message}; remove the directory and start again")]
    Clone { dir: PathBuf, message: String },
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The branch's commit, now checked out.
    pub commit: String,
    /// What was checked out before (`None` on the first sync).
    pub previous: Option<String>,
}

impl Synced {
    /// Whether the checkout moved.
    pub fn moved(&self) -> bool {
        self.previous.as_deref() != Some(self.commit.as_str())
    }
}

/// Whether a remote is one libgit2 can fetch here without network transports.
pub fn supported(remote: &str) -> bool {
    let lower = remote.to_ascii_lowercase();
    if lower.starts_with("file://") {
        return true;
    }
    // `scheme://...` or scp-like `user@host:path` need a network transport.
    !(lower.contains("://") || (lower.contains('@') && lower.contains(':')))
}

/// Fetches the branch and checks its commit out in the local clone (creating it).
/// Blocking (libgit2); run it off the async loop.
pub fn sync(source: &GitSource) -> Result<Synced, SyncError> {
    if !supported(&source.remote) {
        return Err(SyncError::Unsupported { remote: source.remote.clone() });
    }
    let clone_err = |e: &dyn std::fmt::Display| SyncError::Clone { dir: source.checkout.clone(), message: e.to_string() };
    let repo = open_or_init(&source.checkout).map_err(|e| clone_err(&e))?;
    let url = remote_url(&source.remote);
    match repo.find_remote("origin") {
        Ok(remote) if remote.url() == Some(url.as_str()) => {}
        Ok(_) => repo.remote_set_url("origin", &url).map_err(|e| clone_err(&e))?,
        Err(_) => {
            repo.remote("origin", &url).map_err(|e| clone_err(&e))?;
        }
    }
    let mut remote = repo.find_remote("origin").map_err(|e| clone_err(&e))?;
    let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", source.branch);
    let mut options = FetchOptions::new();
    options.download_tags(git2::AutotagOption::None);
    remote.fetch(&[refspec.as_str()], Some(&mut options), None).map_err(|e| SyncError::Fetch {
        remote: source.remote.clone(),
        branch: source.branch.clone(),
        message: e.message().to_string(),
    })?;
    let tracking = format!("refs/remotes/origin/{}", source.branch);
    let commit = repo.find_reference(&tracking).and_then(|r| r.peel_to_commit()).map_err(|e| SyncError::NoBranch {
        remote: source.remote.clone(),
        branch: source.branch.clone(),
        message: e.message().to_string(),
    })?;
    let previous: Option<Oid> = repo.head().ok().and_then(|h| h.target());
    if previous != Some(commit.id()) || !clean(&repo) {
        let tree = commit.tree().map_err(|e| clone_err(&e))?;
        let escaping = crate::config::git::escaping_symlinks(&repo, &tree);
        if !escaping.is_empty() {
            return Err(SyncError::EscapingSymlinks { commit: commit.id().to_string(), paths: escaping });
        }
        let mut checkout = CheckoutBuilder::new();
        checkout.force();
        repo.checkout_tree(commit.as_object(), Some(&mut checkout)).map_err(|e| clone_err(&e))?;
        repo.set_head_detached(commit.id()).map_err(|e| clone_err(&e))?;
    }
    Ok(Synced { commit: commit.id().to_string(), previous: previous.map(|p| p.to_string()) })
}

fn open_or_init(dir: &Path) -> Result<Repository, git2::Error> {
    match Repository::open(dir) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            Repository::init(dir)
        }
    }
}

/// A local path as an absolute path (so the clone does not depend on the working
/// directory); URLs as given.
fn remote_url(remote: &str) -> String {
    if remote.contains("://") {
        return remote.to_string();
    }
    std::path::absolute(remote).map_or_else(|_| remote.to_string(), |p| p.display().to_string())
}

/// Whether the clone's tracked files are as committed (someone may have edited them).
fn clean(repo: &Repository) -> bool {
    let mut options = git2::StatusOptions::new();
    options.include_untracked(false).include_ignored(false);
    repo.statuses(Some(&mut options)).is_ok_and(|s| s.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn network_remotes_are_refused_up_front() {
        assert!(supported("file:///srv/git/deploy.git"));
        assert!(supported("/srv/git/deploy.git"));
        assert!(supported("../deploy"));
        assert!(!supported("https://github.com/acme/deploy.git"));
        assert!(!supported("ssh://git@host/deploy.git"));
        assert!(!supported("git@github.com:acme/deploy.git"));
        let source = GitSource { remote: "https://x/y.git".into(), branch: "main".into(), checkout: "/nonexistent".into() };
        let err = sync(&source).unwrap_err().to_string();
        assert!(err.contains("file:// URL") && err.contains("https"), "{err}");
    }

    #[test]
    fn follows_a_branch_of_a_local_bare_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let repo = Repository::init(&work).unwrap();
        let commit = |msg: &str, text: &str| -> Oid {
            std::fs::write(work.join("eco.json"), text).unwrap();
            let mut index = repo.index().unwrap();
            index.add_path(Path::new("eco.json")).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            let parents: Vec<git2::Commit> = repo.head().ok().and_then(|h| h.peel_to_commit().ok()).into_iter().collect();
            let parents: Vec<&git2::Commit> = parents.iter().collect();
            repo.commit(Some("refs/heads/deploy"), &sig, &sig, msg, &tree, &parents).unwrap()
        };
        let first = commit("one", "1");
        repo.set_head("refs/heads/deploy").unwrap();
        let source = GitSource {
            remote: format!("file://{}", work.display()),
            branch: "deploy".into(),
            checkout: tmp.path().join("agent/.reconcile/checkout"),
        };
        let synced = sync(&source).unwrap();
        assert_eq!((synced.commit.as_str(), synced.previous.as_deref()), (first.to_string().as_str(), None));
        assert_eq!(std::fs::read_to_string(source.checkout.join("eco.json")).unwrap(), "1");
        assert!(!sync(&source).unwrap().moved(), "nothing new");
        let second = commit("two", "2");
        let synced = sync(&source).unwrap();
        assert!(synced.moved());
        assert_eq!(synced.commit, second.to_string());
        assert_eq!(std::fs::read_to_string(source.checkout.join("eco.json")).unwrap(), "2");
        let missing = GitSource { branch: "nope".into(), ..source };
        assert!(matches!(sync(&missing), Err(SyncError::Fetch { .. } | SyncError::NoBranch { .. })));
    }

    #[test]
    fn a_commit_with_a_symlink_out_of_the_tree_is_not_checked_out() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let repo = Repository::init(&work).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = |links: &[(&str, &str)], parents: &[&git2::Commit]| -> Oid {
            let mut index = repo.index().unwrap();
            std::fs::write(work.join("app.json"), "[]").unwrap();
            index.add_path(Path::new("app.json")).unwrap();
            for (name, target) in links {
                let _ = std::fs::remove_file(work.join(name));
                std::os::unix::fs::symlink(target, work.join(name)).unwrap();
                index.add_path(Path::new(name)).unwrap();
            }
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            repo.commit(Some("refs/heads/deploy"), &sig, &sig, "c", &tree, parents).unwrap()
        };
        let good = commit(&[("eco.json", "app.json")], &[]);
        let source = GitSource {
            remote: format!("file://{}", work.display()),
            branch: "deploy".into(),
            checkout: tmp.path().join("agent/.reconcile/checkout"),
        };
        assert_eq!(sync(&source).unwrap().commit, good.to_string(), "a link inside the tree is fine");
        let parent = repo.find_commit(good).unwrap();
        let bad = commit(&[("eco.json", "/proc/self/environ"), ("up.json", "../../x")], &[&parent]);
        match sync(&source) {
            Err(SyncError::EscapingSymlinks { commit, paths }) => {
                assert_eq!(commit, bad.to_string());
                assert_eq!(paths, ["eco.json", "up.json"]);
            }
            other => panic!("{other:?}"),
        }
        // The previous commit stays checked out, its link intact.
        assert_eq!(std::fs::read_link(source.checkout.join("eco.json")).unwrap(), Path::new("app.json"));
    }
}
