//! One ecosystem file, read in whichever format it is written, as a JSON document
//! plus the source positions of its keys and values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::load;
use super::source::{Location, SourceFile, SourceMap};

/// Files larger than this are refused (counted while reading) (an ecosystem file is a few KB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Nesting deeper than this is refused (protects the parsers' stacks).
pub const MAX_DEPTH: usize = 64;

/// The formats PM2 reads, plus TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.js`, `.cjs`, `.mjs`: evaluated by `node`, as PM2 does.
    JavaScript,
    /// `.json` (and `.json5`): read leniently, as PM2's `vm` evaluation does.
    Json,
    /// `.yaml`, `.yml`.
    Yaml,
    /// `.toml`.
    Toml,
}

impl Format {
    /// The format named by a file's extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "js" | "cjs" | "mjs" => Self::JavaScript,
            "json" | "json5" => Self::Json,
            "yaml" | "yml" => Self::Yaml,
            "toml" => Self::Toml,
            _ => return None,
        })
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::JavaScript => "JavaScript",
            Self::Json => "JSON",
            Self::Yaml => "YAML",
            Self::Toml => "TOML",
        }
    }
}

/// How to load: whether JavaScript may run, and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `false` with `--no-js` or `allow_js = false`.
    pub allow_js: bool,
    /// Deadline for evaluating a JavaScript file.
    pub js_timeout: Duration,
    /// Where symlinks may lead: the project directory (in pull mode, the checkout).
    /// `None`: each file's own directory.
    pub scope: Option<PathBuf>,
    /// Files must lie inside `scope` (those reconcile.toml names; not the files an
    /// operator names on the command line).
    pub confine: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { allow_js: true, js_timeout: Duration::from_secs(5), scope: None, confine: false }
    }
}

/// A key written twice in one mapping: PM2 silently keeps the last one.
#[derive(Debug, Clone)]
pub struct DuplicateKey {
    /// Pointer of the key.
    pub pointer: String,
    /// Where it is written the second (or later) time.
    pub location: Location,
    /// Where it was first written.
    pub first: Location,
}

/// A parsed ecosystem file.
#[derive(Debug, Clone)]
pub struct EcosystemFile {
    /// The text and its line index.
    pub source: SourceFile,
    /// How it was read.
    pub format: Format,
    /// The document as JSON.
    pub document: Value,
    /// Where each pointer is written. For JavaScript, positions are found by searching
    /// the source for the keys (best effort: computed values point at their key).
    pub map: SourceMap,
    /// Keys written twice.
    pub duplicates: Vec<DuplicateKey>,
    /// An ES module whose apps are only its `export default`, which PM2 7.0.4 reads
    /// with `require()` and finds no apps in (rule `pm2-refuses`).
    pub esm_default: bool,
}

/// Why a file could not be loaded. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unknown ecosystem file type; use .js, .cjs, .mjs, .json, .yaml, .yml or .toml")]
    UnknownFormat { path: PathBuf },
    /// Not a regular file, a symlink out of the project, or over the size limit.
    #[error(transparent)]
    File(#[from] super::read::ReadError),
    #[error("{path}: file is empty; it must hold `apps: [...]` or a list of apps")]
    Empty { path: PathBuf },
    #[error("{path}:{line}:{column}: invalid {format}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, format: &'static str, message: String },
    #[error("{path}:{line}:{column}: nesting deeper than {max} levels is refused")]
    TooDeep { path: PathBuf, line: usize, column: usize, max: usize },
    #[error(
        "{path}: refusing to evaluate JavaScript (--no-js or [project] allow_js = false); \
         convert the file to JSON, YAML or TOML, or lint it where running its code is safe"
    )]
    JsDisabled { path: PathBuf },
    #[error("{path}: cannot run node to evaluate it ({source}); install Node.js, or use a JSON/YAML/TOML ecosystem file")]
    NodeMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: evaluating it did not finish within {after:?}; does it wait on a server, a timer or stdin?")]
    JsTimeout { path: PathBuf, after: Duration },
    #[error("{path}{}: {message}", location.map(|l| format!(":{}:{}", l.line, l.column)).unwrap_or_default())]
    JsFailed { path: PathBuf, location: Option<Location>, message: String },
}

impl LoadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::UnknownFormat { path }
            | Self::Empty { path }
            | Self::Syntax { path, .. }
            | Self::TooDeep { path, .. }
            | Self::JsDisabled { path }
            | Self::NodeMissing { path, .. }
            | Self::JsTimeout { path, .. }
            | Self::JsFailed { path, .. } => path,
            Self::File(error) => error.path(),
        }
    }

    /// Line and column, where the error has one.
    pub fn location(&self) -> Option<Location> {
        match self {
            Self::Syntax { line, column, .. } | Self::TooDeep { line, column, .. } => {
                Some(Location { line: *line, column: *column })
            }
            Self::JsFailed { location, .. } => *location,
            _ => None,
        }
    }
}

impl EcosystemFile {
    /// Reads and parses one ecosystem file.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self, LoadError> {
        let format = Format::from_path(path).ok_or_else(|| LoadError::UnknownFormat { path: path.into() })?;
        if options.confine
            && let Some(scope) = &options.scope
        {
            super::read::confined(path, scope)?;
        }
        let bytes = super::read::read_bytes(path, options.scope.as_deref(), MAX_FILE_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|err| {
            let source = SourceFile::new(path, String::from_utf8_lossy(err.as_bytes()).into_owned());
            let at = source.location(err.utf8_error().valid_up_to());
            LoadError::Syntax {
                path: path.into(),
                line: at.line,
                column: at.column,
                format: format.name(),
                message: "the file is not UTF-8 text".into(),
            }
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
        Self::parse(path, text, format, options)
    }

    /// Parses text already read.
    pub fn parse(path: &Path, text: String, format: Format, options: &LoadOptions) -> Result<Self, LoadError> {
        let source = SourceFile::new(path, text);
        if source.text.trim().is_empty() {
            return Err(LoadError::Empty { path: path.into() });
        }
        let parsed = match format {
            Format::Json => load::json::parse(&source)?,
            Format::Yaml => load::yaml::parse(&source)?,
            Format::Toml => load::toml::parse(&source)?,
            Format::JavaScript => load::js::evaluate(&source, options)?,
        };
        // Every secret the file holds is known before anything about it is printed.
        crate::redact::learn_document(&parsed.document);
        if parsed.document.is_null() {
            return Err(LoadError::Empty { path: path.into() });
        }
        Ok(Self { source, format, document: parsed.document, map: parsed.map, duplicates: parsed.duplicates, esm_default: parsed.esm_default })
    }
}

/// What a format loader returns.
#[derive(Debug, Default)]
pub struct Parsed {
    pub document: Value,
    pub map: SourceMap,
    pub duplicates: Vec<DuplicateKey>,
    pub esm_default: bool,
}
