//! [`ClientError`]: every way a client call can fail, with the Herald
//! [`ErrorCode`] exposed so callers branch on the cause, not on messages.

use std::time::Duration;

use herald::StatusExt;
use herald::v1::{ErrorCode, ErrorDetail};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What the URI parser said.
        #[source]
        source: tonic::transport::Error,
    },
    /// Could not connect (refused, unreachable, or no answer within the
    /// connect timeout).
    #[error("cannot connect to {endpoint} (connect timeout {timeout:?}): {source}")]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// The connect timeout in force.
        timeout: Duration,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered a call with an error status; [`ClientError::code`]
    /// (or [`StatusExt::herald_code`]) tells which Herald error it is.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The server refused a request without ending the stream it came on
    /// (an inline `ErrorDetail`), e.g. [`ErrorCode::EventTooLarge`].
    #[error("rejected ({code:?}): {message}")]
    Rejected {
        /// Which Herald error it is; branch on this.
        code: ErrorCode,
        /// The gRPC code the server would have ended a unary call with.
        grpc_code: tonic::Code,
        /// A sentence a person can act on.
        message: String,
    },
    /// A call did not complete within the client's request timeout. It may
    /// still have taken effect on the server.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An event's payload is not a valid encoding of the expected message.
    #[error("cannot decode event {id} as {schema}: {source}")]
    Decode {
        /// The event id.
        id: String,
        /// The message type expected.
        schema: String,
        /// What prost said.
        #[source]
        source: prost::DecodeError,
    },
    /// The producer or consumer was closed (or its background task ended).
    #[error("closed: {0}")]
    Closed(&'static str),
}

impl ClientError {
    /// The Herald error code behind this error, [`ErrorCode::Unspecified`]
    /// when it did not come from the server.
    ///
    /// ```
    /// use herald_client::{ClientError, v1::ErrorCode};
    /// let e = ClientError::Rejected {
    ///     code: ErrorCode::EventTooLarge,
    ///     grpc_code: tonic::Code::InvalidArgument,
    ///     message: "too big".into(),
    /// };
    /// assert_eq!(e.code(), ErrorCode::EventTooLarge);
    /// assert_eq!(e.grpc_code(), tonic::Code::InvalidArgument);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Status(status) => status.herald_code(),
            ClientError::Rejected { code, .. } => *code,
            _ => ErrorCode::Unspecified,
        }
    }

    /// The gRPC status code behind this error: the call's status, or the
    /// one a refused request carries; `Unavailable` for connection
    /// failures and timeouts, `Unknown` for the rest.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ClientError::Status(status) => status.code(),
            ClientError::Rejected { grpc_code, .. } => *grpc_code,
            ClientError::Connect { .. } | ClientError::Timeout(_) => tonic::Code::Unavailable,
            ClientError::Closed(_) => tonic::Code::Cancelled,
            ClientError::InvalidEndpoint { .. } => tonic::Code::InvalidArgument,
            ClientError::Decode { .. } => tonic::Code::DataLoss,
        }
    }

    /// Whether retrying later (after a reconnect) may succeed: transport
    /// failures and `UNAVAILABLE`, except a subscription deleted under its
    /// consumer ([`ErrorCode::SubscriptionClosed`]), which re-attaching
    /// would silently recreate.
    pub fn is_transient(&self) -> bool {
        if self.code() == ErrorCode::SubscriptionClosed {
            return false;
        }
        match self {
            ClientError::Connect { .. } | ClientError::Timeout(_) => true,
            ClientError::Status(status) => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }

    pub(crate) fn rejected(detail: ErrorDetail) -> Self {
        ClientError::Rejected {
            code: ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unspecified),
            grpc_code: tonic::Code::from_i32(detail.grpc_code),
            message: detail.message,
        }
    }

    /// A copy for fanning one failure out to several callers
    /// (`tonic::transport::Error` and `prost::DecodeError` are not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            ClientError::Status(status) => ClientError::Status(status.clone()),
            ClientError::Rejected {
                code,
                grpc_code,
                message,
            } => ClientError::Rejected {
                code: *code,
                grpc_code: *grpc_code,
                message: message.clone(),
            },
            ClientError::Timeout(d) => ClientError::Timeout(*d),
            ClientError::Closed(what) => ClientError::Closed(what),
            other => ClientError::Status(tonic::Status::unavailable(other.to_string())),
        }
    }
}
