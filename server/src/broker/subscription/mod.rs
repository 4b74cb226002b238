//! Subscriptions: named, durable cursors on a topic, each driven by one task
//! that reads the topic, runs the [`dispatch::Dispatcher`] state machine,
//! and persists the cursor. Consumers talk to that task through a
//! [`Consumer`] handle; nothing here knows about gRPC.

mod ack_set;
mod cursor;
mod dead_letter;
pub(crate) mod dispatch;
pub(crate) mod registry;
mod stats;
mod task;

#[cfg(test)]
mod dispatch_tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use ack_set::AckSet;
pub use dispatch::{HeldReason, RedeliveryPolicy, SubscriptionKind};
pub(crate) use task::{SubscriptionTask, TaskContext};

use super::error::{BrokerError, Result};
use super::position::Position;

/// Longest accepted ack deadline.
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(3600);

/// A subscription's settings, fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSettings {
    /// How events are shared among the subscription's consumers.
    pub kind: SubscriptionKind,
    /// Redeliver an event not acked within this time.
    pub ack_deadline: Duration,
    /// Redelivery backoff and dead-lettering.
    pub redelivery: RedeliveryPolicy,
    /// Where events past `max_delivery_attempts` go.
    pub dead_letter_topic: String,
}

/// A subscription as the admin API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInfo {
    /// The topic the subscription reads.
    pub topic: String,
    /// The subscription's name, unique within its topic.
    pub name: String,
    /// The subscription's settings.
    pub settings: SubscriptionSettings,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// What a request asks of a subscription when it may create it.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// How events are shared among consumers; must match the type of an
    /// existing subscription.
    pub kind: SubscriptionKind,
    /// Where a new subscription starts. Default latest.
    pub initial_position: Position,
    /// Default 30 s.
    pub ack_deadline: Option<Duration>,
    /// For a new subscription.
    pub redelivery: RedeliveryPolicy,
    /// Default `<topic>.<subscription>.dlq`.
    pub dead_letter_topic: Option<String>,
}

/// A consumer's wishes at attach.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Unique among the subscription's consumers; empty: one is made up.
    pub consumer_name: String,
    /// Failover: lower is preferred.
    pub priority: i32,
    /// Credits granted up front.
    pub credits: u64,
}

/// One event delivered to a consumer.
#[derive(Debug, Clone)]
pub struct DeliveredRecord {
    /// The partition the event is in.
    pub partition: u32,
    /// The event as stored.
    pub record: crate::broker::StoredEvent,
    /// 1 on first delivery.
    pub attempt: u32,
    /// Names this delivery in ack, nack and extend.
    pub handle: String,
    /// Failover: the epoch of the active role this delivery was made under.
    pub epoch: u64,
}

/// What a consumer receives from its subscription.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Events delivered to this consumer.
    Events(Vec<DeliveredRecord>),
    /// Failover: whether this consumer is active, and who is. Sent on
    /// attach and to every consumer on every handover.
    ActiveStatus {
        /// Whether this consumer holds the active role of any partition.
        active: bool,
        /// This consumer's name when active; for a standby, the active
        /// consumer of partition 0.
        active_consumer: String,
        /// Increases on every handover.
        epoch: u64,
        /// The partitions this consumer is active for.
        partitions: Vec<u32>,
    },
    /// Delivery to this consumer is held back; it is not forgotten.
    Held {
        /// Why delivery is held back.
        reason: HeldReason,
        /// Events delivered to this consumer and not yet acked.
        outstanding: u64,
        /// Credits this consumer has left.
        credits: u64,
    },
    /// Handles an ack, nack or extend named that could not be applied.
    AckResult {
        /// Never issued, already acked, or repeated within one request.
        invalid: Vec<String>,
        /// Issued under an older failover epoch, or already redelivered
        /// elsewhere.
        stale: Vec<String>,
    },
    /// The subscription ended for this consumer (deleted, topic deleted,
    /// shutdown, storage failure); nothing more follows.
    Closed(BrokerError),
}

/// Requests to a subscription task.
pub(crate) enum Command {
    Attach {
        id: u64,
        options: AttachOptions,
        events: mpsc::UnboundedSender<ConsumerEvent>,
        reply: oneshot::Sender<Result<Attached>>,
    },
    Ack {
        consumer: u64,
        handles: Vec<String>,
        cumulative: bool,
    },
    Nack {
        consumer: u64,
        handles: Vec<String>,
        delay: Option<Duration>,
        reason: String,
    },
    Extend {
        consumer: u64,
        handles: Vec<String>,
        extension: Duration,
    },
    Credit {
        consumer: u64,
        credits: u64,
    },
    Seek {
        position: Position,
        reply: oneshot::Sender<Result<()>>,
    },
    Stats {
        reply: oneshot::Sender<SubscriptionStats>,
    },
}

/// The attach succeeded.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The consumer's name: the one asked for, or the one made up.
    pub consumer_name: String,
    /// The subscription's type.
    pub kind: SubscriptionKind,
    /// How many partitions the topic has.
    pub partitions: u32,
}

/// A subscription's counters and consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Events not yet acked, delivered or not.
    pub backlog: u64,
    /// Bytes of the backlog, estimated per partition as backlog events times
    /// the partition's average stored event size: exact bytes would need a
    /// read of every unacked event, and acks above the cursor punch holes
    /// whose sizes are not kept.
    pub backlog_bytes: u64,
    /// Age of the oldest event not yet acked (by its append time), over all
    /// partitions; `None` when nothing is waiting. The subscription's lag.
    pub oldest_unacked_age: Option<Duration>,
    /// Delivered and not yet acked.
    pub unacked: u64,
    /// Deliveries so far, redeliveries included.
    pub delivered: u64,
    /// Redeliveries so far.
    pub redelivered: u64,
    /// Events acknowledged so far (dead-lettered ones not included).
    pub acked: u64,
    /// Nacks received so far (one per nacked delivery).
    pub nacked: u64,
    /// Events sent to the dead-letter topic so far.
    pub dead_lettered: u64,
    /// The attached consumers.
    pub consumers: Vec<ConsumerStats>,
}

/// One attached consumer of a subscription, as stats show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer's name.
    pub name: String,
    /// Delivered and not yet acked.
    pub outstanding: u64,
    /// Credits the consumer has left.
    pub credits: u64,
    /// Failover: whether it holds the active role (of any partition);
    /// always true for the other types.
    pub active: bool,
}

/// A running subscription, as the broker holds it.
pub(crate) struct SubscriptionHandle {
    pub info: SubscriptionInfo,
    pub commands: mpsc::Sender<Command>,
    pub detaches: mpsc::UnboundedSender<u64>,
    /// Persisted mark-delete per partition, for retention.
    pub marks: Arc<Vec<AtomicU64>>,
    /// Attached consumers (kept by the task, read by delete).
    pub consumers: Arc<AtomicU64>,
    /// Stops the task (delete, topic delete).
    pub stop: CancellationToken,
    /// Set before `stop` when the subscription is being deleted: the task
    /// then skips its final cursor write.
    pub deleting: Arc<std::sync::atomic::AtomicBool>,
    /// Fires when the task has ended.
    pub done: parking_lot::Mutex<Option<oneshot::Receiver<()>>>,
}

/// A consumer attached to a subscription. Dropping it detaches it; its
/// unacked events go back to the subscription.
pub struct Consumer {
    id: u64,
    /// What the subscription sends this consumer.
    pub events: mpsc::UnboundedReceiver<ConsumerEvent>,
    commands: mpsc::Sender<Command>,
    detaches: mpsc::UnboundedSender<u64>,
    /// The attach result.
    pub attached: Attached,
}

impl Consumer {
    pub(crate) fn new(
        id: u64,
        events: mpsc::UnboundedReceiver<ConsumerEvent>,
        commands: mpsc::Sender<Command>,
        detaches: mpsc::UnboundedSender<u64>,
        attached: Attached,
    ) -> Self {
        Self {
            id,
            events,
            commands,
            detaches,
            attached,
        }
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| BrokerError::SubscriptionClosed)
    }

    /// Acknowledges deliveries; problems come back as an AckResult event.
    pub async fn ack(&self, handles: Vec<String>, cumulative: bool) -> Result<()> {
        self.send(Command::Ack {
            consumer: self.id,
            handles,
            cumulative,
        })
        .await
    }

    /// Refuses deliveries, to be redelivered after `delay` (or backoff).
    pub async fn nack(
        &self,
        handles: Vec<String>,
        delay: Option<Duration>,
        reason: String,
    ) -> Result<()> {
        self.send(Command::Nack {
            consumer: self.id,
            handles,
            delay,
            reason,
        })
        .await
    }

    /// Gives deliveries `extension` more time before their deadline.
    pub async fn extend(&self, handles: Vec<String>, extension: Duration) -> Result<()> {
        self.send(Command::Extend {
            consumer: self.id,
            handles,
            extension,
        })
        .await
    }

    /// Grants more credits.
    pub async fn credit(&self, credits: u64) -> Result<()> {
        self.send(Command::Credit {
            consumer: self.id,
            credits,
        })
        .await
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // The task may be gone already (deleted); nothing to detach then.
        let _ = self.detaches.send(self.id);
    }
}
