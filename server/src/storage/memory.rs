//! An in-memory log with the same semantics as the file log, for tests and
//! the in-process broker. Nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::dedup::DedupWindow;
use super::{
    Appended, LogConfig, NewRecord, PartitionLog, PartitionStats, Result, Retention,
    RetentionReport, Storage, StorageError, StoredRecord, StoredSubscription, StoredTopic,
};

/// Records kept per memory "segment", so retention deletes whole chunks as
/// the file log deletes whole segments.
const RECORDS_PER_CHUNK: usize = 4096;

/// Topics and partitions held in memory.
#[derive(Default)]
pub struct MemoryStorage {
    /// topic -> (metadata, partitions opened so far, subscriptions)
    topics: Mutex<BTreeMap<String, MemoryTopic>>,
}

#[derive(Default)]
struct MemoryTopic {
    meta: Bytes,
    partitions: BTreeMap<u32, Arc<MemoryLog>>,
    /// name -> subscription, kept sorted by name.
    subscriptions: BTreeMap<String, MemorySubscription>,
}

struct MemorySubscription {
    meta: Bytes,
    cursor: Option<Bytes>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn list_topics(&self) -> Result<Vec<StoredTopic>> {
        Ok(self
            .topics
            .lock()
            .iter()
            .map(|(name, t)| StoredTopic {
                name: name.clone(),
                meta: t.meta.clone(),
            })
            .collect())
    }

    fn write_topic_meta(&self, topic: &str, meta: &[u8]) -> Result<()> {
        self.topics.lock().entry(topic.to_owned()).or_default().meta = Bytes::copy_from_slice(meta);
        Ok(())
    }

    fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.to_owned()).or_default();
        let log = t
            .partitions
            .entry(partition)
            .or_insert_with(|| Arc::new(MemoryLog::new(config)))
            .clone();
        Ok(log)
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        if let Some(t) = self.topics.lock().remove(topic) {
            for log in t.partitions.values() {
                log.state.lock().closed = true;
                // Wake live readers so they see `Closed` instead of waiting
                // forever for records that will never come.
                log.end_tx.send_modify(|_| {});
            }
        }
        Ok(())
    }

    fn list_subscriptions(&self, topic: &str) -> Result<Vec<StoredSubscription>> {
        let topics = self.topics.lock();
        let Some(t) = topics.get(topic) else {
            return Ok(Vec::new());
        };
        Ok(t.subscriptions
            .iter()
            .map(|(name, sub)| StoredSubscription {
                name: name.clone(),
                meta: sub.meta.clone(),
                cursor: sub.cursor.clone(),
            })
            .collect())
    }

    fn write_subscription_meta(&self, topic: &str, subscription: &str, meta: &[u8]) -> Result<()> {
        let mut topics = self.topics.lock();
        let Some(t) = topics.get_mut(topic) else {
            return Err(StorageError::not_found(
                format!("writing metadata of subscription {subscription} of topic {topic}"),
                format!("topic {topic} does not exist"),
            ));
        };
        let meta = Bytes::copy_from_slice(meta);
        t.subscriptions
            .entry(subscription.to_owned())
            .and_modify(|sub| sub.meta = meta.clone())
            .or_insert(MemorySubscription { meta, cursor: None });
        Ok(())
    }

    fn write_cursor(&self, topic: &str, subscription: &str, cursor: &[u8]) -> Result<()> {
        let mut topics = self.topics.lock();
        let Some(sub) = topics
            .get_mut(topic)
            .and_then(|t| t.subscriptions.get_mut(subscription))
        else {
            return Err(StorageError::not_found(
                format!("writing the cursor of subscription {subscription} of topic {topic}"),
                format!("subscription {subscription} of topic {topic} does not exist"),
            ));
        };
        sub.cursor = Some(Bytes::copy_from_slice(cursor));
        Ok(())
    }

    fn delete_subscription(&self, topic: &str, subscription: &str) -> Result<()> {
        if let Some(t) = self.topics.lock().get_mut(topic) {
            t.subscriptions.remove(subscription);
        }
        Ok(())
    }
}

/// One partition in memory: chunks of records, each chunk playing a segment.
pub struct MemoryLog {
    config: LogConfig,
    state: Mutex<MemoryState>,
    end_tx: watch::Sender<u64>,
}

struct MemoryState {
    chunks: VecDeque<Vec<StoredRecord>>,
    first_offset: u64,
    next_offset: u64,
    bytes: u64,
    last_timestamp_ms: Option<i64>,
    dedup: DedupWindow,
    closed: bool,
}

fn record_size(r: &StoredRecord) -> u64 {
    (r.payload.len() + r.id.len()) as u64
}

impl MemoryLog {
    /// An empty log.
    pub fn new(config: LogConfig) -> Self {
        let dedup = DedupWindow::new(config.dedup_window.as_millis() as i64);
        Self {
            config,
            state: Mutex::new(MemoryState {
                chunks: VecDeque::new(),
                first_offset: 0,
                next_offset: 0,
                bytes: 0,
                last_timestamp_ms: None,
                dedup,
                closed: false,
            }),
            end_tx: watch::channel(0).0,
        }
    }
}

#[async_trait::async_trait]
impl PartitionLog for MemoryLog {
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(StorageError::Closed);
        }
        let now = (self.config.clock)().max(s.last_timestamp_ms.unwrap_or(i64::MIN));
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if let Some((offset, timestamp_ms)) = s.dedup.lookup(&r.id, now) {
                out.push(Appended {
                    offset,
                    timestamp_ms,
                    duplicate: true,
                });
                continue;
            }
            let offset = s.next_offset;
            let stored = StoredRecord {
                offset,
                timestamp_ms: now,
                id: r.id,
                // A payload may be a slice of a whole request's buffer (the
                // broker stores events as received); kept for the log's
                // life, it would keep that buffer alive. A copy keeps only
                // its own bytes.
                payload: Bytes::copy_from_slice(&r.payload),
            };
            s.bytes += record_size(&stored);
            s.dedup.insert(stored.id.clone(), offset, now);
            match s.chunks.back_mut() {
                Some(chunk) if chunk.len() < RECORDS_PER_CHUNK => chunk.push(stored),
                _ => {
                    let mut chunk = Vec::with_capacity(RECORDS_PER_CHUNK);
                    chunk.push(stored);
                    s.chunks.push_back(chunk);
                }
            }
            s.next_offset += 1;
            s.last_timestamp_ms = Some(now);
            out.push(Appended {
                offset,
                timestamp_ms: now,
                duplicate: false,
            });
        }
        let end = s.next_offset;
        drop(s);
        self.end_tx.send_replace(end);
        Ok(out)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let s = self.state.lock();
        if s.closed {
            return Err(StorageError::Closed);
        }
        let from = from.max(s.first_offset);
        let mut out = Vec::new();
        if from >= s.next_offset || max_records == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        let rel = (from - s.first_offset) as usize;
        // Every chunk but the last is full and retention drops whole chunks,
        // so the position is plain arithmetic.
        let mut chunk_idx = rel / RECORDS_PER_CHUNK;
        let mut idx = rel % RECORDS_PER_CHUNK;
        while let Some(chunk) = s.chunks.get(chunk_idx) {
            while let Some(r) = chunk.get(idx) {
                let size = r.payload.len();
                if out.len() >= max_records || (!out.is_empty() && bytes + size > max_bytes) {
                    return Ok(out);
                }
                bytes += size;
                out.push(r.clone());
                idx += 1;
            }
            chunk_idx += 1;
            idx = 0;
        }
        Ok(out)
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64> {
        let s = self.state.lock();
        for chunk in &s.chunks {
            if chunk.last().is_some_and(|r| r.timestamp_ms >= timestamp_ms) {
                let i = chunk.partition_point(|r| r.timestamp_ms < timestamp_ms);
                return Ok(chunk[i].offset);
            }
        }
        Ok(s.next_offset)
    }

    fn stats(&self) -> PartitionStats {
        let s = self.state.lock();
        PartitionStats {
            first_offset: s.first_offset,
            next_offset: s.next_offset,
            bytes: s.bytes,
            segments: s.chunks.len().max(1) as u32,
            last_timestamp_ms: s.last_timestamp_ms,
        }
    }

    fn enforce_retention(
        &self,
        retention: Retention,
        keep_from: Option<u64>,
    ) -> Result<RetentionReport> {
        let mut s = self.state.lock();
        let now = (self.config.clock)();
        let mut report = RetentionReport::default();
        // Never the active (last) chunk.
        while s.chunks.len() > 1 {
            let chunk = &s.chunks[0];
            let last = chunk.last().expect("chunks are never empty");
            let expired_by_age = retention
                .max_age
                .is_some_and(|age| last.timestamp_ms < now - age.as_millis() as i64);
            let expired_by_size = retention.max_bytes.is_some_and(|max| s.bytes > max);
            let protected = keep_from.is_some_and(|k| last.offset >= k);
            if protected || !(expired_by_age || expired_by_size) {
                break;
            }
            let chunk = s.chunks.pop_front().expect("checked above");
            let bytes: u64 = chunk.iter().map(record_size).sum();
            s.bytes -= bytes;
            s.first_offset += chunk.len() as u64;
            report.segments_deleted += 1;
            report.records_deleted += chunk.len() as u64;
            report.bytes_deleted += bytes;
        }
        let first = s.first_offset;
        s.dedup.forget_below(first);
        Ok(report)
    }

    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn watch_end(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored payload is its own allocation, not a view into the buffer
    /// it arrived in (which the log would otherwise keep alive).
    #[tokio::test]
    async fn stored_payloads_do_not_borrow_their_request_buffer() {
        let log = MemoryLog::new(LogConfig::default());
        let request = Bytes::from(vec![7u8; 1 << 20]);
        let payload = request.slice(100..200);
        log.append(vec![NewRecord {
            id: Bytes::new(),
            payload,
        }])
        .await
        .unwrap();
        let stored = log.read(0, 1, 1 << 20).unwrap().remove(0).payload;
        assert_eq!(stored, request.slice(100..200));
        let within = request.as_ptr_range();
        assert!(!within.contains(&stored.as_ptr()), "payload is a copy");
    }
}
