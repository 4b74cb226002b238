//! Subscriptions: named, durable cursors on a topic, each driven by one task
//! that reads the topic, runs the [`dispatch::Dispatcher`] state machine,
//! and persists the cursor. Consumers talk to that task through a
//! [`Consumer`] handle; nothing here knows about gRPC.

pub mod ack_set;
mod cursor;
mod dead_letter;
pub mod dispatch;
pub mod registry;
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
    pub kind: SubscriptionKind,
    /// Redeliver an event not acked within this time.
    pub ack_deadline: Duration,
    pub redelivery: RedeliveryPolicy,
    /// Where events past `max_delivery_attempts` go.
    pub dead_letter_topic: String,
}

/// A subscription as the admin API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub name: String,
    pub settings: SubscriptionSettings,
    pub created_at_ms: i64,
}

/// What a request asks of a subscription when it may create it.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub kind: SubscriptionKind,
    /// Where a new subscription starts. Default latest.
    pub initial_position: Position,
    /// Default 30 s.
    pub ack_deadline: Option<Duration>,
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
    pub partition: u32,
    pub record: crate::broker::StoredEvent,
    pub attempt: u32,
    pub handle: String,
    pub epoch: u64,
}

/// What a consumer receives from its subscription.
#[derive(Debug)]
pub enum ConsumerEvent {
    Events(Vec<DeliveredRecord>),
    ActiveStatus {
        active: bool,
        active_consumer: String,
        epoch: u64,
        partitions: Vec<u32>,
    },
    Held {
        reason: HeldReason,
        outstanding: u64,
        credits: u64,
    },
    AckResult {
        invalid: Vec<String>,
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
    pub consumer_name: String,
    pub kind: SubscriptionKind,
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
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
    pub consumers: Vec<ConsumerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub name: String,
    pub outstanding: u64,
    pub credits: u64,
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
