//! Compiles `proto/herald/v1/*.proto` into Rust types and tonic services
//! without a system `protoc` (protox parses the files in-process), and writes
//! the encoded file descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("herald/v1"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();

    println!("cargo:rerun-if-changed=proto");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("herald_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .bytes(".herald.v1.Event.data")
        .compile_fds(fds)?;
    Ok(())
}
