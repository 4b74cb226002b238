//! `protoc-gen-herald`: the protoc plugin entry point. protoc writes a
//! `CodeGeneratorRequest` to stdin and reads a `CodeGeneratorResponse` from
//! stdout; everything else lives in the library.

use std::io::{Read, Write};

use prost::Message;

fn main() {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("protoc-gen-herald: cannot read the request from stdin: {e}");
        std::process::exit(1);
    }
    let response = herald_codegen::run(&input);
    if let Err(e) = std::io::stdout().write_all(&response.encode_to_vec()) {
        eprintln!("protoc-gen-herald: cannot write the response to stdout: {e}");
        std::process::exit(1);
    }
}
