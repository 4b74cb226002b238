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
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cursor::flush_cursors;
use super::dispatch::{AttachRefusal, Dispatcher, EventRef, Output, hash64};
use super::{
    AckSet, Attached, Command, ConsumerEvent, DeliveredRecord, SubscriptionInfo, SubscriptionKind,
};
use crate::broker::error::BrokerError;
use crate::broker::telemetry::{self, DeliveryLog};
use crate::broker::{Broker, EncodedEvent, Position};
use crate::storage::{PartitionLog, Storage, StorageError, StoredRecord};

/// Most fresh events read ahead of delivery.
const READ_AHEAD_CAP: usize = 2048;
/// Records per log read.
const READ_CHUNK: usize = 512;
/// First pause after a storage failure; doubles while failures repeat.
const MIN_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries of failing storage.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// What the serve loop does after a step.
enum Step {
    Continue,
    Stop,
}

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

pub(super) struct Running {
    /// Durable ends of the partitions, watched for new events.
    pub ends: Vec<watch::Receiver<u64>>,
    /// Next offset to read as fresh, per partition.
    pub read_pos: Vec<u64>,
    /// Records of fresh events not delivered yet.
    pub cache: HashMap<EventRef, StoredRecord>,
    /// Where each consumer's events go.
    pub consumers: HashMap<u64, mpsc::UnboundedSender<ConsumerEvent>>,
    /// Cursor changed since the last snapshot went to the flusher.
    pub dirty: bool,
    pub acks_since_flush: u64,
    pub flush_due: Option<Instant>,
    /// The latest cursor snapshot, written by the flusher task.
    pub cursor_tx: watch::Sender<Option<Vec<AckSet>>>,
    /// Dead-letter publishes report back here.
    pub dlq_tx: mpsc::UnboundedSender<(EventRef, bool)>,
    pub dlq_rx: mpsc::UnboundedReceiver<(EventRef, bool)>,
    /// Per-event debug lines and spans.
    pub log: DeliveryLog,
    /// Set after a storage failure: no reads until then.
    pub paused_until: Option<Instant>,
    /// The pause after the next storage failure.
    pub retry_backoff: Duration,
}

impl SubscriptionTask {
    /// Runs until stopped (delete, topic delete, shutdown).
    pub(crate) async fn run(mut self) {
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
            log: DeliveryLog::default(),
            paused_until: None,
            retry_backoff: MIN_RETRY_BACKOFF,
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
            let _ = tx.send(ConsumerEvent::Closed(reason.clone()));
        }
    }

    /// Serves until stopped. A storage failure does not end the
    /// subscription: its consumers are closed with the error (so they see
    /// what failed and reconnect) and reading is retried with backoff, so
    /// the subscription resumes once storage recovers.
    async fn serve(&mut self, run: &mut Running) -> Result<(), BrokerError> {
        loop {
            match self.step(run).await {
                Ok(Step::Continue) => {}
                Ok(Step::Stop) => return Ok(()),
                Err(error @ BrokerError::Storage { .. }) => self.pause(run, error),
                Err(error) => return Err(error),
            }
        }
    }

    /// Closes every consumer with `error` and stops reading until
    /// `run.paused_until`.
    fn pause(&mut self, run: &mut Running, error: BrokerError) {
        let retry_in = run.retry_backoff;
        tracing::error!(
            topic = %self.info.topic,
            subscription = %self.info.name,
            %error,
            ?retry_in,
            "subscription paused: storage failed; consumers were closed with the error"
        );
        let now = Instant::now();
        for (id, tx) in run.consumers.drain() {
            let _ = tx.send(ConsumerEvent::Closed(error.clone()));
            // Their unacked events go back for redelivery; nobody is left
            // to receive what the detach would hand over.
            let _ = self.dispatcher.detach(id, now);
        }
        self.consumer_count.store(0, Ordering::Relaxed);
        run.paused_until = Some(now + retry_in);
        run.retry_backoff = (retry_in * 2).min(MAX_RETRY_BACKOFF);
    }

    /// One round: read, dispatch, then wait for the next thing to happen.
    async fn step(&mut self, run: &mut Running) -> Result<Step, BrokerError> {
        if run.paused_until.is_none() {
            self.fill(run)?;
            run.retry_backoff = MIN_RETRY_BACKOFF;
        }
        let now = Instant::now();
        let outputs = self.dispatcher.dispatch(now);
        self.apply(run, outputs)?;
        if run.dirty && run.acks_since_flush >= self.ctx.cursor_flush_acks {
            self.flush(run);
        }
        let wakeup = self.dispatcher.next_wakeup();
        let flush_due = run.flush_due;
        let paused_until = run.paused_until;
        // Wake on new events while there is room to read them, or to
        // learn that events are waiting (so held consumers are told);
        // clones share the originals' "seen" versions.
        let room = self.dispatcher.read_ahead(READ_AHEAD_CAP) > self.dispatcher.fresh_len();
        // While paused the ends are not read, so watching them would spin.
        let wake_on_data = run.paused_until.is_none() && (room || !self.dispatcher.has_unread());
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
            _ = self.stop.cancelled() => return Ok(Step::Stop),
            command = self.commands.recv() => match command {
                Some(command) => self.handle(run, command).await?,
                None => return Ok(Step::Stop),
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
            _ = sleep_until(paused_until), if paused_until.is_some() => run.paused_until = None,
            _ = new_data => {}
        }
        Ok(Step::Continue)
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
                        ordering_key(&record.payload)
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
                    run.log
                        .delivered(&self.info, &record.payload, event, d.attempt);
                    batches
                        .entry(d.consumer)
                        .or_default()
                        .push(DeliveredRecord {
                            partition: d.handle.partition,
                            record: record.into(),
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
    pub(super) fn record(
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
                let _span = telemetry::settle_span(&self.info, "ack", handles.len()).entered();
                run.log.finished(&self.info, &handles, "acked", None);
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
                let span = telemetry::settle_span(&self.info, "nack", handles.len());
                span.record("herald.reason", reason.as_str());
                let _span = span.entered();
                run.log
                    .finished(&self.info, &handles, "nacked", Some(&reason));
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

    fn storage_error(&self, partition: u32, source: StorageError) -> BrokerError {
        BrokerError::from_partition(&self.info.topic, partition, source)
    }
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The ordering key hash of a stored event, if it has a key, read in place.
fn ordering_key(payload: &Bytes) -> Option<u64> {
    let event = EncodedEvent::parse(payload.clone()).ok()?;
    (!event.key().is_empty()).then(|| hash64(event.key()))
}
