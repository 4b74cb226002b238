//! The broker: topics, partitioning and the publish path, as a plain async
//! library. It knows nothing of tonic; the api layer and tests drive it
//! through [`Broker`], a cheap cloneable handle.
//!
//! Lock order: `Inner::admin` (create/delete/update) before any topic's
//! `settings`; no lock is held across an `.await`. `CreateTopic` holds
//! `admin` only to reserve the name and to register the topic, not while
//! storage creates it, so creates of different topics overlap their fsyncs.

pub mod encoded_event;
pub mod error;
pub mod partition_writer;
pub mod position;
#[cfg(test)]
mod publish_tests;
pub mod reader;
mod storage_health;
pub mod subscription;
mod subscriptions;
pub mod topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use herald::v1::Event;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use encoded_event::EncodedEvent;
pub use error::{BrokerError, Result};
pub use position::Position;
pub use topic::{Fsync, TopicMeta, TopicSettings, TopicSettingsPatch, validate_topic_name};

use crate::storage::{
    NewRecord, PartitionLog, PartitionStats, Storage, StorageError, system_clock,
};
use partition_writer::{AppendJob, AppendOutcome};
use storage_health::StorageHealth;

/// Longest accepted event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 256;
/// Most payload bytes the partition writer merges into one storage batch.
const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// How the broker behaves, independent of transport.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Settings of topics created without explicit ones (and auto-created).
    pub topic_defaults: TopicSettings,
    /// Create a topic on its first publish instead of answering NOT_FOUND.
    pub auto_create_topics: bool,
    /// Largest request the transport accepts; bounds `max_event_bytes`.
    pub max_request_bytes: usize,
    /// How often retention runs over every partition.
    pub retention_check_interval: Duration,
    /// Cursor flushing and consumer limits of subscription tasks.
    pub subscription_tasks: subscription::TaskContext,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            topic_defaults: TopicSettings::default(),
            auto_create_topics: true,
            max_request_bytes: 16 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(60),
            subscription_tasks: subscription::TaskContext::default(),
        }
    }
}

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

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("event ids are UTF-8")
    }

    /// The UTF-8 bytes, without checking them again.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

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

/// Most producer contexts linked from one publish span besides its parent.
const MAX_PUBLISH_LINKS: usize = 64;

/// The span of one publish (a batch), when traces are exported: a child of
/// the producer's span from the first event's `traceparent` (the
/// CloudEvents distributed-tracing extension), linked to the other
/// producers' spans when a batch mixes several.
fn publish_span(
    topic: &str,
    events: &[EncodedEvent],
    receipts: &[PublishReceipt],
) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let mut traced = events.iter().filter(|e| e.traced()).map(|e| e.attributes());
    let first = traced.next();
    let sampled = match &first {
        Some(attributes) => crate::telemetry::sample_event(attributes),
        None => crate::telemetry::sample_root(),
    };
    if !sampled {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "herald.publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "herald",
        messaging.operation = "publish",
        messaging.destination.name = %topic,
        messaging.batch.message_count = events.len(),
        messaging.message.id = tracing::field::Empty,
    );
    if let [only] = receipts {
        span.record("messaging.message.id", only.id.as_str());
    }
    if let Some(first) = first {
        crate::telemetry::set_parent(&span, &first);
        let parent = herald::trace_context::extract(&first);
        let parent_trace = parent.span().span_context().trace_id();
        for attributes in traced.take(MAX_PUBLISH_LINKS) {
            let context = herald::trace_context::extract(&attributes);
            let linked = context.span().span_context().clone();
            if linked.is_valid() && linked.trace_id() != parent_trace {
                span.add_link(linked);
            }
        }
    }
    span
}

/// A topic as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub settings: TopicSettings,
    pub created_at_ms: i64,
}

/// A topic's size per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    pub name: String,
    pub partitions: Vec<PartitionStats>,
}

/// A topic's publish metrics, registered once when it opens so a publish
/// costs a few atomic adds (no-ops when no recorder is installed).
#[derive(Clone)]
struct TopicMetrics {
    events: metrics::Counter,
    bytes: metrics::Counter,
    latency: metrics::Histogram,
}

impl TopicMetrics {
    fn register(topic: &str) -> Self {
        use crate::metrics::names;
        let labels = [("topic", topic.to_owned())];
        Self {
            events: metrics::counter!(names::PUBLISHED_EVENTS, &labels),
            bytes: metrics::counter!(names::PUBLISHED_BYTES, &labels),
            latency: metrics::histogram!(names::PUBLISH_DURATION, &labels),
        }
    }
}

/// What `Inner::admin` guards besides the order of admin operations.
#[derive(Default)]
struct AdminState {
    /// Topics a `create_topic` is creating in storage with the lock
    /// released: reserved, not yet in `Inner::topics`.
    creating: ahash::AHashSet<String>,
}

/// A cheap, cloneable handle to the broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where topics live.
    storage: Arc<dyn Storage>,
    /// Behaviour settings.
    config: BrokerConfig,
    /// Open topics by name.
    topics: DashMap<String, Arc<Topic>>,
    /// Serializes create, update and delete so metadata and the map agree.
    admin: Mutex<AdminState>,
    /// Signalled when a create that ran without `admin` finishes.
    topic_created: Condvar,
    /// Set once shutdown begins: new publishes are refused.
    closing: AtomicBool,
    /// Partition writers and the retention loop.
    tasks: TaskTracker,
    /// Stops the background loops.
    cancel: CancellationToken,
    /// Next id for an attached consumer.
    next_consumer_id: AtomicU64,
    /// Partitions that cannot write.
    storage_health: StorageHealth,
}

/// An open topic.
struct Topic {
    /// Current settings (retention and max_event_bytes can change).
    settings: RwLock<TopicSettings>,
    /// Creation time, ms since the epoch.
    created_at_ms: i64,
    /// One per partition, by index.
    partitions: Vec<Partition>,
    /// Next partition for keyless publishes.
    round_robin: AtomicU64,
    /// Running subscriptions by name.
    subscriptions: Mutex<std::collections::BTreeMap<String, Arc<subscription::SubscriptionHandle>>>,
    /// Publish counters and latency.
    metrics: TopicMetrics,
    /// Set by `delete_topic` before it stops the writers, so a publish
    /// racing the delete is answered "topic deleted", not "shutting down".
    deleted: Arc<AtomicBool>,
}

struct Partition {
    /// The partition's log, for reads and stats.
    log: Arc<dyn PartitionLog>,
    /// Queue of the partition's writer task.
    writer: mpsc::Sender<AppendJob>,
}

impl Broker {
    /// Opens every topic found in `storage` (recovering their logs) and
    /// starts the background tasks. Must run inside a tokio runtime.
    /// `shutdown` stops the background tasks; call [`Broker::shutdown`] to
    /// also drain publishes and sync the logs.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: BrokerConfig,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let broker = Broker {
            inner: Arc::new(Inner {
                storage,
                config,
                topics: DashMap::new(),
                admin: Mutex::new(AdminState::default()),
                topic_created: Condvar::new(),
                closing: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                cancel: shutdown,
                next_consumer_id: AtomicU64::new(1),
                storage_health: StorageHealth::default(),
            }),
        };
        let stored = broker
            .inner
            .storage
            .list_topics()
            .map_err(|source| BrokerError::Metadata { source })?;
        for stored in stored {
            let meta =
                TopicMeta::from_bytes(&stored.meta).map_err(|e| BrokerError::InvalidConfig {
                    reason: format!(
                        "stored metadata of topic {:?} does not parse: {e}",
                        stored.name
                    ),
                })?;
            let topic = broker.open_topic(&meta.name, meta.settings, meta.created_at_ms)?;
            broker.start_stored_subscriptions(&meta.name, &topic)?;
            broker.inner.topics.insert(meta.name, topic);
        }
        broker.spawn_retention_loop();
        Ok(broker)
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

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
        let handle = self.topic_for_publish(topic)?;
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

    /// Creates a topic with `patch` over the server's defaults.
    pub fn create_topic(&self, name: &str, patch: &TopicSettingsPatch) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        let settings = self
            .inner
            .config
            .topic_defaults
            .create(patch, self.inner.config.max_request_bytes)?;
        {
            let mut admin = self.inner.admin.lock();
            if self.inner.topics.contains_key(name) || admin.creating.contains(name) {
                return Err(BrokerError::TopicAlreadyExists {
                    topic: name.to_owned(),
                });
            }
            admin.creating.insert(name.to_owned());
        }
        // Storage work (directories, metadata, fsyncs) runs unlocked; the
        // reservation keeps every other create of this name out.
        let built = self.build_topic(name, settings);
        let mut admin = self.inner.admin.lock();
        admin.creating.remove(name);
        let created = built.map(|topic| {
            let info = info(name, &topic);
            self.inner.topics.insert(name.to_owned(), topic);
            info
        });
        drop(admin);
        self.inner.topic_created.notify_all();
        created
    }

    /// Waits, releasing `admin`, until no unlocked create of `name` is in
    /// progress, so a caller holding `admin` sees it registered or gone.
    fn wait_for_create(&self, admin: &mut MutexGuard<'_, AdminState>, name: &str) {
        while admin.creating.contains(name) {
            self.inner.topic_created.wait(admin);
        }
    }

    /// The topic's settings and creation time.
    pub fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        let topic = self.topic(name)?;
        Ok(info(name, &topic))
    }

    /// Every topic, by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<TopicInfo> = self
            .inner
            .topics
            .iter()
            .map(|entry| info(entry.key(), entry.value()))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Changes the settings that may change (retention, max_event_bytes).
    pub fn update_topic(&self, name: &str, patch: &TopicSettingsPatch) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        let _admin = self.inner.admin.lock();
        let topic = self.topic(name)?;
        let current = topic.settings.read().clone();
        let updated = current.update(name, patch, self.inner.config.max_request_bytes)?;
        let meta = TopicMeta {
            version: 1,
            name: name.to_owned(),
            settings: updated.clone(),
            created_at_ms: topic.created_at_ms,
        };
        self.inner
            .storage
            .write_topic_meta(name, &meta.to_bytes())
            .map_err(|source| BrokerError::Metadata { source })?;
        *topic.settings.write() = updated;
        Ok(info(name, &topic))
    }

    /// Deletes a topic, its subscriptions and every event in it, and the
    /// subscriptions' dead-letter topics that Herald created and that hold
    /// nothing; returns the dead-letter topics kept (see
    /// [`Broker::delete_subscription`]).
    pub async fn delete_topic(&self, name: &str) -> Result<Vec<String>> {
        validate_topic_name(name)?;
        let removed = {
            let _admin = self.inner.admin.lock();
            self.inner.topics.remove(name).map(|(_, topic)| topic)
        };
        let Some(topic) = removed else {
            return Err(self.not_found(name));
        };
        topic.deleted.store(true, Ordering::Release);
        let subscriptions: Vec<_> = std::mem::take(&mut *topic.subscriptions.lock())
            .into_values()
            .collect();
        for subscription in &subscriptions {
            subscriptions::stop_subscription(subscription).await;
        }
        // Writers end once in-flight publishes drop their handles; appends
        // racing the delete fail with a storage "closed" error.
        let deleted = self
            .inner
            .storage
            .delete_topic(name)
            .map_err(|source| BrokerError::Metadata { source });
        self.inner.storage_health.forget_topic(name);
        deleted?;
        let mut kept = Vec::new();
        for subscription in &subscriptions {
            let info = &subscription.info;
            kept.extend(
                self.retire_dead_letter_topic(name, &info.name, &info.settings)
                    .await,
            );
        }
        Ok(kept)
    }

    /// Follows whether storage can write: `None` while every partition's
    /// last append succeeded, else a description of a failure.
    pub fn storage_health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.storage_health.watch()
    }

    /// Offsets, counts and sizes per partition.
    pub fn topic_stats(&self, name: &str) -> Result<TopicStats> {
        validate_topic_name(name)?;
        let topic = self.topic(name)?;
        Ok(TopicStats {
            name: name.to_owned(),
            partitions: topic.partitions.iter().map(|p| p.log.stats()).collect(),
        })
    }

    /// The partition logs of a topic, by partition index (for readers and
    /// subscriptions).
    pub fn partition_logs(&self, topic: &str) -> Result<Vec<Arc<dyn PartitionLog>>> {
        validate_topic_name(topic)?;
        let topic = self.topic(topic)?;
        Ok(topic.partitions.iter().map(|p| p.log.clone()).collect())
    }

    /// Runs one retention pass over every partition of every topic.
    pub fn enforce_retention(&self) {
        let topics: Vec<(String, Arc<Topic>)> = self
            .inner
            .topics
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (name, topic) in topics {
            let retention = topic.settings.read().retention();
            if retention.max_age.is_none() && retention.max_bytes.is_none() {
                continue;
            }
            for (partition, p) in topic.partitions.iter().enumerate() {
                let keep_from = subscriptions::retention_floor(&topic, partition);
                match p.log.enforce_retention(retention, keep_from) {
                    Ok(report) if report.segments_deleted > 0 => tracing::info!(
                        topic = %name,
                        partition,
                        segments = report.segments_deleted,
                        events = report.records_deleted,
                        bytes = report.bytes_deleted,
                        "retention deleted segments"
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(topic = %name, partition, %error, "retention failed")
                    }
                }
            }
        }
    }

    /// True once [`Broker::shutdown`] has begun.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    /// Refuses new publishes, lets in-flight ones finish, stops the
    /// background tasks and syncs every log. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.cancel.cancel();
        let logs: Vec<Arc<dyn PartitionLog>> = self
            .inner
            .topics
            .iter()
            .flat_map(|e| {
                e.value()
                    .partitions
                    .iter()
                    .map(|p| p.log.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        // Dropping the map's handles closes the writer queues once in-flight
        // publishes release theirs; the writers finish what is queued.
        self.inner.topics.clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        for log in logs {
            if let Err(error) = log.sync().await {
                tracing::error!(%error, "final sync failed");
            }
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .get(name)
            .map(|t| t.value().clone())
            .ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> BrokerError {
        BrokerError::TopicNotFound {
            topic: name.to_owned(),
            hint: "",
        }
    }

    fn topic_for_publish(&self, name: &str) -> Result<Arc<Topic>> {
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

    /// Creates and registers a topic not in the map, holding `admin`
    /// throughout (after waiting out an unlocked create of the same name).
    fn create_locked(
        &self,
        admin: &mut MutexGuard<'_, AdminState>,
        name: &str,
        settings: TopicSettings,
    ) -> Result<TopicInfo> {
        self.wait_for_create(admin, name);
        if self.inner.topics.contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists {
                topic: name.to_owned(),
            });
        }
        let topic = self.build_topic(name, settings)?;
        let info = info(name, &topic);
        self.inner.topics.insert(name.to_owned(), topic);
        Ok(info)
    }

    /// Creates partitions, then metadata (so a crash in between leaves no
    /// half topic visible); on failure removes what it made. The caller
    /// holds `admin` or a reservation of `name`, and registers the topic.
    fn build_topic(&self, name: &str, settings: TopicSettings) -> Result<Arc<Topic>> {
        let created_at_ms = (system_clock())();
        let topic = match self.open_topic(name, settings.clone(), created_at_ms) {
            Ok(topic) => topic,
            Err(error) => {
                // Partitions opened before the failing one (and their
                // directories) must not outlive the refused create.
                if let Err(cleanup) = self.inner.storage.delete_topic(name) {
                    tracing::warn!(topic = %name, error = %cleanup, "could not remove a topic whose creation failed");
                }
                return Err(error);
            }
        };
        let meta = TopicMeta {
            version: 1,
            name: name.to_owned(),
            settings,
            created_at_ms,
        };
        if let Err(source) = self.inner.storage.write_topic_meta(name, &meta.to_bytes()) {
            let _ = self.inner.storage.delete_topic(name);
            return Err(BrokerError::Metadata { source });
        }
        Ok(topic)
    }

    fn open_topic(
        &self,
        name: &str,
        settings: TopicSettings,
        created_at_ms: i64,
    ) -> Result<Arc<Topic>> {
        let mut partitions = Vec::with_capacity(settings.partitions as usize);
        for partition in 0..settings.partitions {
            let log = self
                .inner
                .storage
                .open_partition(name, partition, settings.log_config())
                .map_err(|source| BrokerError::Storage {
                    topic: name.to_owned(),
                    partition,
                    source: Arc::new(source),
                })?;
            let (writer, jobs) = mpsc::channel(partition_writer::QUEUE_DEPTH);
            let group_bytes = MAX_GROUP_BYTES.min(settings.segment_bytes as usize / 2);
            let health = partition_writer::HealthReport {
                health: self.inner.storage_health.clone(),
                topic: name.to_owned(),
                partition,
            };
            self.inner.tasks.spawn(partition_writer::run(
                log.clone(),
                jobs,
                group_bytes,
                health,
            ));
            partitions.push(Partition { log, writer });
        }
        Ok(Arc::new(Topic {
            settings: RwLock::new(settings),
            created_at_ms,
            partitions,
            round_robin: AtomicU64::new(0),
            subscriptions: Mutex::new(std::collections::BTreeMap::new()),
            metrics: TopicMetrics::register(name),
            deleted: Arc::default(),
        }))
    }

    fn spawn_retention_loop(&self) {
        let broker = Arc::downgrade(&self.inner);
        let cancel = self.inner.cancel.clone();
        let period = self.inner.config.retention_check_interval;
        self.inner.tasks.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let Some(inner) = broker.upgrade() else {
                    return;
                };
                Broker { inner }.enforce_retention();
            }
        });
    }
}

fn info(name: &str, topic: &Topic) -> TopicInfo {
    TopicInfo {
        name: name.to_owned(),
        settings: topic.settings.read().clone(),
        created_at_ms: topic.created_at_ms,
    }
}

/// The partition of a keyed event: a stable hash of the key, so a key stays
/// on its partition across restarts.
pub fn partition_for_key(key: impl AsRef<[u8]>, partitions: u32) -> u32 {
    crc32c::crc32c(key.as_ref()) % partitions
}
