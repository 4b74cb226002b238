//! Plugin tests: requests are built the way protoc builds them (protox
//! compiles the sources; the encoded descriptors keep the options), so
//! every backend can be tested without a protoc binary.

use prost::Message;

use super::*;

/// A `CodeGeneratorRequest` for `sources` (name, text), generating all of
/// them, with Herald's `proto/` on the import path.
pub(crate) fn request(sources: &[(&str, &str)], parameter: &str) -> Vec<u8> {
    let dir = tempfile_dir();
    for (name, text) in sources {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let herald_proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let mut compiler = protox::Compiler::new([dir.as_path(), herald_proto.as_ref()]).unwrap();
    compiler.include_imports(true);
    let names: Vec<&str> = sources.iter().map(|(n, _)| *n).collect();
    compiler.open_files(&names).unwrap();
    let set = RawSet::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    RawRequest {
        file_to_generate: names.iter().map(|n| n.to_string()).collect(),
        parameter: Some(parameter.to_owned()),
        proto_file: set.file,
    }
    .encode_to_vec()
}

/// Runs the plugin and returns its files or its error.
pub(crate) fn run_plugin(
    sources: &[(&str, &str)],
    parameter: &str,
) -> Result<Vec<OutputFile>, String> {
    generate(&request(sources, parameter))
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "herald-codegen-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An annotated file used by the tests of every backend.
pub(crate) const SIGNUP: (&str, &str) = (
    "acme/signup/v1/signup.proto",
    r#"syntax = "proto3";
package acme.signup.v1;
import "herald/v1/options.proto";
option go_package = "example.com/acme/signup/v1;signupv1";

message UserSignedUp {
  option (herald.v1.event) = {
    topic: "user.signup"
    type: "com.acme.user.signed_up"
    source: "/services/signup"
    key_field: "user_id"
  };
  string user_id = 1;
  string email = 2;
}

message PlainMessage { string x = 1; }

message AccountEvents {
  message Closed {
    option (herald.v1.event) = { topic: "account.closed" };
    uint64 account_id = 1;
  }
}
"#,
);

#[test]
fn lang_is_required() {
    let err = run_plugin(&[SIGNUP], "").unwrap_err();
    assert!(err.contains("`lang` parameter"), "{err}");
}

#[test]
fn unknown_language_is_named() {
    let err = run_plugin(&[SIGNUP], "lang=cobol").unwrap_err();
    assert!(err.contains("unknown language `cobol`"), "{err}");
}

#[test]
fn repeated_parameter_is_refused() {
    let err = run_plugin(&[SIGNUP], "lang=rust,lang=go").unwrap_err();
    assert!(err.contains("`lang` is given twice"), "{err}");
}

#[test]
fn unknown_parameter_is_refused_by_the_backend() {
    let err = run_plugin(&[SIGNUP], "lang=rust,colour=blue").unwrap_err();
    assert!(err.contains("unknown parameter `colour`"), "{err}");
}

#[test]
fn invalid_option_is_reported_with_the_message_name() {
    let bad = (
        "bad.proto",
        r#"syntax = "proto3";
import "herald/v1/options.proto";
message Bad { option (herald.v1.event) = { topic: "t" key_field: "nope" }; string x = 1; }
"#,
    );
    let err = run_plugin(&[bad], "lang=rust").unwrap_err();
    assert!(
        err.contains("message Bad") && err.contains("`nope`"),
        "{err}"
    );
}

#[test]
fn events_keep_their_descriptors_and_key_field() {
    let raw = request(&[SIGNUP], "lang=rust");
    let raw = RawRequest::decode(raw.as_slice()).unwrap();
    let mut pool = DescriptorPool::new();
    for f in &raw.proto_file {
        pool.decode_file_descriptor_proto(f.as_slice()).unwrap();
    }
    let events = herald_build::find_events(&pool, &raw.file_to_generate).unwrap();
    let names: Vec<_> = events.iter().map(|e| e.full_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme.signup.v1.UserSignedUp",
            "acme.signup.v1.AccountEvents.Closed"
        ]
    );
}

#[test]
fn rust_backend_emits_the_event_impls_per_file() {
    let files = run_plugin(&[SIGNUP], "lang=rust").unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "acme/signup/v1/signup.herald.rs");
    let code = &files[0].content;
    assert!(code.starts_with(&format!("// {GENERATED_NOTICE}")));
    assert!(code.contains("impl ::herald_client::Event for UserSignedUp"));
    assert!(code.contains("const TOPIC: &'static str = \"user.signup\";"));
    assert!(code.contains("impl ::herald_client::Event for account_events::Closed"));
    assert!(!code.contains("PlainMessage"));
}

#[test]
fn files_without_events_produce_nothing() {
    let plain = (
        "plain.proto",
        "syntax = \"proto3\";\nmessage P { string x = 1; }\n",
    );
    assert_eq!(run_plugin(&[plain], "lang=rust").unwrap(), Vec::new());
}
