//! go backend: typed producers and consumers for the go SDK
//! (sdks/go). Being written; until then it says so.

use crate::{OutputFile, Request};

/// Generates the go files for `request`.
pub fn generate(_request: &Request) -> Result<Vec<OutputFile>, String> {
    Err("protoc-gen-herald: lang=go is not available yet".to_owned())
}
