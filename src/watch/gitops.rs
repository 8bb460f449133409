//! GitOps pull mode (`watch --git-remote URL --branch NAME`): one agent per host
//! follows a branch, Flux-style. The branch is fetched by the system `git` (bounded
//! and credential-safe, see [`super::gitcmd`]) into a local clone
//! (`.reconcile/checkout`); when it moves, the new commit is checked (signed by an
//! allowed key with `--verify-signers`; a descendant of the current one unless
//! `--git-allow-rewind`) and then checked out through libgit2.
//!
//! Why the system git and not libgit2's own transports: libgit2's https and ssh need
//! OpenSSL and libssh2 built from source (vendored) on every build, and their auth,
//! proxy and CA handling would be ours to get right; git is on every server, already
//! speaks every transport and credential path, and is what Argo CD drives too.

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};

use super::gitcmd::{self, Access, RunError};

/// Where the clone goes, relative to the directory `watch` runs in.
pub const CHECKOUT_DIR: &str = ".reconcile/checkout";

/// What to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The remote: an https/ssh/file URL, an scp-like `user@host:path`, or a local path.
    pub remote: String,
    pub branch: String,
    /// The local clone.
    pub checkout: PathBuf,
    /// Credentials, CA, ssh key and known_hosts, timeout.
    pub access: Access,
    /// `--verify-signers`: an OpenSSH allowed_signers file every applied commit must
    /// be signed by.
    pub verify_signers: Option<PathBuf>,
    /// `--git-allow-rewind`: follow the branch to a commit that is not a descendant of
    /// the current one (a force-push back).
    pub allow_rewind: bool,
}

/// Why the branch could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "--git-remote {remote}: the URL holds a password; it would show in process lists. Remove it from the URL and set RECONCILE_GIT_PASSWORD (and RECONCILE_GIT_USERNAME), or use --git-credentials-file"
    )]
    PasswordInUrl { remote: String },
    #[error("cannot fetch branch `{branch}` from {remote}: {message}")]
    Fetch { remote: String, branch: String, message: String },
    #[error("branch `{branch}` is not on {remote}: {message}; check --branch")]
    NoBranch { remote: String, branch: String, message: String },
    #[error("commit {commit} holds symlinks that lead out of the repository ({}); not checked out: they would make the agent read files outside it. Replace them with the files themselves", paths.join(", "))]
    EscapingSymlinks { commit: String, paths: Vec<String> },
    #[error("cannot use the local clone {dir}: {message}; remove the directory and start again")]
    Clone { dir: PathBuf, message: String },
    #[error(
        "commit {commit} of `{branch}` is not signed by a key in {signers}: {message}; it is not applied (the agent stays on {current}). Sign it with a key listed there"
    )]
    Unverified { commit: String, branch: String, signers: PathBuf, message: String, current: String },
    #[error(
        "branch `{branch}` moved back to {commit}, which does not contain the current commit {current} (a force-push?); it is not applied. Pass --git-allow-rewind to follow such moves"
    )]
    Rewind { commit: String, branch: String, current: String },
}

impl SyncError {
    /// The commit refused (not fetched: `None`), for reports and metrics.
    pub fn refused_commit(&self) -> Option<&str> {
        match self {
            Self::Unverified { commit, .. } | Self::Rewind { commit, .. } | Self::EscapingSymlinks { commit, .. } => Some(commit),
            _ => None,
        }
    }

    /// A short reason for the failure metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unverified { .. } => "unverified",
            Self::Rewind { .. } => "rewind",
            Self::EscapingSymlinks { .. } => "escaping_symlinks",
            Self::NoBranch { .. } => "no_branch",
            Self::Clone { .. } => "clone",
            Self::PasswordInUrl { .. } | Self::Fetch { .. } => "fetch",
        }
    }
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

/// The commit the local clone has checked out, if any (the last one applied).
pub fn current(checkout: &Path) -> Option<String> {
    Repository::open(checkout).ok()?.head().ok()?.target().map(|o| o.to_string())
}

/// Fetches the branch and checks its commit out in the local clone (creating it).
/// Blocking (runs git); run it off the async loop. On any error the clone stays on
/// the commit it had.
pub fn sync(source: &GitSource) -> Result<Synced, SyncError> {
    if gitcmd::has_password_in_url(&source.remote) {
        return Err(SyncError::PasswordInUrl { remote: gitcmd::scrub_userinfo(&source.remote) });
    }
    // The branch goes into a refspec: a name like `a:refs/heads/b` must not reach it.
    if !git2::Reference::is_valid_name(&format!("refs/heads/{}", source.branch)) || source.branch.starts_with('-') {
        return Err(SyncError::NoBranch {
            remote: gitcmd::scrub_userinfo(&source.remote),
            branch: source.branch.clone(),
            message: "that is not a valid branch name".into(),
        });
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
    let askpass = source.checkout.with_file_name("askpass.sh");
    if source.access.credentials.is_some() {
        gitcmd::write_askpass(&askpass).map_err(|e| clone_err(&e))?;
    }
    let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", source.branch);
    let fetch_err = |e: RunError| SyncError::Fetch {
        remote: gitcmd::scrub_userinfo(&source.remote),
        branch: source.branch.clone(),
        message: e.to_string(),
    };
    gitcmd::run(&source.checkout, &source.access, &askpass, &["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", &refspec])
        .map_err(fetch_err)?;
    let tracking = format!("refs/remotes/origin/{}", source.branch);
    let commit = repo.find_reference(&tracking).and_then(|r| r.peel_to_commit()).map_err(|e| SyncError::NoBranch {
        remote: gitcmd::scrub_userinfo(&source.remote),
        branch: source.branch.clone(),
        message: e.message().to_string(),
    })?;
    let previous: Option<Oid> = repo.head().ok().and_then(|h| h.target());
    if previous != Some(commit.id()) {
        let id = commit.id().to_string();
        let current = previous.map_or_else(|| "no commit yet".to_string(), |p| p.to_string());
        if let Some(signers) = &source.verify_signers {
            let config = format!("gpg.ssh.allowedSignersFile={}", signers.display());
            gitcmd::run(&source.checkout, &source.access, &askpass, &["-c", "gpg.format=ssh", "-c", &config, "verify-commit", &id]).map_err(
                |e| SyncError::Unverified {
                    commit: id.clone(),
                    branch: source.branch.clone(),
                    signers: signers.clone(),
                    message: one_line(&e.to_string()),
                    current: current.clone(),
                },
            )?;
        }
        if let Some(previous) = previous
            && !source.allow_rewind
            && !repo.graph_descendant_of(commit.id(), previous).unwrap_or(false)
        {
            return Err(SyncError::Rewind { commit: id, branch: source.branch.clone(), current });
        }
    }
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

/// git's multi-line messages as one line (`; ` between lines).
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
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
    fn a_password_in_the_url_or_a_bad_branch_name_is_refused_up_front() {
        let source = GitSource {
            remote: "https://bot:hunter2@x/y.git".into(),
            branch: "main".into(),
            checkout: "/nonexistent".into(),
            access: Access::plain(std::time::Duration::from_secs(5)),
            verify_signers: None,
            allow_rewind: false,
        };
        let err = sync(&source).unwrap_err().to_string();
        assert!(err.contains("RECONCILE_GIT_PASSWORD") && !err.contains("hunter2"), "{err}");
        let source = GitSource { remote: "/srv/git/deploy.git".into(), branch: "main:refs/heads/x".into(), ..source };
        let err = sync(&source).unwrap_err().to_string();
        assert!(err.contains("not a valid branch name"), "{err}");
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
            access: Access::plain(std::time::Duration::from_secs(60)),
            verify_signers: None,
            allow_rewind: false,
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
            access: Access::plain(std::time::Duration::from_secs(60)),
            verify_signers: None,
            allow_rewind: false,
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

    /// Runs git in `dir` for the test (a fixed identity; `extra` before the subcommand).
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=deploy@example.com", "-c", "gpg.format=ssh"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn only_commits_signed_by_an_allowed_key_are_checked_out_and_rewinds_need_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for key in ["allowed", "other"] {
            let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"]).arg(dir.join(key)).output().unwrap();
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let public = std::fs::read_to_string(dir.join("allowed.pub")).unwrap();
        std::fs::write(dir.join("allowed_signers"), format!("deploy@example.com {public}")).unwrap();
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "deploy"]);
        let commit = |text: &str, key: Option<&str>| -> String {
            std::fs::write(work.join("eco.json"), text).unwrap();
            git(&work, &["add", "eco.json"]);
            match key {
                Some(key) => {
                    let signing = format!("user.signingkey={}", dir.join(key).display());
                    git(&work, &["-c", &signing, "commit", "-q", "-S", "-m", text]);
                }
                None => {
                    git(&work, &["commit", "-q", "-m", text]);
                }
            };
            git(&work, &["rev-parse", "HEAD"])
        };
        let signed = commit("1", Some("allowed"));
        let mut source = GitSource {
            remote: work.display().to_string(),
            branch: "deploy".into(),
            checkout: dir.join("agent/.reconcile/checkout"),
            access: Access::plain(std::time::Duration::from_secs(60)),
            verify_signers: Some(dir.join("allowed_signers")),
            allow_rewind: false,
        };
        assert_eq!(sync(&source).unwrap().commit, signed);
        for (text, key) in [("2", None), ("2b", Some("other"))] {
            let refused = commit(text, key);
            let err = sync(&source).unwrap_err();
            assert!(matches!(&err, SyncError::Unverified { commit, current, .. } if *commit == refused && *current == signed), "{err}");
            assert_eq!(current(&source.checkout).as_deref(), Some(signed.as_str()), "stays on the verified commit");
            assert_eq!(std::fs::read_to_string(source.checkout.join("eco.json")).unwrap(), "1");
        }
        let newer = commit("3", Some("allowed"));
        assert_eq!(sync(&source).unwrap().commit, newer);
        // A force-push back to the first commit.
        git(&work, &["reset", "-q", "--hard", &signed]);
        let err = sync(&source).unwrap_err();
        assert!(matches!(&err, SyncError::Rewind { commit, current, .. } if *commit == signed && *current == newer), "{err}");
        assert!(err.to_string().contains("--git-allow-rewind"), "{err}");
        assert_eq!(current(&source.checkout).as_deref(), Some(newer.as_str()));
        source.allow_rewind = true;
        assert_eq!(sync(&source).unwrap().commit, signed);
    }
}
