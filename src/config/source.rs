//! Source files with a line index, and maps from JSON pointers to positions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's text and where its lines start, for turning byte offsets into line:column.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user named it (relative paths stay relative for display).
    pub path: PathBuf,
    /// The whole text.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
    /// Whether each line is ASCII, so that its columns are byte offsets. Loaders ask
    /// for the location of every node: counting characters from the line start each
    /// time made a one-line (minified) file quadratic.
    ascii_lines: Vec<bool>,
    /// The line of the last lookup: loaders ask in document order, so the next offset
    /// is almost always on that line or the next, and the bisection is skipped.
    last_line: std::sync::atomic::AtomicUsize,
}

impl Clone for SourceFile {
    fn clone(&self) -> Self {
        Self {
            path: self.path.clone(),
            text: self.text.clone(),
            line_starts: self.line_starts.clone(),
            ascii_lines: self.ascii_lines.clone(),
            last_line: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl SourceFile {
    /// Wraps a file's text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let ascii_lines = line_starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let end = line_starts.get(i + 1).copied().unwrap_or(text.len());
                text.as_bytes().get(start..end).is_some_and(<[u8]>::is_ascii)
            })
            .collect();
        Self { path: path.into(), text, line_starts, ascii_lines, last_line: std::sync::atomic::AtomicUsize::new(0) }
    }

    /// The display path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        use std::sync::atomic::Ordering::Relaxed;
        let offset = offset.min(self.text.len());
        let on = |i: usize| self.line_starts.get(i).is_some_and(|&s| s <= offset) && self.line_starts.get(i + 1).is_none_or(|&e| offset < e);
        let last = self.last_line.load(Relaxed);
        let line_index = if on(last) {
            last
        } else if on(last + 1) {
            last + 1
        } else {
            match self.line_starts.binary_search(&offset) {
                Ok(i) => i,
                Err(i) => i - 1,
            }
        };
        self.last_line.store(line_index, Relaxed);
        let start = self.line_starts[line_index];
        let column = if self.ascii_lines.get(line_index).copied().unwrap_or(false) {
            offset - start + 1
        } else {
            self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1
        };
        Location { line: line_index + 1, column }
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text.get(start..end).map(|l| l.trim_end_matches(['\n', '\r']))
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Positions of the values (and keys) of a parsed document, by JSON pointer
/// (`/apps/0/min_uptime`). Loaders fill it; diagnostics read it.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    values: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl SourceMap {
    /// Records where the value at `pointer` starts.
    pub fn insert_value(&mut self, pointer: String, location: Location) {
        self.values.entry(pointer).or_insert(location);
    }

    /// Records where the key that names `pointer` starts.
    pub fn insert_key(&mut self, pointer: String, location: Location) {
        self.keys.entry(pointer).or_insert(location);
    }

    /// Best position for a finding about `pointer`: its key, else its value, else the
    /// nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        let mut current = pointer;
        loop {
            if let Some(location) = self.keys.get(current).or_else(|| self.values.get(current)) {
                return Some(*location);
            }
            if current.is_empty() {
                return None;
            }
            current = current.rfind('/').map_or("", |i| &current[..i]);
        }
    }

    /// Position of the value itself (for type errors), falling back to [`Self::locate`].
    pub fn locate_value(&self, pointer: &str) -> Option<Location> {
        self.values.get(pointer).copied().or_else(|| self.locate(pointer))
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let file = SourceFile::new("f", "ab\ncdé\r\nx");
        assert_eq!(file.location(0), Location { line: 1, column: 1 });
        assert_eq!(file.location(4), Location { line: 2, column: 2 });
        assert_eq!(file.location(9), Location { line: 3, column: 1 });
        assert_eq!(file.line_text(2), Some("cdé"));
        // Columns count characters on non-ASCII lines, bytes elsewhere.
        assert_eq!(file.location(7), Location { line: 2, column: 4 });
        assert_eq!(file.location(10), Location { line: 3, column: 2 });
        assert_eq!(file.line_text(4), None);
    }

    #[test]
    fn locate_falls_back_to_the_nearest_ancestor() {
        let mut map = SourceMap::default();
        map.insert_value("/apps/0".into(), Location { line: 3, column: 5 });
        map.insert_key("/apps/0/name".into(), Location { line: 4, column: 7 });
        assert_eq!(map.locate("/apps/0/name"), Some(Location { line: 4, column: 7 }));
        assert_eq!(map.locate("/apps/0/env/PORT"), Some(Location { line: 3, column: 5 }));
        assert_eq!(map.locate("/other"), None);
    }
}
