//! One loader per format. Each turns text into a [`Parsed`](super::ecosystem::Parsed)
//! document with positions, or a [`LoadError`](super::ecosystem::LoadError) with one.

pub mod js;
pub mod json;
pub mod toml;
pub mod yaml;
