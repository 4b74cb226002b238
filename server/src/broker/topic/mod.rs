//! Topic management: create, describe, update and delete topics, their
//! storage-side lifecycle (partitions, metadata, writers) and retention.
//! Settings and their validation live in [`settings`].

pub(crate) mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::mpsc;

pub(crate) use settings::validate_subscription_name;
pub use settings::{Fsync, TopicSettings, TopicSettingsPatch, validate_topic_name};

use super::publish::writer;
use super::records::TopicRecord;
use super::subscription::registry;
use super::telemetry::TopicMetrics;
use super::{Broker, BrokerError, Partition, Result, Topic};
use crate::storage::{PartitionLog, PartitionStats, system_clock};

/// A topic as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// The topic's effective settings.
    pub settings: TopicSettings,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// A topic's size per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Size and range of each partition, indexed by partition number.
    pub partitions: Vec<PartitionStats>,
}

/// What `Inner::admin` guards besides the order of admin operations.
#[derive(Default)]
pub(in crate::broker) struct AdminState {
    /// Topics a `create_topic` is creating in storage with the lock
    /// released: reserved, not yet in `Inner::topics`.
    pub(in crate::broker) creating: ahash::AHashSet<String>,
}

impl Broker {
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
    pub(in crate::broker) fn wait_for_create(
        &self,
        admin: &mut MutexGuard<'_, AdminState>,
        name: &str,
    ) {
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
        let meta = TopicRecord {
            name: name.to_owned(),
            settings: updated.clone(),
            created_at_ms: topic.created_at_ms,
        };
        self.inner
            .storage
            .write_topic_meta(name, &meta.encode())
            .map_err(BrokerError::metadata)?;
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
            registry::stop_subscription(subscription).await;
        }
        // Writers end once in-flight publishes drop their handles; appends
        // racing the delete fail with a storage "closed" error.
        let owned = name.to_owned();
        let deleted = self
            .run_blocking(move |broker| {
                broker
                    .inner
                    .storage
                    .delete_topic(&owned)
                    .map_err(BrokerError::metadata)
            })
            .await;
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
    pub(in crate::broker) fn partition_logs(
        &self,
        topic: &str,
    ) -> Result<Vec<Arc<dyn PartitionLog>>> {
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
                let keep_from = registry::retention_floor(&topic, partition);
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

    /// Creates and registers a topic not in the map, holding `admin`
    /// throughout (after waiting out an unlocked create of the same name).
    pub(in crate::broker) fn create_locked(
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
        let meta = TopicRecord {
            name: name.to_owned(),
            settings,
            created_at_ms,
        };
        if let Err(source) = self.inner.storage.write_topic_meta(name, &meta.encode()) {
            let _ = self.inner.storage.delete_topic(name);
            return Err(BrokerError::metadata(source));
        }
        Ok(topic)
    }

    pub(in crate::broker) fn open_topic(
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
            let (writer, jobs) = mpsc::channel(writer::QUEUE_DEPTH);
            let group_bytes = writer::MAX_GROUP_BYTES.min(settings.segment_bytes as usize / 2);
            let health = writer::HealthReport {
                health: self.inner.storage_health.clone(),
                topic: name.to_owned(),
                partition,
            };
            self.inner
                .tasks
                .spawn(writer::run(log.clone(), jobs, group_bytes, health));
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

    pub(super) fn spawn_retention_loop(&self) {
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
