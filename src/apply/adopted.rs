//! Proof of ownership for prune (safety contract, promise 11): `prune` deletes only
//! processes this project started or adopted.
//!
//! - *Started*: `apply` stamps every process it starts with the hash of its spec
//!   (`x_reconcile_hash`, see `live::model::SPEC_HASH_KEY`); PM2 keeps it across
//!   restarts and in its dump.
//! - *Adopted*: processes that were already running when they entered the desired
//!   state (started by hand, then written into an ecosystem file by hand or by
//!   `reconcile import`). They carry no stamp, so the adoption is recorded here: the
//!   ledger `.reconcile/adopted.json` beside the journal lists each one by namespace,
//!   name and `pm_id`. `import` writes it for the apps it imports; `apply` adds every
//!   owned, desired process it finds unstamped.
//!
//! Anything else in an owned namespace (a `legacy-cron` started by hand in `default`)
//! is listed as unmanaged, with how to adopt it, and never deleted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::live::LiveState;

/// The ledger's file name, in the directory of the journal.
pub const FILE_NAME: &str = "adopted.json";

/// One adopted process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Adopted {
    pub namespace: String,
    pub name: String,
    pub pm_id: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    adopted: BTreeSet<Adopted>,
}

/// Why the ledger could not be written (reading a missing or broken one is no error:
/// nothing is adopted then, so nothing unstamped is deleted).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the adoption ledger {path}: {error}; fix its directory or permissions")]
pub struct LedgerError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// The ledger of the project whose journal is `journal`.
pub fn ledger_path(journal: &Path) -> PathBuf {
    journal.parent().map_or_else(|| PathBuf::from(FILE_NAME), |dir| dir.join(FILE_NAME))
}

/// The adopted processes recorded at `path`.
pub fn load(path: &Path) -> BTreeSet<Adopted> {
    crate::config::read::read_text(path, None, 16 * 1024 * 1024)
        .ok()
        .and_then(|text| serde_json::from_str::<Ledger>(&text).ok())
        .map(|ledger| ledger.adopted)
        .unwrap_or_default()
}

/// The `pm_id`s of `live` that the ledger at `path` records (same namespace and name).
pub fn mark(live: &mut LiveState, path: &Path) {
    let ledger = load(path);
    if ledger.is_empty() {
        return;
    }
    live.adopted = live
        .processes
        .iter()
        .filter(|p| ledger.contains(&Adopted { namespace: p.namespace.clone(), name: p.name.clone(), pm_id: p.pm_id }))
        .map(|p| p.pm_id)
        .collect();
}

/// Adds `entries` to the ledger at `path`, dropping entries for `pm_id`s no longer
/// live (a deleted process's id must not vouch for a later one). Written whole, then
/// renamed into place.
pub fn record(path: &Path, entries: impl IntoIterator<Item = Adopted>, live: &LiveState) -> Result<usize, LedgerError> {
    let err = |error| LedgerError { path: path.to_path_buf(), error };
    let mut ledger = Ledger { adopted: load(path) };
    let before = ledger.adopted.clone();
    ledger.adopted.extend(entries);
    ledger.adopted.retain(|a| live.get(a.pm_id).is_some_and(|p| p.name == a.name && p.namespace == a.namespace));
    if ledger.adopted == before {
        return Ok(0);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text = serde_json::to_string_pretty(&ledger).unwrap_or_default();
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text + "\n").and_then(|()| std::fs::rename(&temporary, path)).map_err(err)?;
    Ok(ledger.adopted.difference(&before).count())
}

/// The owned processes of `live` that are desired by name but carry no stamp: what an
/// apply of this desired state adopts.
pub fn unstamped_desired<'a>(live: &'a LiveState, owned: &'a [String], desired: &'a BTreeSet<&str>) -> impl Iterator<Item = Adopted> + 'a {
    live.processes
        .iter()
        .filter(|p| p.spec_hash.is_none() && owned.contains(&p.namespace) && desired.contains(p.name.as_str()))
        .map(|p| Adopted { namespace: p.namespace.clone(), name: p.name.clone(), pm_id: p.pm_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{foreign, live};

    #[test]
    fn the_ledger_marks_recorded_processes_and_forgets_gone_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".reconcile").join(FILE_NAME);
        let state = live(vec![foreign("api", "web", 0), foreign("cron", "web", 1)]);
        let added = record(&path, [Adopted { namespace: "web".into(), name: "api".into(), pm_id: 0 }], &state).unwrap();
        assert_eq!(added, 1);
        let mut marked = state.clone();
        mark(&mut marked, &path);
        assert_eq!(marked.adopted, BTreeSet::from([0]));
        // pm_id 0 is now another process: the entry no longer vouches for it.
        let later = live(vec![foreign("other", "web", 0)]);
        let mut marked = later.clone();
        mark(&mut marked, &path);
        assert!(marked.adopted.is_empty());
        record(&path, [], &later).unwrap();
        assert!(load(&path).is_empty());
    }
}
