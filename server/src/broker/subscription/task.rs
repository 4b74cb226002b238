//! The task that runs one subscription: reads fresh events from the
//! partition logs, feeds the dispatcher, sends deliveries to consumers,
//! applies their acks, fires deadlines and delays, dead-letters, and
//! persists the cursor in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// aHash, not SipHash: the cache is touched on every delivery and ack.
use ahash::AHashMap as HashMap;
use bytes::Bytes;
use herald::v1::Event;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatch::{AckHandle, AttachRefusal, Dispatcher, EventRef, Output, hash64};
use super::{
    AckSet, Attached, Command, ConsumerEvent, ConsumerStats, CursorRecord, DeliveredRecord,
    SubscriptionInfo, SubscriptionKind, SubscriptionStats,
};
use crate::broker::error::BrokerError;
use crate::broker::{Broker, Position};
use crate::storage::{
    PartitionLog, PartitionStats, Storage, StorageError, StoredRecord, system_clock,
};

/// Most fresh events read ahead of delivery.
const READ_AHEAD_CAP: usize = 2048;
/// Records per log read.
const READ_CHUNK: usize = 512;

/// How a subscription task persists its cursor and bounds consumers.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Flush the cursor at least this often while it changes.
    pub cursor_flush_interval: Duration,
    /// ...or after this many acks, whichever comes first.
    pub cursor_flush_acks: u64,
    /// Most unacked events per consumer.
    pub max_unacked_per_consumer: u64,
}

impl Default for TaskContext {
    fn default() -> Self {
        Self {
            cursor_flush_interval: Duration::from_millis(100),
            cursor_flush_acks: 1000,
            max_unacked_per_consumer: 10_000,
        }
    }
}

/// One subscription's running state.
pub(crate) struct SubscriptionTask {
    pub info: SubscriptionInfo,
    pub ctx: TaskContext,
    pub dispatcher: Dispatcher,
    pub logs: Vec<Arc<dyn PartitionLog>>,
    pub storage: Arc<dyn Storage>,
    pub broker: Broker,
    pub commands: mpsc::Receiver<Command>,
    pub detaches: mpsc::UnboundedReceiver<u64>,
    pub marks: Arc<Vec<AtomicU64>>,
    pub consumer_count: Arc<AtomicU64>,
    pub stop: CancellationToken,
    /// Set when the subscription is being deleted: no final cursor write.
    pub deleting: Arc<std::sync::atomic::AtomicBool>,
    pub tasks: TaskTracker,
}

struct Running {
    /// Durable ends of the partitions, watched for new events.
    ends: Vec<watch::Receiver<u64>>,
    /// Next offset to read as fresh, per partition.
    read_pos: Vec<u64>,
    /// Records of fresh events not delivered yet.
    cache: HashMap<EventRef, StoredRecord>,
    /// Where each consumer's events go.
    consumers: HashMap<u64, mpsc::UnboundedSender<ConsumerEvent>>,
    /// Cursor changed since the last snapshot went to the flusher.
    dirty: bool,
    acks_since_flush: u64,
    flush_due: Option<Instant>,
    /// The latest cursor snapshot, written by the flusher task.
    cursor_tx: watch::Sender<Option<Vec<AckSet>>>,
    /// Dead-letter publishes report back here.
    dlq_tx: mpsc::UnboundedSender<(EventRef, bool)>,
    dlq_rx: mpsc::UnboundedReceiver<(EventRef, bool)>,
    /// Id and type of each delivered, unfinished event, kept only while
    /// debug logging is on, so ack and nack lines can name the event.
    delivered: HashMap<EventRef, (String, String, u32)>,
}

impl SubscriptionTask {
    /// Runs until stopped (delete, topic delete, shutdown) or storage fails.
    pub async fn run(mut self) {
        let (dlq_tx, dlq_rx) = mpsc::unbounded_channel();
        let (cursor_tx, cursor_rx) = watch::channel(None);
        let flusher = self.tasks.spawn(flush_cursors(
            self.storage.clone(),
            self.info.topic.clone(),
            self.info.name.clone(),
            self.marks.clone(),
            cursor_rx,
            self.ctx.cursor_flush_interval,
        ));
        let mut run = Running {
            ends: self.logs.iter().map(|l| l.watch_end()).collect(),
            read_pos: self
                .dispatcher
                .cursors()
                .iter()
                .map(AckSet::mark_delete)
                .collect(),
            cache: HashMap::new(),
            consumers: HashMap::new(),
            dirty: false,
            acks_since_flush: 0,
            flush_due: None,
            cursor_tx,
            dlq_tx,
            dlq_rx,
            delivered: HashMap::new(),
        };
        let outcome = self.serve(&mut run).await;
        if !self.deleting.load(Ordering::Acquire) {
            self.flush(&mut run);
        }
        // Dropping `run` drops the snapshot sender: the flusher writes the
        // last snapshot, then ends.
        let consumers: Vec<_> = run.consumers.drain().collect();
        drop(run);
        let _ = flusher.await;
        let reason = match outcome {
            Ok(()) if self.broker.is_closing() => BrokerError::ShuttingDown,
            Ok(()) => BrokerError::SubscriptionClosed,
            Err(error) => {
                tracing::error!(topic = %self.info.topic, subscription = %self.info.name, %error, "subscription stopped");
                error
            }
        };
        for (_, tx) in consumers {
            let _ = tx.send(ConsumerEvent::Closed(clone_error(&reason)));
        }
    }

    async fn serve(&mut self, run: &mut Running) -> Result<(), BrokerError> {
        loop {
            self.fill(run)?;
            let now = Instant::now();
            let outputs = self.dispatcher.dispatch(now);
            self.apply(run, outputs)?;
            if run.dirty && run.acks_since_flush >= self.ctx.cursor_flush_acks {
                self.flush(run);
            }
            let wakeup = self.dispatcher.next_wakeup();
            let flush_due = run.flush_due;
            // Wake on new events while there is room to read them, or to
            // learn that events are waiting (so held consumers are told);
            // clones share the originals' "seen" versions.
            let room = self.dispatcher.read_ahead(READ_AHEAD_CAP) > self.dispatcher.fresh_len();
            let wake_on_data = room || !self.dispatcher.has_unread();
            let mut watchers = if wake_on_data {
                run.ends.clone()
            } else {
                Vec::new()
            };
            let new_data = async move {
                if watchers.is_empty() {
                    return std::future::pending::<()>().await;
                }
                let waits = watchers.iter_mut().map(|w| Box::pin(w.changed()));
                if futures::future::select_all(waits).await.0.is_err() {
                    // The log is gone (topic deleted); the delete stops us.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(run, command).await?,
                    None => return Ok(()),
                },
                Some(id) = self.detaches.recv() => {
                    run.consumers.remove(&id);
                    self.consumer_count.store(run.consumers.len() as u64, Ordering::Relaxed);
                    let outputs = self.dispatcher.detach(id, Instant::now());
                    self.apply(run, outputs)?;
                }
                Some((event, published)) = run.dlq_rx.recv() => {
                    self.dispatcher.dead_lettered(event, published, Instant::now());
                    if published {
                        self.cursor_changed(run);
                    }
                }
                _ = sleep_until(wakeup), if wakeup.is_some() => {
                    let outputs = self.dispatcher.tick(Instant::now());
                    self.apply(run, outputs)?;
                }
                _ = sleep_until(flush_due), if flush_due.is_some() => self.flush(run),
                _ = new_data => {}
            }
        }
    }

    /// Reads fresh events while the dispatcher can use them, and tells it
    /// whether more are waiting in the log.
    fn fill(&mut self, run: &mut Running) -> Result<(), BrokerError> {
        self.read_fresh(run)?;
        // Marks every end as seen: it is either read or recorded as unread,
        // so waiting on the watchers below cannot spin.
        let mut unread = false;
        for (end, read_pos) in run.ends.iter_mut().zip(&run.read_pos) {
            unread |= *read_pos < *end.borrow_and_update();
        }
        self.dispatcher.set_unread(unread);
        Ok(())
    }

    fn read_fresh(&mut self, run: &mut Running) -> Result<(), BrokerError> {
        let limit = self.dispatcher.read_ahead(READ_AHEAD_CAP);
        let key_shared = self.dispatcher.kind() == SubscriptionKind::KeyShared;
        loop {
            let mut progressed = false;
            for partition in 0..self.logs.len() {
                let room = limit.saturating_sub(self.dispatcher.fresh_len());
                if room == 0 {
                    return Ok(());
                }
                let end = *run.ends[partition].borrow_and_update();
                if run.read_pos[partition] >= end {
                    continue;
                }
                let records = self.logs[partition]
                    .read(run.read_pos[partition], room.min(READ_CHUNK), 4 << 20)
                    .map_err(|e| self.storage_error(partition as u32, e))?;
                for record in records {
                    let event = (partition as u32, record.offset);
                    run.read_pos[partition] = record.offset + 1;
                    if self.dispatcher.cursors()[partition].contains(record.offset) {
                        continue;
                    }
                    let key = if key_shared {
                        event_key(&record.payload)
                    } else {
                        None
                    };
                    self.dispatcher.offer(event, key);
                    run.cache.insert(event, record);
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Carries out the dispatcher's outputs.
    fn apply(&mut self, run: &mut Running, outputs: Vec<Output>) -> Result<(), BrokerError> {
        let mut batches: HashMap<u64, Vec<DeliveredRecord>> = HashMap::new();
        for output in outputs {
            match output {
                Output::Deliver(d) => {
                    let event = (d.handle.partition, d.handle.offset);
                    let Some(record) = self.record(run, event)? else {
                        // Gone from the log (retention or seek): nothing to deliver.
                        let _ =
                            self.dispatcher
                                .ack(d.consumer, [d.handle.to_string().as_str()], false);
                        continue;
                    };
                    self.trace_delivery(run, &record, event, d.attempt);
                    batches
                        .entry(d.consumer)
                        .or_default()
                        .push(DeliveredRecord {
                            partition: d.handle.partition,
                            record,
                            attempt: d.attempt,
                            handle: d.handle.to_string(),
                            epoch: d.epoch,
                        });
                }
                Output::ActiveStatus {
                    consumer,
                    active,
                    active_consumer,
                    epoch,
                    partitions,
                } => send(
                    run,
                    consumer,
                    ConsumerEvent::ActiveStatus {
                        active,
                        active_consumer,
                        epoch,
                        partitions,
                    },
                ),
                Output::Held {
                    consumer,
                    reason,
                    outstanding,
                    credits,
                } => send(
                    run,
                    consumer,
                    ConsumerEvent::Held {
                        reason,
                        outstanding,
                        credits,
                    },
                ),
                Output::DeadLetter {
                    event,
                    attempts,
                    reason,
                } => self.dead_letter(run, event, attempts, reason)?,
            }
        }
        for (consumer, events) in batches {
            send(run, consumer, ConsumerEvent::Events(events));
        }
        Ok(())
    }

    /// The record of `event`: from the read-ahead cache, else from the log.
    fn record(
        &self,
        run: &mut Running,
        event: EventRef,
    ) -> Result<Option<StoredRecord>, BrokerError> {
        if let Some(record) = run.cache.remove(&event) {
            return Ok(Some(record));
        }
        let records = self.logs[event.0 as usize]
            .read(event.1, 1, 0)
            .map_err(|e| self.storage_error(event.0, e))?;
        Ok(records.into_iter().next().filter(|r| r.offset == event.1))
    }

    /// Publishes an event that failed too often to the dead-letter topic,
    /// with where it came from and why in its attributes.
    fn dead_letter(
        &mut self,
        run: &mut Running,
        event: EventRef,
        attempts: u32,
        reason: String,
    ) -> Result<(), BrokerError> {
        let Some(record) = self.record(run, event)? else {
            self.dispatcher.dead_lettered(event, true, Instant::now());
            return Ok(());
        };
        let mut dead = Event::decode(record.payload.clone()).unwrap_or_default();
        let attributes = [
            ("herald_dlq_source_topic", self.info.topic.clone()),
            ("herald_dlq_source_partition", event.0.to_string()),
            ("herald_dlq_source_offset", event.1.to_string()),
            ("herald_dlq_subscription", self.info.name.clone()),
            ("herald_dlq_attempts", attempts.to_string()),
            ("herald_dlq_reason", reason.clone()),
        ];
        dead.attributes
            .extend(attributes.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let topic = self.info.settings.dead_letter_topic.clone();
        let broker = self.broker.clone();
        let done = run.dlq_tx.clone();
        let (source, subscription) = (self.info.topic.clone(), self.info.name.clone());
        run.delivered.remove(&event);
        let span = if crate::telemetry::sample_event(&dead.attributes) {
            let span = tracing::info_span!(
                "herald.dead_letter",
                otel.name = %format_args!("dead-letter {source}"),
                messaging.system = "herald",
                messaging.operation = "dead_letter",
                messaging.destination.name = %source,
                messaging.consumer.group.name = %subscription,
                messaging.message.id = %dead.id,
                herald.dead_letter_topic = %topic,
                herald.delivery_attempt = attempts,
                herald.reason = %reason,
            );
            crate::telemetry::set_parent(&span, &dead.attributes);
            span
        } else {
            tracing::Span::none()
        };
        let (message_id, event_type) = (dead.id.clone(), dead.r#type.clone());
        let publish = async move {
            let published = match broker.publish(&topic, vec![dead]).await {
                Ok(_) => {
                    tracing::warn!(
                        message_id = %message_id,
                        topic = %source,
                        subscription = %subscription,
                        event_type = %event_type,
                        status = "dead_lettered",
                        attempt = attempts,
                        partition = event.0,
                        offset = event.1,
                        %reason,
                        dead_letter_topic = %topic,
                        "event dead-lettered"
                    );
                    true
                }
                Err(error) => {
                    tracing::error!(topic = %source, subscription = %subscription, %error, "dead-letter publish failed; will retry");
                    false
                }
            };
            let _ = done.send((event, published));
        };
        self.tasks
            .spawn(tracing::Instrument::instrument(publish, span));
        Ok(())
    }

    async fn handle(&mut self, run: &mut Running, command: Command) -> Result<(), BrokerError> {
        let now = Instant::now();
        match command {
            Command::Attach {
                id,
                options,
                events,
                reply,
            } => {
                let attached = self.dispatcher.attach(
                    id,
                    &options.consumer_name,
                    options.priority,
                    options.credits,
                );
                match attached {
                    Ok(outputs) => {
                        run.consumers.insert(id, events);
                        self.consumer_count
                            .store(run.consumers.len() as u64, Ordering::Relaxed);
                        let _ = reply.send(Ok(Attached {
                            consumer_name: options.consumer_name,
                            kind: self.dispatcher.kind(),
                            partitions: self.logs.len() as u32,
                        }));
                        self.apply(run, outputs)?;
                    }
                    Err(refusal) => {
                        let error = match refusal {
                            AttachRefusal::ExclusiveHeld { holder } => {
                                BrokerError::ExclusiveConsumerAttached {
                                    subscription: self.info.name.clone(),
                                    holder,
                                }
                            }
                            AttachRefusal::NameTaken { name } => BrokerError::ConsumerNameTaken {
                                subscription: self.info.name.clone(),
                                name,
                            },
                        };
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Ack {
                consumer,
                handles,
                cumulative,
            } => {
                let _span = self.step_span("ack", handles.len()).entered();
                self.log_finished(run, &handles, "acked", None);
                let outcome =
                    self.dispatcher
                        .ack(consumer, handles.iter().map(String::as_str), cumulative);
                if outcome.acked > 0 {
                    run.acks_since_flush += outcome.acked;
                    self.cursor_changed(run);
                }
                report(run, consumer, outcome.invalid, outcome.stale);
            }
            Command::Nack {
                consumer,
                handles,
                delay,
                reason,
            } => {
                let span = self.step_span("nack", handles.len());
                span.record("herald.reason", reason.as_str());
                let _span = span.entered();
                self.log_finished(run, &handles, "nacked", Some(&reason));
                let (outcome, outputs) = self.dispatcher.nack(
                    consumer,
                    handles.iter().map(String::as_str),
                    delay,
                    &reason,
                    now,
                );
                report(run, consumer, outcome.invalid, outcome.stale);
                self.apply(run, outputs)?;
            }
            Command::Extend {
                consumer,
                handles,
                extension,
            } => {
                let outcome = self.dispatcher.extend(
                    consumer,
                    handles.iter().map(String::as_str),
                    extension,
                    now,
                );
                report(run, consumer, outcome.invalid, outcome.stale);
            }
            Command::Credit { consumer, credits } => self.dispatcher.credit(consumer, credits),
            Command::Seek { position, reply } => {
                let result = self.seek(run, &position).await;
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats(run));
            }
        }
        Ok(())
    }

    async fn seek(&mut self, run: &mut Running, position: &Position) -> Result<(), BrokerError> {
        let mut cursors = Vec::with_capacity(self.logs.len());
        for (partition, log) in self.logs.iter().enumerate() {
            if let Position::Offsets(offsets) = position
                && let Some(&offset) = offsets.get(&(partition as u32))
            {
                let next = log.stats().next_offset;
                if offset > next {
                    return Err(BrokerError::SeekPastEnd {
                        partition: partition as u32,
                        offset,
                        next_offset: next,
                    });
                }
            }
            let start = position
                .resolve(log.as_ref(), partition as u32)
                .map_err(|e| self.storage_error(partition as u32, e))?;
            cursors.push(AckSet::starting_at(start));
        }
        run.read_pos = cursors.iter().map(AckSet::mark_delete).collect();
        run.cache.clear();
        self.dispatcher.seek(cursors);
        run.dirty = true;
        self.flush(run);
        tracing::info!(topic = %self.info.topic, subscription = %self.info.name, ?position, "subscription seeked");
        Ok(())
    }

    fn stats(&self, run: &Running) -> SubscriptionStats {
        let mut backlog = 0;
        let mut backlog_bytes = 0;
        let mut oldest_ms = None;
        for (partition, cursor) in self.dispatcher.cursors().iter().enumerate() {
            let end = *run.ends[partition].borrow();
            let mark = cursor.mark_delete();
            if end > mark {
                let waiting = end - mark - cursor.count_in(mark, end);
                backlog += waiting;
                let log = &self.logs[partition];
                backlog_bytes += estimated_bytes(waiting, &log.stats());
                // The mark-delete offset is the oldest unacked event of the
                // partition (everything below is acked): one indexed read.
                if let Ok(records) = log.read(mark, 1, 0)
                    && let Some(record) = records.first()
                {
                    let at = record.timestamp_ms;
                    oldest_ms = Some(oldest_ms.map_or(at, |o: i64| o.min(at)));
                }
            }
        }
        let counters = self.dispatcher.counters();
        SubscriptionStats {
            backlog,
            backlog_bytes,
            oldest_unacked_age: oldest_ms.map(|at| age(at, (system_clock())())),
            unacked: self.dispatcher.unacked(),
            delivered: counters.delivered,
            redelivered: counters.redelivered,
            acked: counters.acked,
            nacked: counters.nacked,
            dead_lettered: counters.dead_lettered,
            consumers: self
                .dispatcher
                .consumers()
                .into_iter()
                .map(|c| ConsumerStats {
                    name: c.name,
                    outstanding: c.outstanding,
                    credits: c.credits,
                    active: c.active,
                })
                .collect(),
        }
    }

    fn cursor_changed(&self, run: &mut Running) {
        run.dirty = true;
        if run.flush_due.is_none() {
            run.flush_due = Some(Instant::now() + self.ctx.cursor_flush_interval);
        }
    }

    /// Hands the current cursor to the flusher if it changed. The write
    /// happens off this task, so delivery never waits for an fsync.
    fn flush(&self, run: &mut Running) {
        run.flush_due = None;
        if !run.dirty {
            return;
        }
        run.dirty = false;
        run.acks_since_flush = 0;
        run.cursor_tx
            .send_replace(Some(self.dispatcher.cursors().to_vec()));
    }

    /// When traces are exported or debug logging is on: a `deliver` (or
    /// `redeliver`) span whose parent is the producer's context from the
    /// event's `traceparent`, and the per-event log line. Costs nothing
    /// otherwise (the event is only decoded for these).
    fn trace_delivery(
        &self,
        run: &mut Running,
        record: &StoredRecord,
        event: EventRef,
        attempt: u32,
    ) {
        let exporting = crate::telemetry::exporting();
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        if !exporting && !debug {
            return;
        }
        let Ok(decoded) = Event::decode(record.payload.clone()) else {
            return;
        };
        let operation = if attempt > 1 { "redeliver" } else { "deliver" };
        if crate::telemetry::sample_event(&decoded.attributes) {
            let span = tracing::info_span!(
                "herald.deliver",
                otel.name = %format_args!("{operation} {}", self.info.topic),
                otel.kind = "producer",
                messaging.system = "herald",
                messaging.operation = operation,
                messaging.destination.name = %self.info.topic,
                messaging.destination.partition.id = event.0,
                messaging.consumer.group.name = %self.info.name,
                messaging.message.id = %decoded.id,
                herald.offset = event.1,
                herald.delivery_attempt = attempt,
            );
            crate::telemetry::set_parent(&span, &decoded.attributes);
            drop(span.entered());
        }
        if debug {
            tracing::debug!(
                message_id = %decoded.id,
                topic = %self.info.topic,
                subscription = %self.info.name,
                event_type = %decoded.r#type,
                status = if attempt > 1 { "redelivered" } else { "delivered" },
                attempt,
                partition = event.0,
                offset = event.1,
                "event delivered"
            );
            run.delivered
                .insert(event, (decoded.id, decoded.r#type, attempt));
        }
    }

    /// The span of one ack or nack request, when traces are exported.
    fn step_span(&self, operation: &'static str, events: usize) -> tracing::Span {
        if !crate::telemetry::sample_root() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "herald.settle",
            otel.name = %format_args!("{operation} {}", self.info.topic),
            messaging.system = "herald",
            messaging.operation = operation,
            messaging.destination.name = %self.info.topic,
            messaging.consumer.group.name = %self.info.name,
            messaging.batch.message_count = events,
            herald.reason = tracing::field::Empty,
        )
    }

    /// The per-event debug line of an ack or nack, for events this task
    /// delivered while debug logging was on.
    fn log_finished(
        &self,
        run: &mut Running,
        handles: &[String],
        status: &str,
        reason: Option<&str>,
    ) {
        if run.delivered.is_empty() {
            return;
        }
        for handle in handles {
            let Ok(handle) = handle.parse::<AckHandle>() else {
                continue;
            };
            if let Some((id, event_type, attempt)) =
                run.delivered.remove(&(handle.partition, handle.offset))
            {
                tracing::debug!(
                    message_id = %id,
                    topic = %self.info.topic,
                    subscription = %self.info.name,
                    event_type = %event_type,
                    status,
                    attempt,
                    reason,
                    "event {status}"
                );
            }
        }
    }

    fn storage_error(&self, partition: u32, source: StorageError) -> BrokerError {
        BrokerError::from_partition(&self.info.topic, partition, source)
    }
}

/// `events` of a partition's backlog in bytes, at the partition's average
/// stored event size (see [`SubscriptionStats::backlog_bytes`]).
fn estimated_bytes(events: u64, log: &PartitionStats) -> u64 {
    let stored = log.records();
    if stored == 0 {
        return 0;
    }
    // u128: bytes × events overflows u64 near 4 GiB × 4 G events.
    (log.bytes as u128 * events.min(stored) as u128 / stored as u128) as u64
}

/// How long ago `appended_ms` was at `now_ms`; zero if the clock went back.
fn age(appended_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(appended_ms).max(0) as u64)
}

fn send(run: &mut Running, consumer: u64, event: ConsumerEvent) {
    if let Some(tx) = run.consumers.get(&consumer) {
        // A consumer whose stream is gone is detached through its handle's drop.
        let _ = tx.send(event);
    }
}

fn report(run: &mut Running, consumer: u64, invalid: Vec<String>, stale: Vec<String>) {
    if !invalid.is_empty() || !stale.is_empty() {
        send(run, consumer, ConsumerEvent::AckResult { invalid, stale });
    }
}

/// The ordering key hash of a stored envelope, if it has a key.
fn event_key(payload: &Bytes) -> Option<u64> {
    let event = Event::decode(payload.clone()).ok()?;
    (!event.key.is_empty()).then(|| hash64(&event.key))
}

/// Writes each new cursor snapshot (the latest wins when writes are slower
/// than acks), at most once per `interval`, until the sender is dropped and
/// the last snapshot is written. A failed write is retried; the marks used
/// by retention only move once a cursor is on disk.
async fn flush_cursors(
    storage: Arc<dyn Storage>,
    topic: String,
    name: String,
    marks: Arc<Vec<AtomicU64>>,
    mut snapshots: watch::Receiver<Option<Vec<AckSet>>>,
    interval: Duration,
) {
    while snapshots.changed().await.is_ok() {
        let Some(cursors) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let bytes = serde_json::to_vec(&CursorRecord {
            partitions: cursors.clone(),
        })
        .expect("cursors always serialize");
        let mut failures = 0;
        loop {
            let (s, t, n, b) = (storage.clone(), topic.clone(), name.clone(), bytes.clone());
            match tokio::task::spawn_blocking(move || s.write_cursor(&t, &n, &b)).await {
                Ok(Ok(())) => {
                    for (mark, cursor) in marks.iter().zip(&cursors) {
                        mark.store(cursor.mark_delete(), Ordering::Relaxed);
                    }
                    break;
                }
                // The subscription (or its topic) was deleted meanwhile.
                Ok(Err(error)) if error.is_not_found() => return,
                Ok(Err(error)) => {
                    tracing::error!(%topic, subscription = %name, %error, "cursor flush failed; retrying")
                }
                Err(join) => tracing::error!(%join, "cursor flush task failed; retrying"),
            }
            failures += 1;
            let closed = snapshots.has_changed().is_err();
            if (closed && failures >= 5) || snapshots.has_changed().unwrap_or(false) {
                // Give up at shutdown, or let a newer snapshot supersede.
                break;
            }
            tokio::time::sleep(interval).await;
        }
        if snapshots.has_changed().is_ok() {
            tokio::time::sleep(interval).await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Errors are not Clone (they hold sources); consumers get a copy that
/// keeps the message and the mapping.
fn clone_error(error: &BrokerError) -> BrokerError {
    match error {
        BrokerError::ShuttingDown => BrokerError::ShuttingDown,
        BrokerError::SubscriptionClosed => BrokerError::SubscriptionClosed,
        BrokerError::TopicDeleted { topic } => BrokerError::TopicDeleted {
            topic: topic.clone(),
        },
        other => BrokerError::SubscriptionFailed {
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_from_append_time_and_never_goes_negative() {
        assert_eq!(age(1_000, 3_500), Duration::from_millis(2_500));
        assert_eq!(age(5_000, 4_000), Duration::ZERO);
    }

    #[test]
    fn backlog_bytes_scale_with_the_average_event_size() {
        let log = PartitionStats {
            first_offset: 10,
            next_offset: 110,
            bytes: 20_000,
            segments: 1,
            last_timestamp_ms: None,
        };
        assert_eq!(estimated_bytes(40, &log), 8_000);
        assert_eq!(estimated_bytes(0, &log), 0);
        // A backlog reaching below retention counts only what is stored.
        assert_eq!(estimated_bytes(500, &log), 20_000);
        assert_eq!(estimated_bytes(5, &PartitionStats::default()), 0);
    }
}
