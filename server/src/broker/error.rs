//! The broker's typed errors. The api layer maps each variant to a gRPC
//! status in exactly one place (`api::status`).

use std::sync::Arc;

use crate::storage::StorageError;

/// Why a broker operation failed. Cloneable (sources sit behind `Arc`) so
/// one failure can be told to every consumer of a subscription without
/// losing its kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "invalid topic name {name:?}: {reason}; use 1-249 characters of letters, digits, '.', '_' or '-'"
    )]
    InvalidTopicName { name: String, reason: &'static str },

    #[error("publish to topic {topic:?} carried no events; send at least one")]
    EmptyBatch { topic: String },

    #[error(
        "event at index {index} ({}) is {size} bytes, over topic {topic:?}'s max_event_bytes of {limit}; split the payload or raise the topic's max_event_bytes",
        describe_id(id)
    )]
    EventTooLarge {
        topic: String,
        index: usize,
        id: String,
        size: usize,
        limit: u32,
    },

    #[error("event at index {index} is invalid: {reason}")]
    InvalidEvent { index: usize, reason: String },

    #[error("topic {topic:?} does not exist; create it with Admin.CreateTopic{hint}")]
    TopicNotFound { topic: String, hint: &'static str },

    #[error(
        "topic {topic:?} has partitions 0-{}; partition {partition} does not exist",
        partitions.saturating_sub(1)
    )]
    PartitionOutOfRange {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error("topic {topic:?} was deleted while this call was using it")]
    TopicDeleted { topic: String },

    #[error("topic {topic:?} already exists")]
    TopicAlreadyExists { topic: String },

    #[error(
        "topic {topic:?} has {current} partitions and cannot change to {requested}: that would move keys across partitions and break per-key order; create a new topic instead"
    )]
    PartitionCountChange {
        topic: String,
        current: u32,
        requested: u32,
    },

    #[error(
        "topic {topic:?}: {setting} is fixed when the topic is created and cannot be updated; create a new topic with the setting you need"
    )]
    ImmutableSetting {
        topic: String,
        setting: &'static str,
    },

    #[error("invalid topic configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("the broker is shutting down; retry after it restarts")]
    ShuttingDown,

    #[error(
        "invalid subscription name {name:?}: {reason}; use 1-249 characters of letters, digits, '.', '_' or '-'"
    )]
    InvalidSubscriptionName { name: String, reason: &'static str },

    #[error("subscription {subscription:?} does not exist on topic {topic:?}")]
    SubscriptionNotFound { topic: String, subscription: String },

    #[error("subscription {subscription:?} already exists on topic {topic:?}")]
    SubscriptionAlreadyExists { topic: String, subscription: String },

    #[error(
        "subscription {subscription:?} is {existing}, not {requested}; attach with type {existing} or use another subscription name"
    )]
    SubscriptionTypeMismatch {
        subscription: String,
        existing: String,
        requested: String,
    },

    #[error(
        "exclusive subscription {subscription:?} already has consumer {holder:?}; use a shared, failover or key_shared subscription for several consumers"
    )]
    ExclusiveConsumerAttached {
        subscription: String,
        holder: String,
    },

    #[error(
        "subscription {subscription:?} already has a consumer named {name:?}; consumer names must be unique"
    )]
    ConsumerNameTaken { subscription: String, name: String },

    #[error(
        "subscription {subscription:?} has {consumers} connected consumer(s); disconnect them first or delete with force"
    )]
    SubscriptionHasConsumers {
        subscription: String,
        consumers: u64,
    },

    #[error(
        "cannot seek partition {partition} to offset {offset}: it is past the end (next offset {next_offset})"
    )]
    SeekPastEnd {
        partition: u32,
        offset: u64,
        next_offset: u64,
    },

    #[error("invalid subscription setting: {reason}")]
    InvalidSubscriptionConfig { reason: String },

    #[error("the subscription was closed (deleted, or its topic was deleted)")]
    SubscriptionClosed,

    #[error("storage of topic {topic:?} partition {partition} failed: {source}")]
    Storage {
        topic: String,
        partition: u32,
        #[source]
        source: Arc<StorageError>,
    },

    #[error("storage failed: {source}")]
    Metadata {
        #[source]
        source: Arc<StorageError>,
    },

    #[error(
        "stored {what} is unreadable: {reason}; the data directory is damaged or was written by a newer Herald: restore it from a backup or run the release that wrote it"
    )]
    CorruptMetadata { what: String, reason: String },
}

/// An event's id for a message: `id "e1"`, or `no id` when the producer
/// left it to the broker.
fn describe_id(id: &str) -> String {
    if id.is_empty() {
        "no id".to_owned()
    } else {
        format!("id {id:?}")
    }
}

impl BrokerError {
    /// A failure reading or resolving a partition of `topic`: a closed log
    /// means the topic was deleted under the reader; anything else is a
    /// storage failure of that partition.
    pub fn from_partition(topic: &str, partition: u32, source: StorageError) -> Self {
        match source {
            StorageError::Closed => BrokerError::TopicDeleted {
                topic: topic.to_owned(),
            },
            source => BrokerError::Storage {
                topic: topic.to_owned(),
                partition,
                source: Arc::new(source),
            },
        }
    }

    /// A failure reading or writing the broker's own records.
    pub fn metadata(source: StorageError) -> Self {
        BrokerError::Metadata {
            source: Arc::new(source),
        }
    }

    /// The kind of storage failure underneath, if this is one.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        Some(match self.storage_error()? {
            StorageError::Full { .. } => StorageFault::Full,
            StorageError::RecordTooLarge { .. } => StorageFault::RecordTooLarge,
            StorageError::Closed => StorageFault::Closed,
            _ => StorageFault::Failed,
        })
    }

    /// The storage error underneath, if this is one.
    pub fn storage_error(&self) -> Option<&StorageError> {
        match self {
            BrokerError::Storage { source, .. } => Some(source),
            BrokerError::Metadata { source } => Some(source),
            _ => None,
        }
    }
}

/// What kind of storage failure a [`BrokerError`] carries, for callers
/// that answer each kind differently (the api layer's status mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The data volume is full; nothing of the failed write was stored.
    Full,
    /// One record can never fit in a segment.
    RecordTooLarge,
    /// The log was closed (topic deleted or shutting down).
    Closed,
    /// Any other I/O failure or corruption.
    Failed,
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
