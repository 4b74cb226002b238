//! The broker's side of subscriptions: creating, finding, attaching to,
//! seeking and deleting them, and starting their tasks at open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::MutexGuard;
use tokio::sync::{mpsc, oneshot};

use super::dispatch::Dispatcher;
use super::{
    AckSet, AttachOptions, Command, Consumer, MAX_ACK_DEADLINE, SubscriptionHandle,
    SubscriptionInfo, SubscriptionSettings, SubscriptionSpec, SubscriptionStats, SubscriptionTask,
};
use crate::broker::records::{CursorRecord, SubscriptionRecord};
use crate::broker::topic::{AdminState, validate_subscription_name, validate_topic_name};
use crate::broker::{Broker, BrokerError, Position, Result, Topic};
use crate::storage::system_clock;

/// Default time to ack a delivery.
pub(crate) const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Shortest accepted ack deadline.
pub(crate) const MIN_ACK_DEADLINE: Duration = Duration::from_millis(10);

impl Broker {
    /// Creates a subscription on an existing topic.
    pub fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<SubscriptionInfo> {
        validate_topic_name(topic)?;
        validate_subscription_name(name)?;
        let mut admin = self.inner.admin.lock();
        let handle = self.topic(topic)?;
        if handle.subscriptions.lock().contains_key(name) {
            return Err(BrokerError::SubscriptionAlreadyExists {
                topic: topic.to_owned(),
                subscription: name.to_owned(),
            });
        }
        Ok(self
            .create_subscription_locked(&mut admin, topic, &handle, name, spec)?
            .info
            .clone())
    }

    /// A subscription's settings.
    pub fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        Ok(self.subscription(topic, name)?.info.clone())
    }

    /// The subscriptions of a topic, by name.
    pub fn list_subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        validate_topic_name(topic)?;
        let handle = self.topic(topic)?;
        let subscriptions = handle.subscriptions.lock();
        Ok(subscriptions.values().map(|s| s.info.clone()).collect())
    }

    /// Deletes a subscription and its cursor. With consumers attached this
    /// is refused unless `force`, which disconnects them.
    /// Deletes a subscription, and with it its dead-letter topic when that
    /// is one Herald created (the default name) and it holds no events and
    /// no subscriptions; returns the dead-letter topic when it was kept.
    pub async fn delete_subscription(
        &self,
        topic: &str,
        name: &str,
        force: bool,
    ) -> Result<Vec<String>> {
        let handle = self.subscription(topic, name)?;
        let consumers = handle.consumers.load(Ordering::Relaxed);
        if consumers > 0 && !force {
            return Err(BrokerError::SubscriptionHasConsumers {
                subscription: name.to_owned(),
                consumers,
            });
        }
        {
            let _admin = self.inner.admin.lock();
            if let Ok(t) = self.topic(topic) {
                t.subscriptions.lock().remove(name);
            }
        }
        stop_subscription(&handle).await;
        let (t, n) = (topic.to_owned(), name.to_owned());
        self.run_blocking(move |broker| {
            broker
                .inner
                .storage
                .delete_subscription(&t, &n)
                .map_err(BrokerError::metadata)
        })
        .await?;
        tracing::info!(topic, subscription = name, "subscription deleted");
        Ok(self
            .retire_dead_letter_topic(topic, name, &handle.info.settings)
            .await)
    }

    /// After `subscription` of `topic` was deleted: deletes its dead-letter
    /// topic if Herald made it (default name) and nothing would be lost
    /// (no events stored, no subscriptions); returns it when kept.
    pub(in crate::broker) async fn retire_dead_letter_topic(
        &self,
        topic: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> Vec<String> {
        let dlq = &settings.dead_letter_topic;
        let created_by_herald = settings.redelivery.max_delivery_attempts > 0
            && *dlq == format!("{topic}.{subscription}.dlq");
        let Ok(handle) = self.topic(dlq) else {
            return Vec::new();
        };
        if !created_by_herald {
            return Vec::new();
        }
        let empty = handle.subscriptions.lock().is_empty()
            && handle
                .partitions
                .iter()
                .all(|p| p.log.stats().records() == 0);
        if !empty {
            tracing::info!(topic, subscription, dead_letter_topic = %dlq, "dead-letter topic kept: it holds events or subscriptions");
            return vec![dlq.clone()];
        }
        // Boxed: delete_topic retires dead-letter topics in turn.
        match Box::pin(self.delete_topic(dlq)).await {
            Ok(_) => {
                tracing::info!(topic, subscription, dead_letter_topic = %dlq, "empty dead-letter topic deleted with its subscription");
                Vec::new()
            }
            // Deleted meanwhile by someone else: nothing kept.
            Err(BrokerError::TopicNotFound { .. }) => Vec::new(),
            Err(error) => {
                tracing::warn!(dead_letter_topic = %dlq, %error, "could not delete an empty dead-letter topic; it is kept");
                vec![dlq.clone()]
            }
        }
    }

    /// Backlog, unacked, counters and consumers of a subscription.
    pub async fn subscription_stats(&self, topic: &str, name: &str) -> Result<SubscriptionStats> {
        let handle = self.subscription(topic, name)?;
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Stats { reply })
            .await
            .map_err(|_| BrokerError::SubscriptionClosed)?;
        answer.await.map_err(|_| BrokerError::SubscriptionClosed)
    }

    /// Moves a subscription's cursor to `position`: everything before it
    /// counts as acked, everything from it on is delivered (again).
    pub async fn seek(&self, topic: &str, name: &str, position: Position) -> Result<()> {
        let handle = self.subscription(topic, name)?;
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Seek { position, reply })
            .await
            .map_err(|_| BrokerError::SubscriptionClosed)?;
        answer.await.map_err(|_| BrokerError::SubscriptionClosed)?
    }

    /// Attaches a consumer, creating the subscription from `spec` if it does
    /// not exist (and the topic too, when auto-create is on).
    pub async fn attach(
        &self,
        topic: &str,
        name: &str,
        spec: &SubscriptionSpec,
        mut options: AttachOptions,
    ) -> Result<Consumer> {
        if self.is_closing() {
            return Err(BrokerError::ShuttingDown);
        }
        validate_topic_name(topic)?;
        validate_subscription_name(name)?;
        let existing = self
            .inner
            .topics
            .get(topic)
            .and_then(|t| t.subscriptions.lock().get(name).cloned());
        let handle = match existing {
            Some(handle) => handle,
            // Creating the subscription (and maybe its topic) writes metadata.
            None => {
                let (topic, name, spec) = (topic.to_owned(), name.to_owned(), spec.clone());
                self.run_blocking(move |broker| {
                    broker.subscription_for_attach(&topic, &name, &spec)
                })
                .await?
            }
        };
        if handle.info.settings.kind != spec.kind {
            return Err(BrokerError::SubscriptionTypeMismatch {
                subscription: name.to_owned(),
                existing: handle.info.settings.kind.to_string(),
                requested: spec.kind.to_string(),
            });
        }
        let id = self.inner.next_consumer_id.fetch_add(1, Ordering::Relaxed);
        if options.consumer_name.is_empty() {
            options.consumer_name = format!("consumer-{id}");
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Attach {
                id,
                options,
                events: events_tx,
                reply,
            })
            .await
            .map_err(|_| BrokerError::SubscriptionClosed)?;
        let attached = answer
            .await
            .map_err(|_| BrokerError::SubscriptionClosed)??;
        Ok(Consumer::new(
            id,
            events,
            handle.commands.clone(),
            handle.detaches.clone(),
            attached,
        ))
    }

    /// The subscription an attach joins, created from `spec` if missing.
    /// Blocks on metadata writes when it creates.
    fn subscription_for_attach(
        &self,
        topic: &str,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<Arc<SubscriptionHandle>> {
        let topic_handle = self.topic_for_publish(topic)?;
        let mut admin = self.inner.admin.lock();
        let existing = topic_handle.subscriptions.lock().get(name).cloned();
        match existing {
            Some(handle) => Ok(handle),
            None => self.create_subscription_locked(&mut admin, topic, &topic_handle, name, spec),
        }
    }

    fn subscription(&self, topic: &str, name: &str) -> Result<Arc<SubscriptionHandle>> {
        validate_topic_name(topic)?;
        validate_subscription_name(name)?;
        let handle = self.topic(topic)?;
        let found = handle.subscriptions.lock().get(name).cloned();
        found.ok_or_else(|| BrokerError::SubscriptionNotFound {
            topic: topic.to_owned(),
            subscription: name.to_owned(),
        })
    }

    /// Persists and starts a new subscription. Caller holds `admin`.
    fn create_subscription_locked(
        &self,
        admin: &mut MutexGuard<'_, AdminState>,
        topic: &str,
        handle: &Arc<Topic>,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<Arc<SubscriptionHandle>> {
        let settings = self.subscription_settings(topic, name, spec)?;
        if settings.redelivery.max_delivery_attempts > 0 {
            self.ensure_topic_locked(admin, &settings.dead_letter_topic)?;
        }
        let mut cursors = Vec::with_capacity(handle.partitions.len());
        for (partition, p) in handle.partitions.iter().enumerate() {
            let start = spec
                .initial_position
                .resolve(p.log.as_ref(), partition as u32)
                .map_err(|source| BrokerError::from_partition(topic, partition as u32, source))?;
            cursors.push(AckSet::starting_at(start));
        }
        let meta = SubscriptionRecord {
            name: name.to_owned(),
            settings,
            created_at_ms: (system_clock())(),
        };
        let storage = &self.inner.storage;
        storage
            .write_subscription_meta(topic, name, &meta.encode())
            .and_then(|()| {
                let cursor = CursorRecord {
                    partitions: cursors.clone(),
                };
                storage.write_cursor(topic, name, &cursor.encode())
            })
            .map_err(BrokerError::metadata)?;
        tracing::info!(topic, subscription = name, kind = %meta.settings.kind, "subscription created");
        Ok(self.start_subscription(topic, handle, meta, cursors))
    }

    /// Creates `name` with default settings if missing. Caller holds `admin`.
    fn ensure_topic_locked(
        &self,
        admin: &mut MutexGuard<'_, AdminState>,
        name: &str,
    ) -> Result<()> {
        self.wait_for_create(admin, name);
        if self.inner.topics.contains_key(name) {
            return Ok(());
        }
        self.create_locked(admin, name, self.inner.config.topic_defaults.clone())
            .map(|_| ())
    }

    fn subscription_settings(
        &self,
        topic: &str,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Result<SubscriptionSettings> {
        let invalid = |reason: String| Err(BrokerError::InvalidSubscriptionConfig { reason });
        let ack_deadline = spec.ack_deadline.unwrap_or(DEFAULT_ACK_DEADLINE);
        if !(MIN_ACK_DEADLINE..=MAX_ACK_DEADLINE).contains(&ack_deadline) {
            return invalid(format!(
                "ack_deadline is {ack_deadline:?}; use {MIN_ACK_DEADLINE:?} to {MAX_ACK_DEADLINE:?}"
            ));
        }
        let r = &spec.redelivery;
        if r.min_backoff > r.max_backoff {
            return invalid(format!(
                "min_backoff {:?} is above max_backoff {:?}",
                r.min_backoff, r.max_backoff
            ));
        }
        if !(1.0..=100.0).contains(&r.multiplier) {
            return invalid(format!("multiplier is {}; use 1.0 to 100.0", r.multiplier));
        }
        let dead_letter_topic = spec
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{topic}.{name}.dlq"));
        validate_topic_name(&dead_letter_topic).map_err(|e| {
            BrokerError::InvalidSubscriptionConfig {
                reason: format!("dead letter topic: {e}"),
            }
        })?;
        if dead_letter_topic == topic {
            return invalid(
                "the dead letter topic must differ from the subscription's topic".into(),
            );
        }
        Ok(SubscriptionSettings {
            kind: spec.kind,
            ack_deadline,
            redelivery: r.clone(),
            dead_letter_topic,
        })
    }

    /// Starts the subscriptions stored for a topic (at open).
    pub(in crate::broker) fn start_stored_subscriptions(
        &self,
        topic: &str,
        handle: &Arc<Topic>,
    ) -> Result<()> {
        let stored = self
            .inner
            .storage
            .list_subscriptions(topic)
            .map_err(BrokerError::metadata)?;
        for s in stored {
            let meta = SubscriptionRecord::decode(&s.meta, topic, &s.name)?;
            let partitions = handle.partitions.len();
            let mut cursors = match &s.cursor {
                Some(bytes) => CursorRecord::decode(bytes, topic, &s.name)?.partitions,
                None => Vec::new(),
            };
            cursors.resize_with(partitions, AckSet::default);
            self.start_subscription(topic, handle, meta, cursors);
        }
        Ok(())
    }

    /// Spawns the task of a subscription and registers it on its topic.
    fn start_subscription(
        &self,
        topic: &str,
        handle: &Arc<Topic>,
        meta: SubscriptionRecord,
        cursors: Vec<AckSet>,
    ) -> Arc<SubscriptionHandle> {
        let info = SubscriptionInfo {
            topic: topic.to_owned(),
            name: meta.name.clone(),
            settings: meta.settings.clone(),
            created_at_ms: meta.created_at_ms,
        };
        let (commands_tx, commands) = mpsc::channel(1024);
        let (detaches_tx, detaches) = mpsc::unbounded_channel();
        let marks = Arc::new(
            cursors
                .iter()
                .map(|c| AtomicU64::new(c.mark_delete()))
                .collect::<Vec<_>>(),
        );
        let consumers = Arc::new(AtomicU64::new(0));
        let stop = self.inner.cancel.child_token();
        let deleting = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = oneshot::channel();
        let ctx = self.inner.config.subscription_tasks.clone();
        let dispatcher = Dispatcher::new(
            meta.settings.kind,
            meta.settings.redelivery.clone(),
            meta.settings.ack_deadline,
            ctx.max_unacked_per_consumer,
            cursors,
        );
        let task = SubscriptionTask {
            info: info.clone(),
            ctx,
            dispatcher,
            logs: handle.partitions.iter().map(|p| p.log.clone()).collect(),
            storage: self.inner.storage.clone(),
            broker: self.clone(),
            commands,
            detaches,
            marks: marks.clone(),
            consumer_count: consumers.clone(),
            stop: stop.clone(),
            deleting: deleting.clone(),
            tasks: self.inner.tasks.clone(),
        };
        self.inner.tasks.spawn(async move {
            task.run().await;
            let _ = done_tx.send(());
        });
        let subscription = Arc::new(SubscriptionHandle {
            info,
            commands: commands_tx,
            detaches: detaches_tx,
            marks,
            consumers,
            stop,
            deleting,
            done: parking_lot::Mutex::new(Some(done)),
        });
        handle
            .subscriptions
            .lock()
            .insert(meta.name, subscription.clone());
        subscription
    }
}

/// Stops a subscription's task without a final cursor write (it is being
/// deleted) and waits for it to end.
pub(in crate::broker) async fn stop_subscription(handle: &SubscriptionHandle) {
    handle.deleting.store(true, Ordering::Release);
    handle.stop.cancel();
    let done = handle.done.lock().take();
    if let Some(done) = done {
        let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
    }
}

/// The lowest persisted mark-delete of any subscription on `partition`:
/// retention keeps every segment at or after it.
pub(in crate::broker) fn retention_floor(topic: &Topic, partition: usize) -> Option<u64> {
    topic
        .subscriptions
        .lock()
        .values()
        .filter_map(|s| s.marks.get(partition).map(|m| m.load(Ordering::Relaxed)))
        .min()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald::v1::Event;

    use super::*;
    use crate::broker::TopicSettingsPatch;
    use crate::broker::subscription::{ConsumerEvent, RedeliveryPolicy, SubscriptionKind};

    fn broker() -> Broker {
        crate::broker::in_memory_broker()
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                id: format!("e{i}"),
                ..Default::default()
            })
            .collect()
    }

    fn spec(kind: SubscriptionKind) -> SubscriptionSpec {
        SubscriptionSpec {
            kind,
            initial_position: Position::Earliest,
            ack_deadline: Some(Duration::from_secs(30)),
            redelivery: RedeliveryPolicy::default(),
            dead_letter_topic: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unacked_delivery_comes_back_after_the_ack_deadline() {
        let broker = broker();
        broker.publish("t", events(1)).await.unwrap();
        let options = AttachOptions {
            consumer_name: "c".into(),
            priority: 0,
            credits: 10,
        };
        let mut consumer = broker
            .attach("t", "s", &spec(SubscriptionKind::Exclusive), options)
            .await
            .unwrap();
        let first = match consumer.events.recv().await {
            Some(ConsumerEvent::Events(records)) => records,
            other => panic!("expected events, got {other:?}"),
        };
        assert_eq!(first[0].attempt, 1);
        // Paused time: the deadline (30 s) plus the first backoff (1 s) pass
        // without sleeping for real.
        let started = tokio::time::Instant::now();
        let again = match consumer.events.recv().await {
            Some(ConsumerEvent::Events(records)) => records,
            other => panic!("expected a redelivery, got {other:?}"),
        };
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].record.offset, first[0].record.offset);
        assert!(started.elapsed() >= Duration::from_secs(31));
    }

    #[tokio::test]
    async fn lag_is_the_age_of_the_oldest_unacked_event() {
        let broker = broker();
        broker
            .create_topic("lagging", &TopicSettingsPatch::default())
            .unwrap();
        broker
            .create_subscription("lagging", "slow", &spec(SubscriptionKind::Shared))
            .unwrap();
        let caught_up = broker.subscription_stats("lagging", "slow").await.unwrap();
        assert_eq!(caught_up.oldest_unacked_age, None);
        broker.publish("lagging", events(3)).await.unwrap();
        // Append times are wall-clock milliseconds, so real time must pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = broker.subscription_stats("lagging", "slow").await.unwrap();
        assert_eq!(stats.backlog, 3);
        assert!(stats.backlog_bytes > 0);
        let lag = stats.oldest_unacked_age.expect("events are waiting");
        assert!(lag >= Duration::from_millis(50), "{lag:?}");
        broker
            .seek("lagging", "slow", Position::Latest)
            .await
            .unwrap();
        let stats = broker.subscription_stats("lagging", "slow").await.unwrap();
        assert_eq!((stats.backlog, stats.oldest_unacked_age), (0, None));
    }

    #[tokio::test]
    async fn retention_keeps_what_a_subscription_has_not_acknowledged() {
        let broker = broker();
        let patch = TopicSettingsPatch {
            retention_bytes: Some(1),
            ..Default::default()
        };
        broker.create_topic("kept", &patch).unwrap();
        broker
            .create_subscription("kept", "slow", &spec(SubscriptionKind::Shared))
            .unwrap();
        for _ in 0..3 {
            broker.publish("kept", events(5000)).await.unwrap();
        }
        broker.enforce_retention();
        let stats = broker.topic_stats("kept").unwrap();
        assert_eq!(
            stats.partitions[0].first_offset, 0,
            "nothing acknowledged, nothing deleted"
        );

        // Once the subscription has moved on (and its cursor is on disk),
        // retention deletes what it no longer needs.
        broker.seek("kept", "slow", Position::Latest).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            broker.enforce_retention();
            if broker.topic_stats("kept").unwrap().partitions[0].first_offset > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "retention never ran past the cursor"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
