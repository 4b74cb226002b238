//! tonic's own refusals of a request, before any handler runs: an oversize
//! message gets OUT_OF_RANGE and bytes that do not decode get INTERNAL, both
//! without a Herald detail. These turn them into what Herald answers for bad
//! input everywhere else: RESOURCE_EXHAUSTED with `ERROR_CODE_REQUEST_TOO_LARGE`,
//! and INVALID_ARGUMENT with `ERROR_CODE_INVALID_REQUEST`, each with a
//! message that says what to do.

use tonic::Code;

use super::status;
use tonic::codegen::http;

/// The phrase tonic's decoder uses for an oversize message (checked by the
/// `request_over_the_max_message_size_is_resource_exhausted` e2e test).
const TONIC_TOO_LARGE: &str = "message length too large";

/// True when `status` is tonic's oversize-message refusal.
pub(crate) fn is_tonic_too_large(status: &tonic::Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE)
}

/// How prost's decode error, which tonic answers as INTERNAL, begins
/// (checked by the `undecodable_requests_are_invalid_argument_on_every_rpc`
/// e2e test).
const TONIC_UNDECODABLE: &str = "failed to decode Protobuf message";

/// True when `status` is tonic's refusal of bytes that do not decode.
pub(crate) fn is_tonic_undecodable(status: &tonic::Status) -> bool {
    status.code() == Code::Internal && status.message().starts_with(TONIC_UNDECODABLE)
}

/// Herald's status for one of tonic's refusals of an inbound message, or
/// `status` itself when it is none (e.g. the client reset the stream).
pub(crate) fn inbound_refusal(status: tonic::Status, max_request_bytes: usize) -> tonic::Status {
    if is_tonic_too_large(&status) {
        status::request_too_large(status.message(), max_request_bytes)
    } else if is_tonic_undecodable(&status) {
        status::undecodable_request(status.message())
    } else {
        status
    }
}

/// Rewrites a trailers-only refusal (oversize or undecodable request) in a
/// response to a unary request: unary and server-streaming calls.
pub(crate) fn rewrite_response<B: Default>(
    response: http::Response<B>,
    max_request_bytes: usize,
) -> http::Response<B> {
    match tonic::Status::from_header_map(response.headers()) {
        Some(status) if is_tonic_too_large(&status) || is_tonic_undecodable(&status) => {
            inbound_refusal(status, max_request_bytes).into_http()
        }
        _ => response,
    }
}
