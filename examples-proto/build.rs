//! Generates the example and interop event types with herald-build, and
//! keeps the interop file descriptors for the agent's canonical JSON.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    herald_build::Builder::new()
        .include("proto")
        .include("../tests/interop/proto")
        .compile(&[
            "proto/acme/signup/v1/signup.proto",
            "proto/acme/transport/v1/transport.proto",
            "../tests/interop/proto/herald/interop/v1/interop.proto",
        ])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(
        ["herald/interop/v1/interop.proto"],
        ["../tests/interop/proto", "../proto"],
    )?;
    std::fs::write(
        out.join("interop_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    Ok(())
}
