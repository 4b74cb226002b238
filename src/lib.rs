//! Herald's gRPC contract for Rust: the types and tonic services generated
//! from `proto/herald/v1`, the encoded file descriptor set (for reflection),
//! and the helpers that put an [`v1::ErrorDetail`] into a gRPC status and
//! take it out again.
//!
//! Everything here is generated or wire-level; the broker lives in
//! `herald-server` and the typed client in `herald-client`.

pub mod endpoint;
pub mod error_detail;
pub mod event_field;
pub mod trace_context;

/// Generated types and services of package `herald.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

/// The encoded `FileDescriptorSet` of every `herald.v1` file (and the
/// well-known types they import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");

pub use error_detail::{StatusExt, error_detail, status_with_detail};

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_lists_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "herald.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        for name in ["Publisher", "Subscriber", "Admin"] {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
    }
}
