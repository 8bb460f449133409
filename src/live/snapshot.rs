//! `--live FILE`: `pm2 jlist` output standing in for the daemon, so plans and
//! `status` run in CI and examples without PM2.

use std::path::Path;

use super::client::now_ms;
use super::error::LiveError;
use super::model::{Detail, ListError, LiveOrigin, LiveProcess, LiveState, normalize_text};

/// Largest snapshot read (a 1,000-app list is about 5 MB).
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a `pm2 jlist` file. Text before the JSON array (a warning the CLI printed
/// on stdout) is skipped.
pub fn read(path: &Path) -> Result<LiveState, LiveError> {
    read_with(path, Detail::Full)
}

/// [`read`], reading as much of each process as `detail` says, with the same typed
/// reader as the daemon's reply (`model::normalize_text`).
pub fn read_with(path: &Path, detail: Detail) -> Result<LiveState, LiveError> {
    let read_err = |source| LiveError::SnapshotRead { path: path.to_path_buf(), source };
    let parse_err = |message: String| LiveError::SnapshotParse { path: path.to_path_buf(), message };
    let text = crate::config::read::read_text(path, None, MAX_SNAPSHOT_BYTES).map_err(|e| match e {
        crate::config::read::ReadError::Io { error, .. } => read_err(error),
        other => parse_err(other.to_string()),
    })?;
    let processes = parse_list(&text, detail).map_err(parse_err)?;
    Ok(LiveState {
        origin: LiveOrigin::Snapshot { path: path.to_path_buf() },
        daemon: None,
        read_at_ms: now_ms(),
        processes,
        adopted: Default::default(),
    })
}

/// The processes of the JSON array: the whole text, or from the first line that
/// starts one (when the text is not JSON).
fn parse_list(text: &str, detail: Detail) -> Result<Vec<LiveProcess>, String> {
    let first_err = match normalize_text(text, detail, None) {
        Ok(processes) => return Ok(processes),
        Err(ListError::Json(err)) => err.to_string(),
        Err(other) => return Err(other.to_string()),
    };
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > 0
            && line.trim_start().starts_with('[')
            && let Ok(processes) = normalize_text(&text[offset..], detail, None)
        {
            return Ok(processes);
        }
        offset += line.len();
    }
    Err(first_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_jlist_output_with_a_leading_warning() {
        let f = write("[PM2] In-memory PM2 is out-of-date\n[{\"pm_id\":0,\"name\":\"a\",\"pm2_env\":{\"status\":\"online\"}}]");
        let state = read(f.path()).unwrap();
        assert_eq!(state.processes.len(), 1);
        let summary = read_with(f.path(), Detail::Summary).unwrap();
        assert_eq!(summary.processes[0].name, "a");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for text in ["", "{}", "[1,2", "[{\"name\":\"a\"}]"] {
            let f = write(text);
            let err = read(f.path()).unwrap_err().to_string();
            assert!(err.contains("is not `pm2 jlist` output"), "{err}");
        }
        let err = read(Path::new("/nonexistent/jlist.json")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read live snapshot"));
    }
}
