//! The broker's typed errors. The api layer maps each variant to a gRPC
//! status in exactly one place (`api::status`).

use std::sync::Arc;

use crate::storage::StorageError;

/// Why a broker operation failed. Cloneable (sources sit behind `Arc`) so
/// one failure can be told to every consumer of a subscription without
/// losing its kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// A topic name breaks the naming rule.
    #[error(
        "invalid topic name {name:?}: {reason}; use 1-249 characters of letters, digits, '.', '_' or '-'"
    )]
    InvalidTopicName {
        /// The rejected name (its first 300 characters).
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// A publish carried no events.
    #[error("publish to topic {topic:?} carried no events; send at least one")]
    EmptyBatch {
        /// The topic the publish was for.
        topic: String,
    },

    /// An event is larger than its topic's `max_event_bytes`.
    #[error(
        "event at index {index} ({}) is {size} bytes, over topic {topic:?}'s max_event_bytes of {limit}; split the payload or raise the topic's max_event_bytes",
        describe_id(id)
    )]
    EventTooLarge {
        /// The topic the publish was for.
        topic: String,
        /// Position of the event in the publish, from 0.
        index: usize,
        /// The event's id; empty when the producer left it to the broker.
        id: String,
        /// The event's stored size in bytes, with a broker-assigned id
        /// counted when it has none.
        size: usize,
        /// The topic's `max_event_bytes`.
        limit: u32,
    },

    /// An event of a publish could not be parsed or has an overlong id.
    #[error("event at index {index} is invalid: {reason}")]
    InvalidEvent {
        /// Position of the event in the publish, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// The topic does not exist.
    #[error("topic {topic:?} does not exist; create it with Admin.CreateTopic{hint}")]
    TopicNotFound {
        /// The topic asked for.
        topic: String,
        /// Text appended to the message: empty, or why the topic was not
        /// created on the spot.
        hint: &'static str,
    },

    /// A partition number past the topic's last partition.
    #[error(
        "topic {topic:?} has partitions 0-{}; partition {partition} does not exist",
        partitions.saturating_sub(1)
    )]
    PartitionOutOfRange {
        /// The topic asked for.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// The topic was deleted while the call was using it.
    #[error("topic {topic:?} was deleted while this call was using it")]
    TopicDeleted {
        /// The deleted topic.
        topic: String,
    },

    /// A topic of that name already exists.
    #[error("topic {topic:?} already exists")]
    TopicAlreadyExists {
        /// The topic that was to be created.
        topic: String,
    },

    /// An update asked to change a topic's partition count.
    #[error(
        "topic {topic:?} has {current} partitions and cannot change to {requested}: that would move keys across partitions and break per-key order; create a new topic instead"
    )]
    PartitionCountChange {
        /// The topic being updated.
        topic: String,
        /// The topic's partition count.
        current: u32,
        /// The partition count the update asked for.
        requested: u32,
    },

    /// An update asked to change a setting fixed at creation.
    #[error(
        "topic {topic:?}: {setting} is fixed when the topic is created and cannot be updated; create a new topic with the setting you need"
    )]
    ImmutableSetting {
        /// The topic being updated.
        topic: String,
        /// Name of the setting the update asked to change.
        setting: &'static str,
    },

    /// A topic setting is out of its allowed range.
    #[error("invalid topic configuration: {reason}")]
    InvalidConfig {
        /// The setting, its value and the allowed range.
        reason: String,
    },

    /// The broker is shutting down and takes no new work.
    #[error("the broker is shutting down; retry after it restarts")]
    ShuttingDown,

    /// A subscription name breaks the naming rule (the same as for topics).
    #[error(
        "invalid subscription name {name:?}: {reason}; use 1-249 characters of letters, digits, '.', '_' or '-'"
    )]
    InvalidSubscriptionName {
        /// The rejected name (its first 300 characters).
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// The subscription does not exist on the topic.
    #[error("subscription {subscription:?} does not exist on topic {topic:?}")]
    SubscriptionNotFound {
        /// The topic asked for.
        topic: String,
        /// The subscription asked for.
        subscription: String,
    },

    /// A subscription of that name already exists on the topic.
    #[error("subscription {subscription:?} already exists on topic {topic:?}")]
    SubscriptionAlreadyExists {
        /// The subscription's topic.
        topic: String,
        /// The subscription that was to be created.
        subscription: String,
    },

    /// A consumer asked for a different subscription type than the
    /// subscription has.
    #[error(
        "subscription {subscription:?} is {existing}, not {requested}; attach with type {existing} or use another subscription name"
    )]
    SubscriptionTypeMismatch {
        /// The subscription attached to.
        subscription: String,
        /// The subscription's type.
        existing: String,
        /// The type the consumer asked for.
        requested: String,
    },

    /// An exclusive subscription already has its one consumer.
    #[error(
        "exclusive subscription {subscription:?} already has consumer {holder:?}; use a shared, failover or key_shared subscription for several consumers"
    )]
    ExclusiveConsumerAttached {
        /// The subscription attached to.
        subscription: String,
        /// Name of the consumer already attached.
        holder: String,
    },

    /// Another consumer of the subscription has the same name.
    #[error(
        "subscription {subscription:?} already has a consumer named {name:?}; consumer names must be unique"
    )]
    ConsumerNameTaken {
        /// The subscription attached to.
        subscription: String,
        /// The consumer name already in use.
        name: String,
    },

    /// A subscription with connected consumers was deleted without force.
    #[error(
        "subscription {subscription:?} has {consumers} connected consumer(s); disconnect them first or delete with force"
    )]
    SubscriptionHasConsumers {
        /// The subscription to delete.
        subscription: String,
        /// How many consumers are connected.
        consumers: u64,
    },

    /// A seek to an offset past the end of the partition.
    #[error(
        "cannot seek partition {partition} to offset {offset}: it is past the end (next offset {next_offset})"
    )]
    SeekPastEnd {
        /// The partition to seek.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The offset the partition's next event will get.
        next_offset: u64,
    },

    /// A subscription setting is invalid or out of its allowed range.
    #[error("invalid subscription setting: {reason}")]
    InvalidSubscriptionConfig {
        /// The setting, its value and what is allowed.
        reason: String,
    },

    /// The subscription was deleted, or its topic was.
    #[error("the subscription was closed (deleted, or its topic was deleted)")]
    SubscriptionClosed,

    /// Storage of one partition failed (see [`BrokerError::from_partition`]).
    #[error("storage of topic {topic:?} partition {partition} failed: {source}")]
    Storage {
        /// The partition's topic.
        topic: String,
        /// The partition whose log failed.
        partition: u32,
        /// The storage error.
        #[source]
        source: Arc<StorageError>,
    },

    /// Reading or writing the broker's own records failed.
    #[error("storage failed: {source}")]
    Metadata {
        /// The storage error.
        #[source]
        source: Arc<StorageError>,
    },

    /// A stored broker record cannot be decoded.
    #[error(
        "stored {what} is unreadable: {reason}; the data directory is damaged or was written by a newer Herald: restore it from a backup or run the release that wrote it"
    )]
    CorruptMetadata {
        /// Which record, e.g. `metadata of topic "orders"`.
        what: String,
        /// Why it cannot be decoded.
        reason: String,
    },
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

/// The result of a broker operation; the error defaults to [`BrokerError`].
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
