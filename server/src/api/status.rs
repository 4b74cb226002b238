//! The one place broker and storage errors become gRPC statuses, each with
//! a `herald.v1.ErrorDetail` so clients can branch on the code.

use herald::v1::{ErrorCode, ErrorDetail};
use herald::{error_detail, status_with_detail};
use tonic::Code;

use super::wire::SubscribeReply;
use super::wire::subscribe_reply::Response as ServerMessage;
use crate::broker::BrokerError;
use crate::broker::error::StorageFault;

/// The status for a broker error.
pub(crate) fn to_status(error: &BrokerError) -> tonic::Status {
    status_with_detail(&to_detail(error))
}

/// So handlers answer a broker error with `?`.
impl From<BrokerError> for tonic::Status {
    fn from(error: BrokerError) -> Self {
        to_status(&error)
    }
}

/// The error detail for a broker error (also sent inline on streams).
pub(crate) fn to_detail(error: &BrokerError) -> ErrorDetail {
    let (code, herald_code, metadata): (Code, ErrorCode, Vec<(&str, String)>) = match error {
        BrokerError::InvalidTopicName { name, .. } => (
            Code::InvalidArgument,
            ErrorCode::InvalidTopicName,
            vec![("topic", name.clone())],
        ),
        BrokerError::EmptyBatch { topic } => (
            Code::InvalidArgument,
            ErrorCode::EmptyBatch,
            vec![("topic", topic.clone())],
        ),
        BrokerError::EventTooLarge {
            topic,
            index,
            size,
            limit,
            ..
        } => (
            Code::InvalidArgument,
            ErrorCode::EventTooLarge,
            vec![
                ("topic", topic.clone()),
                ("index", index.to_string()),
                ("size", size.to_string()),
                ("limit", limit.to_string()),
            ],
        ),
        BrokerError::InvalidEvent { index, .. } => (
            Code::InvalidArgument,
            ErrorCode::InvalidEvent,
            vec![("index", index.to_string())],
        ),
        BrokerError::TopicNotFound { topic, .. } => (
            Code::NotFound,
            ErrorCode::TopicNotFound,
            vec![("topic", topic.clone())],
        ),
        BrokerError::PartitionOutOfRange {
            topic,
            partition,
            partitions,
        } => (
            Code::InvalidArgument,
            ErrorCode::InvalidRequest,
            vec![
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
                ("partitions", partitions.to_string()),
            ],
        ),
        BrokerError::TopicDeleted { topic } => (
            Code::NotFound,
            ErrorCode::TopicDeleted,
            vec![("topic", topic.clone())],
        ),
        BrokerError::TopicAlreadyExists { topic } => (
            Code::AlreadyExists,
            ErrorCode::TopicAlreadyExists,
            vec![("topic", topic.clone())],
        ),
        BrokerError::PartitionCountChange {
            topic,
            current,
            requested,
        } => (
            Code::FailedPrecondition,
            ErrorCode::PartitionCountChange,
            vec![
                ("topic", topic.clone()),
                ("current", current.to_string()),
                ("requested", requested.to_string()),
            ],
        ),
        BrokerError::ImmutableSetting { topic, setting } => (
            Code::FailedPrecondition,
            ErrorCode::ImmutableTopicSetting,
            vec![("topic", topic.clone()), ("setting", setting.to_string())],
        ),
        BrokerError::InvalidConfig { .. } => {
            (Code::InvalidArgument, ErrorCode::InvalidTopicConfig, vec![])
        }
        BrokerError::ShuttingDown => (Code::Unavailable, ErrorCode::ShuttingDown, vec![]),
        BrokerError::InvalidSubscriptionName { name, .. } => (
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionName,
            vec![("subscription", name.clone())],
        ),
        BrokerError::SubscriptionNotFound {
            topic,
            subscription,
        } => (
            Code::NotFound,
            ErrorCode::SubscriptionNotFound,
            vec![
                ("topic", topic.clone()),
                ("subscription", subscription.clone()),
            ],
        ),
        BrokerError::SubscriptionAlreadyExists {
            topic,
            subscription,
        } => (
            Code::AlreadyExists,
            ErrorCode::SubscriptionAlreadyExists,
            vec![
                ("topic", topic.clone()),
                ("subscription", subscription.clone()),
            ],
        ),
        BrokerError::SubscriptionTypeMismatch {
            subscription,
            existing,
            requested,
        } => (
            Code::FailedPrecondition,
            ErrorCode::SubscriptionTypeMismatch,
            vec![
                ("subscription", subscription.clone()),
                ("existing", existing.clone()),
                ("requested", requested.clone()),
            ],
        ),
        BrokerError::ExclusiveConsumerAttached {
            subscription,
            holder,
        } => (
            Code::FailedPrecondition,
            ErrorCode::ExclusiveConsumerAttached,
            vec![
                ("subscription", subscription.clone()),
                ("holder", holder.clone()),
            ],
        ),
        BrokerError::ConsumerNameTaken { subscription, name } => (
            Code::AlreadyExists,
            ErrorCode::ConsumerNameTaken,
            vec![
                ("subscription", subscription.clone()),
                ("consumer", name.clone()),
            ],
        ),
        BrokerError::SubscriptionHasConsumers {
            subscription,
            consumers,
        } => (
            Code::FailedPrecondition,
            ErrorCode::SubscriptionHasConsumers,
            vec![
                ("subscription", subscription.clone()),
                ("consumers", consumers.to_string()),
            ],
        ),
        BrokerError::SeekPastEnd {
            partition,
            offset,
            next_offset,
        } => (
            Code::InvalidArgument,
            ErrorCode::SeekPastEnd,
            vec![
                ("partition", partition.to_string()),
                ("offset", offset.to_string()),
                ("next_offset", next_offset.to_string()),
            ],
        ),
        BrokerError::InvalidSubscriptionConfig { .. } => (
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionConfig,
            vec![],
        ),
        BrokerError::SubscriptionClosed => {
            (Code::Unavailable, ErrorCode::SubscriptionClosed, vec![])
        }
        BrokerError::CorruptMetadata { what, .. } => (
            Code::DataLoss,
            ErrorCode::StorageFailure,
            vec![("record", what.clone())],
        ),
        BrokerError::Storage {
            topic, partition, ..
        } => {
            let (code, herald_code) = storage_codes(error.storage_fault());
            (
                code,
                herald_code,
                vec![
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ],
            )
        }
        BrokerError::Metadata { .. } => {
            let (code, herald_code) = storage_codes(error.storage_fault());
            (code, herald_code, vec![])
        }
    };
    if code == Code::Internal {
        tracing::error!(error = %error, "request failed in storage");
    }
    error_detail(
        code,
        herald_code,
        message(error),
        metadata.into_iter().map(|(k, v)| (k.to_owned(), v)),
    )
}

fn storage_codes(fault: Option<StorageFault>) -> (Code, ErrorCode) {
    match fault {
        Some(StorageFault::Full) => (Code::ResourceExhausted, ErrorCode::StorageFull),
        Some(StorageFault::RecordTooLarge) => (Code::InvalidArgument, ErrorCode::EventTooLarge),
        Some(StorageFault::Closed) => (Code::Unavailable, ErrorCode::ShuttingDown),
        _ => (Code::Internal, ErrorCode::StorageFailure),
    }
}

fn message(error: &BrokerError) -> String {
    match error.storage_fault() {
        Some(StorageFault::Full) => format!(
            "{error}; nothing of this request was stored; free space on the broker's data volume (or lower retention) and retry"
        ),
        Some(StorageFault::RecordTooLarge) => {
            format!("{error}; send smaller batches to this topic")
        }
        Some(StorageFault::Closed) => {
            format!("{error}; the topic was deleted or the broker is shutting down")
        }
        _ => error.to_string(),
    }
}

/// A request field the api layer itself rejects (before the broker).
pub(crate) fn invalid_request(message: impl Into<String>) -> tonic::Status {
    status_with_detail(&error_detail(
        Code::InvalidArgument,
        ErrorCode::InvalidRequest,
        message,
        [],
    ))
}

/// The status for an oversize request, given tonic's original message.
pub(crate) fn request_too_large(original: &str, max_request_bytes: usize) -> tonic::Status {
    status_with_detail(&error_detail(
        Code::ResourceExhausted,
        ErrorCode::RequestTooLarge,
        format!(
            "request too large ({original}); this server accepts requests up to {max_request_bytes} bytes: send smaller batches or raise the server's --max-request-bytes"
        ),
        [("limit".to_owned(), max_request_bytes.to_string())],
    ))
}

/// The status for a request that does not decode, given tonic's message.
pub(crate) fn undecodable_request(original: &str) -> tonic::Status {
    tracing::debug!(error = %original, "refused an undecodable request");
    status_with_detail(&error_detail(
        Code::InvalidArgument,
        ErrorCode::InvalidRequest,
        format!(
            "the request is not a valid Herald message ({original}); build the client from Herald's .proto files (proto/herald/v1, also served by gRPC reflection)"
        ),
        [],
    ))
}

/// A malformed stream (wrong first message, second attach): the stream ends.
pub(crate) fn protocol_violation(message: &str) -> tonic::Status {
    status_with_detail(&error_detail(
        Code::InvalidArgument,
        ErrorCode::ProtocolViolation,
        message,
        [],
    ))
}

/// A bad request that does not end the stream, answered inline.
pub(crate) fn inline_error(code: ErrorCode, message: &str) -> SubscribeReply {
    SubscribeReply {
        response: Some(ServerMessage::Error(error_detail(
            Code::InvalidArgument,
            code,
            message,
            [],
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald::StatusExt;

    use super::*;
    use crate::storage::StorageError;

    #[test]
    fn disk_full_is_resource_exhausted_with_storage_full_code() {
        let error = BrokerError::Storage {
            topic: "t".into(),
            partition: 0,
            source: Arc::new(StorageError::io(
                "appending",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            )),
        };
        let status = to_status(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.herald_code(), ErrorCode::StorageFull);
        assert!(
            status.message().contains("free space"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn unknown_topic_is_not_found_with_topic_in_metadata() {
        let status = to_status(&BrokerError::TopicNotFound {
            topic: "orders".into(),
            hint: "",
        });
        assert_eq!(status.code(), Code::NotFound);
        let detail = status.herald_detail().unwrap();
        assert_eq!(
            detail.metadata.get("topic").map(String::as_str),
            Some("orders")
        );
    }
}
