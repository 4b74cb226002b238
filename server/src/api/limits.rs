//! Oversize requests: gRPC's own message-size check refuses them before any
//! handler runs, with OUT_OF_RANGE and no Herald detail. This layer turns
//! that answer into RESOURCE_EXHAUSTED with `ERROR_CODE_REQUEST_TOO_LARGE`
//! and a message that says what to do, like every other Herald error.

use herald::v1::ErrorCode;
use herald::{error_detail, status_with_detail};
use tonic::Code;
use tonic::codegen::http;

/// The phrase tonic's decoder uses for an oversize message (checked by the
/// `request_over_the_max_message_size_is_resource_exhausted` e2e test).
const TONIC_TOO_LARGE: &str = "message length too large";

/// The status for an oversize request, given tonic's original message.
pub fn request_too_large(original: &str, max_request_bytes: usize) -> tonic::Status {
    status_with_detail(&error_detail(
        Code::ResourceExhausted,
        ErrorCode::RequestTooLarge,
        format!(
            "request too large ({original}); this server accepts requests up to {max_request_bytes} bytes: send smaller batches or raise the server's --max-request-bytes"
        ),
        [("limit".to_owned(), max_request_bytes.to_string())],
    ))
}

/// True when `status` is tonic's oversize-message refusal.
pub fn is_tonic_too_large(status: &tonic::Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE)
}

/// Rewrites a trailers-only oversize refusal in a unary response.
pub fn rewrite_response<B: Default>(
    response: http::Response<B>,
    max_request_bytes: usize,
) -> http::Response<B> {
    match tonic::Status::from_header_map(response.headers()) {
        Some(status) if is_tonic_too_large(&status) => {
            request_too_large(status.message(), max_request_bytes).into_http()
        }
        _ => response,
    }
}
