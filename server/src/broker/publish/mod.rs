//! The publish path: validate a batch, route each event to its partition,
//! name the events the producer left unnamed, and queue each partition's
//! share on its writer ([`writer`]), which groups, appends and fsyncs.

#[cfg(test)]
mod tests;
pub(crate) mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use herald::v1::Event;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::encoded_event::{self, EncodedEvent};
use super::telemetry::{TopicMetrics, publish_span};
use super::topic::validate_topic_name;
use super::{Broker, BrokerError, Result, Topic};
use crate::storage::{NewRecord, StorageError};
use writer::{AppendJob, AppendOutcome};

/// Longest accepted event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// An event id, sliced from the bytes it was published or stored in rather
/// than copied into a `String` of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(Bytes);

impl EventId {
    /// `bytes` must be UTF-8 (ids are parsed from checked events).
    fn new(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        EventId(bytes)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("event ids are UTF-8")
    }

    /// The UTF-8 bytes, without checking them again.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length of the id, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty id.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for EventId {
    fn from(id: String) -> Self {
        EventId(Bytes::from(id))
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.as_str().to_owned()
    }
}

/// Where one published event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The event id (assigned if the publisher left it empty).
    pub id: EventId,
    /// Partition it was stored in.
    pub partition: u32,
    /// Its offset (the original's, for a duplicate).
    pub offset: u64,
    /// True when the id was already stored within the dedup window.
    pub duplicate: bool,
    /// When it was stored, milliseconds since the epoch.
    pub publish_time_ms: i64,
}

/// A submitted publish waiting to be stored; see [`Broker::submit`].
pub struct PendingPublish {
    /// The topic, for errors.
    topic: String,
    /// The publish span (`Span::none()` unless traces are exported).
    span: tracing::Span,
    /// Event types, for the per-event debug log line (empty unless debug
    /// logging is on).
    event_types: Vec<String>,
    /// When the broker took the request, for the latency histogram.
    started: std::time::Instant,
    /// Encoded size of each event, for the bytes counter.
    sizes: Vec<usize>,
    /// The topic's metric handles.
    metrics: TopicMetrics,
    /// Whether the topic was deleted meanwhile (see [`Topic::deleted`]).
    deleted: Arc<AtomicBool>,
    /// One per event, offsets filled in by [`PendingPublish::wait`].
    receipts: Vec<PublishReceipt>,
    /// Per partition: the events' indexes and the writer's answer.
    pending: Vec<(u32, Vec<usize>, oneshot::Receiver<AppendOutcome>)>,
}

impl PendingPublish {
    /// Waits until every partition's share is durable (or failed).
    pub async fn wait(mut self) -> Result<Vec<PublishReceipt>> {
        let span = self.span.clone();
        let topic = self.topic.clone();
        let event_types = std::mem::take(&mut self.event_types);
        let outcome = self.wait_stored().instrument(span.clone()).await;
        match &outcome {
            Ok(receipts) => {
                span.record("otel.status_code", "OK");
                if !event_types.is_empty() {
                    for (receipt, event_type) in receipts.iter().zip(&event_types) {
                        tracing::debug!(
                            message_id = %receipt.id,
                            %topic,
                            event_type = %event_type,
                            status = if receipt.duplicate { "duplicate" } else { "stored" },
                            partition = receipt.partition,
                            offset = receipt.offset,
                            "event published"
                        );
                    }
                }
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                tracing::debug!(%topic, status = "failed", %error, "publish failed");
            }
        }
        outcome
    }

    async fn wait_stored(mut self) -> Result<Vec<PublishReceipt>> {
        for (partition, indexes, outcome) in self.pending {
            let deleted = || self.deleted.load(Ordering::Acquire);
            let appended = outcome
                .await
                .map_err(|_| writer_gone(&self.topic, deleted()))?
                .map_err(|source| {
                    if matches!(*source, StorageError::Closed) && deleted() {
                        BrokerError::TopicDeleted {
                            topic: self.topic.clone(),
                        }
                    } else {
                        BrokerError::Storage {
                            topic: self.topic.clone(),
                            partition,
                            source,
                        }
                    }
                })?;
            for (index, appended) in indexes.into_iter().zip(appended) {
                let receipt = &mut self.receipts[index];
                receipt.offset = appended.offset;
                receipt.duplicate = appended.duplicate;
                receipt.publish_time_ms = appended.timestamp_ms;
            }
        }
        let (mut events, mut bytes) = (0, 0);
        for (receipt, size) in self.receipts.iter().zip(&self.sizes) {
            if !receipt.duplicate {
                events += 1;
                bytes += *size as u64;
            }
        }
        self.metrics.events.increment(events);
        self.metrics.bytes.increment(bytes);
        self.metrics
            .latency
            .record(self.started.elapsed().as_secs_f64());
        Ok(self.receipts)
    }
}

/// Why a partition's writer stopped taking appends: its topic was deleted,
/// or else the broker is shutting down (nothing else stops a writer).
fn writer_gone(topic: &str, deleted: bool) -> BrokerError {
    if deleted {
        BrokerError::TopicDeleted {
            topic: topic.to_owned(),
        }
    } else {
        BrokerError::ShuttingDown
    }
}

impl Broker {
    /// Publishes `events` to `topic`, returning once they are durable under
    /// the topic's fsync policy. Each partition's share of the batch is
    /// stored whole or not at all.
    pub async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<PublishReceipt>> {
        let events = events.iter().map(EncodedEvent::from_event).collect();
        self.submit(topic, events).await?.wait().await
    }

    /// The first half of [`Broker::publish`], on events as the producer
    /// encoded them: validates the batch and queues it on its partitions'
    /// writers, without waiting for it to be stored. Batches submitted one
    /// after another are stored in that order, so a pipelining caller
    /// submits in sequence and waits concurrently.
    pub async fn submit(&self, topic: &str, events: Vec<EncodedEvent>) -> Result<PendingPublish> {
        let started = std::time::Instant::now();
        if self.is_closing() {
            return Err(BrokerError::ShuttingDown);
        }
        validate_topic_name(topic)?;
        if events.is_empty() {
            return Err(BrokerError::EmptyBatch {
                topic: topic.to_owned(),
            });
        }
        let handle = match self.inner.topics.get(topic) {
            Some(handle) => handle.value().clone(),
            // First publish to a topic: creating it writes metadata.
            None => {
                let name = topic.to_owned();
                self.run_blocking(move |broker| broker.topic_for_publish(&name))
                    .await?
            }
        };
        let max_event_bytes = handle.settings.read().max_event_bytes;
        let partition_count = handle.partitions.len() as u32;
        // Keyless events without an id share a partition per publish (sticky
        // round robin), so a batch stays one append and keeps its order.
        let sticky =
            (handle.round_robin.fetch_add(1, Ordering::Relaxed) % partition_count as u64) as u32;

        let mut sizes = Vec::with_capacity(events.len());
        let mut partitions = Vec::with_capacity(events.len());
        let mut assigned_bytes = 0;
        for (index, event) in events.iter().enumerate() {
            let id = event.id_bytes();
            if id.len() > MAX_EVENT_ID_BYTES {
                return Err(BrokerError::InvalidEvent {
                    index,
                    reason: format!("id is {} bytes; use at most {MAX_EVENT_ID_BYTES}", id.len()),
                });
            }
            let size = event.stored_len();
            if size > max_event_bytes as usize {
                return Err(BrokerError::EventTooLarge {
                    topic: topic.to_owned(),
                    index,
                    id: event.id().to_owned(),
                    size,
                    limit: max_event_bytes,
                });
            }
            if id.is_empty() {
                assigned_bytes += size;
            }
            // Dedup is per partition, so a keyless event with the
            // producer's id goes where its id hashes: a retry lands on the
            // same partition and is recognised.
            let partition = if !event.key_bytes().is_empty() {
                partition_for_key(event.key_bytes(), partition_count)
            } else if !id.is_empty() {
                partition_for_key(id, partition_count)
            } else {
                sticky
            };
            partitions.push(partition);
            sizes.push(size);
        }
        // After validation, so a refused batch costs nothing more. Events
        // the broker names get their id appended, all in one buffer.
        let mut assigned = BytesMut::with_capacity(assigned_bytes);
        let mut ids = encoded_event::IdMinter::new();
        let mut groups: Vec<(Vec<usize>, Vec<NewRecord>, usize)> = (0..partition_count)
            .map(|_| (Vec::new(), Vec::new(), 0))
            .collect();
        let mut receipts = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            // Only ids the producer chose are deduplicated: an id the broker
            // makes up is new by construction, and remembering it would
            // cost memory and time for nothing.
            let (record, id) = if event.id_bytes().is_empty() {
                let (payload, id) =
                    encoded_event::append_assigned_id(event.bytes(), &mut ids, &mut assigned);
                let record = NewRecord {
                    id: Bytes::new(),
                    payload,
                };
                (record, id)
            } else {
                let record = NewRecord {
                    // Copied: the dedup window may outlive the request buffer.
                    id: Bytes::copy_from_slice(event.id_bytes()),
                    payload: event.bytes().clone(),
                };
                let id = record.id.clone();
                (record, id)
            };
            let partition = partitions[index];
            let group = &mut groups[partition as usize];
            group.0.push(index);
            group.1.push(record);
            group.2 += sizes[index];
            receipts.push(PublishReceipt {
                id: EventId::new(id),
                partition,
                offset: 0,
                duplicate: false,
                publish_time_ms: 0,
            });
        }

        let span = publish_span(topic, &events, &receipts);
        let event_types = if tracing::enabled!(tracing::Level::DEBUG) {
            events.iter().map(|e| e.event_type().to_owned()).collect()
        } else {
            Vec::new()
        };
        let mut pending = Vec::new();
        for (partition, (indexes, records, bytes)) in groups.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let (reply, outcome) = oneshot::channel();
            let job = AppendJob {
                records,
                bytes,
                reply,
                span: span.clone(),
            };
            handle.partitions[partition]
                .writer
                .send(job)
                .await
                .map_err(|_| writer_gone(topic, handle.deleted.load(Ordering::Acquire)))?;
            pending.push((partition as u32, indexes, outcome));
        }
        Ok(PendingPublish {
            topic: topic.to_owned(),
            span,
            event_types,
            started,
            sizes,
            metrics: handle.metrics.clone(),
            deleted: handle.deleted.clone(),
            receipts,
            pending,
        })
    }

    pub(in crate::broker) fn topic_for_publish(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(topic) = self.inner.topics.get(name) {
            return Ok(topic.value().clone());
        }
        if !self.inner.config.auto_create_topics {
            return Err(BrokerError::TopicNotFound {
                topic: name.to_owned(),
                hint: " (this server does not create topics on first publish)",
            });
        }
        let mut admin = self.inner.admin.lock();
        self.wait_for_create(&mut admin, name);
        if let Some(topic) = self.inner.topics.get(name) {
            return Ok(topic.value().clone());
        }
        if self.is_closing() {
            return Err(BrokerError::ShuttingDown);
        }
        self.create_locked(&mut admin, name, self.inner.config.topic_defaults.clone())?;
        tracing::info!(topic = %name, "topic created on first publish");
        self.topic(name)
    }
}

/// The partition of a keyed event: a stable hash of the key, so a key stays
/// on its partition across restarts.
pub fn partition_for_key(key: impl AsRef<[u8]>, partitions: u32) -> u32 {
    crc32c::crc32c(key.as_ref()) % partitions
}
