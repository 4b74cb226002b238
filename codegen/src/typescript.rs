//! typescript backend: typed producers and consumers for the typescript SDK
//! (sdks/typescript). Being written; until then it says so.

use crate::{OutputFile, Request};

/// Generates the typescript files for `request`.
pub fn generate(_request: &Request) -> Result<Vec<OutputFile>, String> {
    Err("protoc-gen-herald: lang=typescript is not available yet".to_owned())
}
