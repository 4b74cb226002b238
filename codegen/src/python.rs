//! python backend: typed producers and consumers for the python SDK
//! (sdks/python). Being written; until then it says so.

use crate::{OutputFile, Request};

/// Generates the python files for `request`.
pub fn generate(_request: &Request) -> Result<Vec<OutputFile>, String> {
    Err("protoc-gen-herald: lang=python is not available yet".to_owned())
}
