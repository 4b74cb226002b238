//! Errors on the wire: a gRPC status carries a `google.rpc.Status` in its
//! `grpc-status-details-bin` trailer, whose details hold one
//! `herald.v1.ErrorDetail`. Every gRPC library can decode that, so clients in
//! any language branch on [`ErrorCode`] instead of parsing messages.

use prost::Message;

use crate::v1::{ErrorCode, ErrorDetail};

/// Type URL of `herald.v1.ErrorDetail` inside a `google.protobuf.Any`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/herald.v1.ErrorDetail";

/// `google.rpc.Status`, the standard envelope of status details
/// (declared here by hand: three fields, wire-compatible).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// google.rpc.Code
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details; Herald puts one ErrorDetail here.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// An [`ErrorDetail`] for `code` with `message` and `metadata` pairs.
pub fn error_detail(
    grpc_code: tonic::Code,
    code: ErrorCode,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> ErrorDetail {
    ErrorDetail {
        grpc_code: grpc_code as i32,
        code: code as i32,
        message: message.into(),
        metadata: metadata.into_iter().collect(),
    }
}

/// A `tonic::Status` whose code and message come from `detail`, carrying
/// `detail` in its status details.
pub fn status_with_detail(detail: &ErrorDetail) -> tonic::Status {
    let code = tonic::Code::from_i32(detail.grpc_code);
    let rpc = RpcStatus {
        code: detail.grpc_code,
        message: detail.message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, detail.message.clone(), rpc.encode_to_vec().into())
}

/// Reads Herald's error detail back out of a status.
pub trait StatusExt {
    /// The [`ErrorDetail`] carried in the status details, if any.
    fn herald_detail(&self) -> Option<ErrorDetail>;

    /// The Herald error code, [`ErrorCode::Unspecified`] if none was sent.
    fn herald_code(&self) -> ErrorCode {
        self.herald_detail()
            .and_then(|d| ErrorCode::try_from(d.code).ok())
            .unwrap_or(ErrorCode::Unspecified)
    }
}

impl StatusExt for tonic::Status {
    fn herald_detail(&self) -> Option<ErrorDetail> {
        let rpc = RpcStatus::decode(self.details()).ok()?;
        rpc.details
            .iter()
            .find(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
            .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_round_trips_through_a_status() {
        let detail = error_detail(
            tonic::Code::NotFound,
            ErrorCode::TopicNotFound,
            "topic \"orders\" does not exist",
            [("topic".to_owned(), "orders".to_owned())],
        );
        let status = status_with_detail(&detail);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "topic \"orders\" does not exist");
        assert_eq!(status.herald_detail(), Some(detail));
        assert_eq!(status.herald_code(), ErrorCode::TopicNotFound);
    }

    #[test]
    fn status_without_detail_has_unspecified_code() {
        assert_eq!(
            tonic::Status::internal("x").herald_code(),
            ErrorCode::Unspecified
        );
    }
}
