//! Rust backend: the same `impl herald_client::Event` blocks `herald-build`
//! appends in a build script, as a standalone file for projects that run
//! protoc (or buf) with protoc-gen-prost instead of a build script.

use crate::{GENERATED_NOTICE, OutputFile, Request, check_params};

/// One `<proto file stem>.herald.rs` per file that declares events; include
/// it in the module prost generated for the package.
pub fn generate(request: &Request) -> Result<Vec<OutputFile>, String> {
    check_params(request, &[])?;
    let mut out = Vec::new();
    for file in &request.files {
        let events: Vec<_> = request.events_in(file).map(|e| &e.spec).collect();
        if events.is_empty() {
            continue;
        }
        let name = file.name().trim_end_matches(".proto");
        out.push(OutputFile {
            name: format!("{name}.herald.rs"),
            content: format!(
                "// {GENERATED_NOTICE}\n// source: {}\n{}",
                file.name(),
                herald_build::render(events)
            ),
        });
    }
    Ok(out)
}
