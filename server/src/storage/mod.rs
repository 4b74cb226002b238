//! Durable, partitioned append-only logs of opaque records.
//!
//! This layer knows nothing of gRPC, event envelopes or subscription
//! semantics: it stores records (an id used for producer dedup, a timestamp it
//! assigns, and opaque payload bytes), hands out offsets, reads ranges back,
//! and recovers after a crash. It also keeps each subscription's metadata and
//! cursor as opaque blobs the broker serializes, each replaced atomically.
//! Two implementations sit behind the same traits, so the same test suite
//! runs against both:
//! - [`file::FileStorage`]: segmented files with CRC-checked record batches,
//!   sparse offset and time indexes, group-commit fsync, crash recovery.
//! - [`memory::MemoryStorage`]: the same semantics in memory, for tests and
//!   the in-process broker.
//!
//! # What may block
//! - [`PartitionLog::append`] is async but does its `pwrite` on the calling
//!   task, under the log's lock: a copy into the page cache, never an
//!   fsync. Durability is awaited, not waited for: fsyncs run on the file
//!   store's sync pool (`file::sync_pool`, four threads shared by every
//!   log), which wakes the appenders whose bytes it made durable.
//! - [`PartitionLog::read`], `offset_for_timestamp` and `stats` are
//!   synchronous `pread`s (or memory reads) called from async tasks. They
//!   are short: a read is bounded by its record and byte budget, and the
//!   bytes are usually in the page cache because they were just written.
//! - Every [`Storage`] method (create, delete, metadata and cursor writes)
//!   blocks on fsyncs of files and directories. Callers run them off the
//!   async workers: the broker's admin paths go through
//!   `Broker::run_blocking` (tokio's blocking pool), and the cursor flusher
//!   calls `write_cursor` on the blocking pool too. `Broker::open` calls
//!   them before serving starts.
//!
//! # Who batches, who fsyncs
//! The broker's partition writer (`broker::publish::writer`) owns
//! batching: it is the only appender of a partition, keeps one append in
//! flight, and merges everything that queued meanwhile into the next one
//! (up to 4 MiB), so one write and one fsync carry many publishes. The log
//! owns fsync: under the `batch` policy an append returns once a sync round
//! has covered its bytes, and a round covers every append written before it
//! started, so concurrent appenders of one log (the storage bench, tests)
//! share fsyncs as well; `interval` and `none` answer after the write.

pub(crate) mod dedup;
pub mod file;
pub mod memory;
#[cfg(test)]
mod suite;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Milliseconds since the Unix epoch, as the storage layer's clock reads it.
///
/// A function rather than `SystemTime::now()` so retention and dedup tests can
/// move time without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock, in milliseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// A record handed to [`PartitionLog::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Producer-chosen identity used for dedup within the dedup window.
    /// Empty means "never deduplicate this record".
    pub id: Bytes,
    /// Opaque bytes; the broker stores an encoded event envelope here.
    pub payload: Bytes,
}

/// A record as stored, returned by [`PartitionLog::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position in the partition, dense and starting at 0.
    pub offset: u64,
    /// Append time assigned by the log (milliseconds since the epoch);
    /// never decreases along the log.
    pub timestamp_ms: i64,
    /// The dedup id given at append (may be empty).
    pub id: Bytes,
    /// The payload given at append.
    pub payload: Bytes,
}

/// The answer for one appended record, in the order the records were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the record; for a duplicate, the offset of the original.
    pub offset: u64,
    /// Append time of the record (of the original, for a duplicate).
    pub timestamp_ms: i64,
    /// True when the id was seen within the dedup window and nothing was stored.
    pub duplicate: bool,
}

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before the append returns; concurrent appends share one fsync
    /// (group commit). The default.
    Batch,
    /// Return once written to the page cache; a background flush runs every
    /// interval. A crash can lose up to one interval of acknowledged records.
    Interval(Duration),
    /// Never fsync explicitly; the OS decides. A crash can lose any
    /// acknowledged record not yet written back by the OS.
    Never,
}

/// Retention limits, passed to [`PartitionLog::enforce_retention`]; a log
/// deletes whole segments only, never the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete a segment once its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the partition holds more than this.
    pub max_bytes: Option<u64>,
}

/// Per-partition settings.
#[derive(Clone)]
pub struct LogConfig {
    /// Roll to a new segment file once the active one reaches this size.
    pub segment_bytes: u64,
    /// Add a sparse index entry every this many bytes of log.
    pub index_interval_bytes: u32,
    /// When an append counts as durable.
    pub fsync: FsyncPolicy,
    /// How long a record id is remembered for dedup; zero disables dedup.
    pub dedup_window: Duration,
    /// The clock that stamps records and judges age.
    pub clock: Clock,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 * 1024 * 1024,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Batch,
            dedup_window: Duration::from_secs(120),
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("fsync", &self.fsync)
            .field("dedup_window", &self.dedup_window)
            .finish_non_exhaustive()
    }
}

/// Size and range of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    /// Oldest offset still stored (equals `next_offset` when empty).
    pub first_offset: u64,
    /// Offset the next appended record will get.
    pub next_offset: u64,
    /// Bytes on disk (or in memory) for this partition's records.
    pub bytes: u64,
    /// Number of segments (1 for the memory log).
    pub segments: u32,
    /// Append time of the newest record, if any.
    pub last_timestamp_ms: Option<i64>,
}

impl PartitionStats {
    /// Records currently stored.
    pub fn records(&self) -> u64 {
        self.next_offset - self.first_offset
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: u32,
    /// Records deleted.
    pub records_deleted: u64,
    /// Bytes freed.
    pub bytes_deleted: u64,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The device is full (ENOSPC / EDQUOT); nothing of the failed append is readable.
    #[error("storage is full while {context}: {source}")]
    Full {
        /// What the storage was doing, e.g. `appending`.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the storage was doing, e.g. `opening <path>`.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed validation in a place recovery cannot repair.
    #[error("corrupt data in {path}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        path: String,
        /// What failed validation.
        reason: String,
    },
    /// A single record that can never fit in a segment.
    #[error("record of {size} bytes exceeds the segment size of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size of the batch holding the record, in bytes.
        size: usize,
        /// The log's segment size ([`LogConfig::segment_bytes`]), in bytes.
        limit: u64,
    },
    /// The log was closed (shutdown or topic deleted).
    #[error("partition log is closed")]
    Closed,
    /// Another process (or another open storage) holds the data directory.
    #[error("data directory {path} is in use by another Herald server ({holder})")]
    Locked {
        /// The data directory.
        path: String,
        /// What the lock file says about the holder: its pid and, once known,
        /// its listen address.
        holder: String,
    },
}

impl StorageError {
    /// Classifies an I/O error, turning "no space" into [`StorageError::Full`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
                StorageError::Full { context, source }
            }
            _ => StorageError::Io { context, source },
        }
    }

    /// A [`StorageError::Io`] of kind `NotFound`: `what` (a topic, a
    /// subscription) does not exist.
    pub fn not_found(context: impl Into<String>, what: impl Into<String>) -> Self {
        StorageError::Io {
            context: context.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, what.into()),
        }
    }

    /// True for an I/O error of kind `NotFound` (see [`StorageError::not_found`]).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The result of a storage operation; the error defaults to [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One partition's log.
#[async_trait::async_trait]
pub trait PartitionLog: Send + Sync + 'static {
    /// Appends `records` as one batch and returns once the batch is durable
    /// under the configured [`FsyncPolicy`]. Records whose id is in the dedup
    /// window are not stored again; they answer with the original offset.
    /// On error nothing of the batch is readable, now or after a restart.
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>>;

    /// Reads records from `from` (clamped up to the first stored offset):
    /// at most `max_records`, and at most `max_bytes` of payload except that
    /// one record is always returned when any is available. Only durable
    /// records are visible. Empty when `from` is at or past the end.
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>>;

    /// The first offset whose timestamp is `>= timestamp_ms`, or
    /// `next_offset` when every record is older.
    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64>;

    /// Range and size of the partition.
    fn stats(&self) -> PartitionStats;

    /// Deletes whole segments past `retention` (the broker passes the
    /// topic's current limits, which can change while the log is open).
    /// Segments holding any offset `>= keep_from` are kept (subscriptions
    /// that still need them), and the active segment is never deleted.
    fn enforce_retention(
        &self,
        retention: Retention,
        keep_from: Option<u64>,
    ) -> Result<RetentionReport>;

    /// Makes everything appended so far durable (shutdown, interval flush).
    async fn sync(&self) -> Result<()>;

    /// Watches the offset one past the newest durable record, so live
    /// readers can wait for new records without polling. Closing the log
    /// (topic deletion) also marks it changed, so a waiting reader wakes
    /// and its next `read` answers `Closed`.
    fn watch_end(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// A topic as found in storage at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTopic {
    /// Topic name (also its directory name).
    pub name: String,
    /// The broker's serialized topic metadata, opaque here.
    pub meta: Bytes,
}

/// A subscription as found in storage at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Subscription name (also its file name stem).
    pub name: String,
    /// The broker's serialized subscription metadata, opaque here.
    pub meta: Bytes,
    /// The last cursor written, if any.
    pub cursor: Option<Bytes>,
}

/// A set of topics, each a directory of partition logs plus a metadata blob,
/// and the subscriptions of each topic (a metadata blob and a cursor blob).
///
/// Topic and subscription names reaching this layer are already validated by
/// the broker: `[A-Za-z0-9._-]`, 1 to 249 characters, not `.` or `..`.
pub trait Storage: Send + Sync + 'static {
    /// Topics created earlier, with their metadata.
    fn list_topics(&self) -> Result<Vec<StoredTopic>>;

    /// Creates or replaces a topic's metadata atomically (durable on return).
    fn write_topic_meta(&self, topic: &str, meta: &[u8]) -> Result<()>;

    /// Opens partition `partition` of `topic`, creating it if missing and
    /// recovering it (truncating a torn tail, rebuilding indexes) if present.
    fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<Arc<dyn PartitionLog>>;

    /// Removes a topic's metadata, every partition and every subscription.
    /// Open handles of its partitions must not be used afterwards.
    fn delete_topic(&self, topic: &str) -> Result<()>;

    /// Subscriptions of `topic` created earlier, with metadata and last
    /// cursor, sorted by name. Empty for a topic without any (or unknown).
    fn list_subscriptions(&self, topic: &str) -> Result<Vec<StoredSubscription>>;

    /// Creates or replaces a subscription's metadata atomically (durable on
    /// return); its cursor, if any, is kept. The topic must exist (its
    /// metadata written); otherwise this fails with a `NotFound` I/O error.
    fn write_subscription_meta(&self, topic: &str, subscription: &str, meta: &[u8]) -> Result<()>;

    /// Replaces a subscription's cursor atomically (durable on return): after
    /// a crash the previous or the new cursor is found whole, never a mix.
    /// The subscription's metadata must have been written first; otherwise
    /// this fails with a `NotFound` I/O error (so a flush racing a delete
    /// cannot resurrect a cursor).
    fn write_cursor(&self, topic: &str, subscription: &str, cursor: &[u8]) -> Result<()>;

    /// Removes a subscription's metadata and cursor. Deleting a missing one
    /// (or one of a missing topic) is not an error.
    fn delete_subscription(&self, topic: &str, subscription: &str) -> Result<()>;
}
