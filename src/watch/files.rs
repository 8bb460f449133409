//! The desired-state files, watched (inotify through `notify`, debounced).
//!
//! Editors save by writing a new file and renaming it over the old one, which ends a
//! watch on the file itself; so the *directories* are watched (not recursively) and
//! events are filtered down to the files that matter: the ecosystem files,
//! `reconcile.toml`, and policy files or the files in policy directories.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Why the files cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {message}; if the limit of inotify watches is reached, raise fs.inotify.max_user_watches")]
pub struct WatchError {
    pub path: PathBuf,
    pub message: String,
}

/// What to watch: single files, and directories whose files all count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub files: BTreeSet<PathBuf>,
    pub dirs: BTreeSet<PathBuf>,
}

impl Targets {
    /// Whether a changed path is one of ours.
    pub fn matches(&self, path: &Path) -> bool {
        self.files.contains(path) || path.parent().is_some_and(|p| self.dirs.contains(p)) || self.dirs.contains(path)
    }

    /// The directories to put a watch on.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        dirs.extend(self.dirs.iter().cloned());
        dirs
    }
}

/// A running watch.
pub struct FileWatch {
    watcher: RecommendedWatcher,
    debounce: Duration,
    watching: BTreeSet<PathBuf>,
    targets: Targets,
    /// Changes seen and not yet returned (the debounce is running).
    pending: BTreeSet<PathBuf>,
    events: mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch").field("watching", &self.watching).finish()
    }
}

impl FileWatch {
    /// Starts watching; changes closer together than `debounce` come as one batch.
    pub fn new(debounce: Duration, targets: Targets) -> Result<Self, WatchError> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            let batch = match result {
                // Reading a file (ours included: every check reads them) is not a change.
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
                Ok(event) => Ok(event.paths),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(batch);
        })
        .map_err(|e| WatchError { path: PathBuf::new(), message: e.to_string() })?;
        let mut watch = Self { watcher, debounce, watching: BTreeSet::new(), targets: Targets::default(), pending: BTreeSet::new(), events };
        watch.set(targets)?;
        Ok(watch)
    }

    /// Changes what is watched (the project file may name other files now).
    pub fn set(&mut self, targets: Targets) -> Result<(), WatchError> {
        let wanted = targets.watch_dirs();
        for gone in self.watching.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in wanted.difference(&self.watching) {
            // A directory that does not exist yet (no policies/ folder) is not an error.
            if !dir.is_dir() {
                continue;
            }
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError { path: dir.clone(), message: e.to_string() })?;
        }
        self.watching = wanted.into_iter().filter(|d| d.is_dir()).collect();
        self.targets = targets;
        Ok(())
    }

    /// Waits for the next batch of changes to our files (sorted, without duplicates):
    /// the first change, and every other one until the files are quiet for the
    /// debounce time. Or a watch error.
    /// Cancel-safe: what was seen is kept until it is returned.
    pub async fn changed(&mut self) -> Result<Vec<PathBuf>, String> {
        loop {
            let next = if self.pending.is_empty() {
                self.events.recv().await
            } else {
                match tokio::time::timeout(self.debounce, self.events.recv()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(std::mem::take(&mut self.pending).into_iter().collect()),
                }
            };
            match next {
                Some(Ok(paths)) => {
                    let targets = &self.targets;
                    self.pending.extend(paths.into_iter().filter(|p| targets.matches(p)));
                }
                Some(Err(e)) => return Err(e),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_our_files_match() {
        let t = Targets {
            files: ["/p/reconcile.toml".into(), "/p/eco.json".into()].into(),
            dirs: ["/p/policies".into()].into(),
        };
        assert!(t.matches(Path::new("/p/eco.json")));
        assert!(t.matches(Path::new("/p/policies/x.toml")));
        assert!(!t.matches(Path::new("/p/eco.json.swp")));
        assert!(!t.matches(Path::new("/p/.reconcile/journal.jsonl")));
        assert_eq!(t.watch_dirs(), ["/p".into(), "/p/policies".into()].into());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rename_over_a_watched_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("eco.json");
        std::fs::write(&file, "{}").unwrap();
        let targets = Targets { files: [file.clone()].into(), dirs: BTreeSet::new() };
        let mut watch = FileWatch::new(Duration::from_millis(50), targets).unwrap();
        std::fs::write(dir.join("other.txt"), "x").unwrap();
        std::fs::write(dir.join("eco.json.tmp"), "{\"apps\": []}").unwrap();
        std::fs::rename(dir.join("eco.json.tmp"), &file).unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await.unwrap().unwrap();
        assert_eq!(changed, vec![file]);
    }
}
