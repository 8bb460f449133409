//! Reading files as they are written: `reconcile.toml` and ecosystem files in every
//! format, with the source positions that diagnostics point at. Nothing here
//! interprets PM2 semantics; that is `desired`.

pub mod ecosystem;
pub mod git;
pub mod load;
pub mod project;
pub mod read;
pub mod source;

pub use ecosystem::{EcosystemFile, Format, LoadError, LoadOptions};
pub use project::{Project, ProjectError};
pub use source::{Location, SourceFile, SourceMap};
