//! An event as the broker hands it to readers and consumers: where it sits
//! in its partition and the `herald.v1.Event` bytes checked at publish, so
//! layers above the broker never see storage's record type.

use bytes::Bytes;

use crate::storage::StoredRecord;

/// One stored event of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the partition.
    pub offset: u64,
    /// When it was stored, milliseconds since the epoch.
    pub publish_time_ms: i64,
    /// The encoded `herald.v1.Event`, as the producer sent it (plus a
    /// broker-assigned id when it had none).
    pub bytes: Bytes,
}

impl From<StoredRecord> for StoredEvent {
    fn from(record: StoredRecord) -> Self {
        StoredEvent {
            offset: record.offset,
            publish_time_ms: record.timestamp_ms,
            bytes: record.payload,
        }
    }
}
