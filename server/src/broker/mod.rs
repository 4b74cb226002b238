//! The broker: topics, partitioning and the publish path, as a plain async
//! library. It knows nothing of tonic; the api layer and tests drive it
//! through [`Broker`], a cheap cloneable handle.
//!
//! Lock order: `Inner::admin` (create/delete/update of topics and
//! subscriptions) before a topic's `subscriptions`, before its `settings`;
//! no lock is held across an `.await`. `CreateTopic` holds `admin` only to
//! reserve the name and to register the topic, not while storage creates
//! it, so creates of different topics overlap their fsyncs. Admin work that
//! writes metadata runs on the blocking pool ([`Broker::run_blocking`]);
//! see `storage` for what blocks and who batches.
//!
//! Where each path lives:
//! - [`publish`]: `Broker::submit`/`publish` and the partition writers;
//! - [`topic`]: topic admin, metadata and retention;
//! - [`subscription`]: the registry (`subscription::registry`), the
//!   per-subscription task and dispatch;
//! - [`reader`]: `Read`, position-based reads without a subscription;
//! - [`telemetry`]: spans and metric handles of the paths above.

pub(crate) mod encoded_event;
pub(crate) mod error;
mod position;
pub(crate) mod publish;
pub mod reader;
mod records;
mod storage_health;
mod stored_event;
pub mod subscription;
mod telemetry;
pub(crate) mod topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use encoded_event::{EncodedEvent, MalformedEvent};
pub use error::{BrokerError, Result, StorageFault};
pub use position::Position;
pub use publish::{EventId, MAX_EVENT_ID_BYTES, PendingPublish, PublishReceipt, partition_for_key};
pub use stored_event::StoredEvent;
pub use topic::{
    Fsync, TopicInfo, TopicSettings, TopicSettingsPatch, TopicStats, validate_topic_name,
};

use crate::storage::{PartitionLog, Storage};
use publish::writer::AppendJob;
use storage_health::StorageHealth;
use telemetry::TopicMetrics;
use topic::AdminState;

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
            .map_err(BrokerError::metadata)?;
        for stored in stored {
            let meta = records::TopicRecord::decode(&stored.meta, &stored.name)?;
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

    /// Follows whether storage can write: `None` while every partition's
    /// last append succeeded, else a description of a failure.
    pub fn storage_health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.storage_health.watch()
    }

    /// Runs `work`, which blocks on storage (metadata writes and their
    /// fsyncs), on tokio's blocking pool so the async workers keep serving
    /// publishes and deliveries meanwhile. A panic in `work` resumes here.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Broker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let broker = self.clone();
        match tokio::task::spawn_blocking(move || work(&broker)).await {
            Ok(outcome) => outcome,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down and never ran it.
                Err(_) => Err(BrokerError::ShuttingDown),
            },
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
}

/// A broker on in-memory storage with default settings, for unit tests.
#[cfg(test)]
pub(crate) fn in_memory_broker() -> Broker {
    Broker::open(
        Arc::new(crate::storage::memory::MemoryStorage::new()),
        BrokerConfig::default(),
        CancellationToken::new(),
    )
    .expect("an in-memory broker opens")
}

#[cfg(test)]
mod open_tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn unreadable_topic_metadata_refuses_to_open_naming_the_record() {
        let storage = Arc::new(MemoryStorage::new());
        storage
            .write_topic_meta("orders", b"{\"version\": 1, \"name\": ")
            .unwrap();
        let error = Broker::open(storage, BrokerConfig::default(), CancellationToken::new())
            .err()
            .expect("corrupt metadata refuses the open");
        assert!(
            matches!(&error, BrokerError::CorruptMetadata { what, .. } if what == "metadata of topic \"orders\""),
            "{error}"
        );
        assert!(
            error.to_string().contains("restore it from a backup"),
            "{error}"
        );
    }
}
