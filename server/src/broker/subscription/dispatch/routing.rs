//! The one interface through which the delivery core asks a subscription
//! type's rules where an event goes, so the core carries no per-type
//! branches and each type's rules read in a file of their own.

use std::collections::BTreeMap;

use super::exclusive::Exclusive;
use super::failover::Failover;
use super::key_shared::KeyShared;
use super::shared::Shared;
use super::{AttachRefusal, Consumer, ConsumerId, EventRef, Output, SubscriptionKind};

/// The attached consumers, by id.
pub(super) type Consumers = BTreeMap<ConsumerId, Consumer>;

/// What a subscription type keeps in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// A partition goes to one consumer at a time, in offset order.
    Partition,
    /// A key goes to one consumer at a time, in offset order.
    Key,
    /// Nothing: any consumer may take any event.
    Unordered,
}

/// The rules of one subscription type. The core owns consumers, credits,
/// deliveries and redelivery; a routing only decides who may take what,
/// and hears about the deliveries it needs to remember.
pub(super) trait Route {
    /// What this type keeps in order.
    fn order(&self) -> Order;

    /// The consumer `event` must go to, or None while it must wait. A
    /// routing may name a consumer that cannot take it now (no credits,
    /// unacked limit): the core checks, and the event waits.
    fn route(
        &mut self,
        event: EventRef,
        key: Option<u64>,
        consumers: &Consumers,
        max_unacked: u64,
    ) -> Option<ConsumerId>;

    /// Why one more consumer may not join `consumers`, if it may not.
    fn refuse_attach(&self, _consumers: &Consumers) -> Option<AttachRefusal> {
        None
    }

    /// A consumer joined (`joined`) or left `consumers`. Returns the
    /// partitions handed to another consumer: the core revokes their
    /// outstanding events, which go first again, in order.
    fn regroup(
        &mut self,
        _consumers: &Consumers,
        _joined: Option<ConsumerId>,
        _out: &mut Vec<Output>,
    ) -> Vec<u32> {
        Vec::new()
    }

    /// An event keyed `key` was delivered to `consumer`.
    fn delivered(&mut self, _key: Option<u64>, _consumer: ConsumerId) {}

    /// A delivery of an event keyed `key` is outstanding no more.
    fn settled(&mut self, _key: Option<u64>) {}

    /// Every delivery was dropped at once (a seek).
    fn forget_deliveries(&mut self) {}

    /// Stamped on deliveries of `partition`, so a consumer can tell those
    /// of an earlier handover.
    fn epoch(&self, _partition: u32) -> u64 {
        0
    }

    /// For types with standbys: the consumer each partition goes to. None
    /// when every consumer is active.
    fn active_per_partition(&self) -> Option<&[Option<ConsumerId>]> {
        None
    }
}

/// The routing of one subscription. An enum rather than a `Box<dyn Route>`:
/// the core calls it several times per delivery, and a jump on the variant
/// costs no allocation and stays open to inlining.
#[derive(Debug)]
pub(super) enum Routing {
    Exclusive(Exclusive),
    Shared(Shared),
    Failover(Failover),
    KeyShared(KeyShared),
}

impl Routing {
    pub(super) fn new(kind: SubscriptionKind, partitions: usize) -> Self {
        match kind {
            SubscriptionKind::Exclusive => Routing::Exclusive(Exclusive),
            SubscriptionKind::Shared => Routing::Shared(Shared::default()),
            SubscriptionKind::Failover => Routing::Failover(Failover::new(partitions)),
            SubscriptionKind::KeyShared => Routing::KeyShared(KeyShared::default()),
        }
    }

    pub(super) fn kind(&self) -> SubscriptionKind {
        match self {
            Routing::Exclusive(_) => SubscriptionKind::Exclusive,
            Routing::Shared(_) => SubscriptionKind::Shared,
            Routing::Failover(_) => SubscriptionKind::Failover,
            Routing::KeyShared(_) => SubscriptionKind::KeyShared,
        }
    }
}

/// Hands a call to whichever routing this is.
macro_rules! each {
    ($routing:expr, $r:ident => $call:expr) => {
        match $routing {
            Routing::Exclusive($r) => $call,
            Routing::Shared($r) => $call,
            Routing::Failover($r) => $call,
            Routing::KeyShared($r) => $call,
        }
    };
}

// `#[inline]` on the per-event calls: each routing lives in its own module
// and may land in another codegen unit than the delivery loop.
impl Route for Routing {
    #[inline]
    fn order(&self) -> Order {
        each!(self, r => r.order())
    }

    #[inline]
    fn route(
        &mut self,
        event: EventRef,
        key: Option<u64>,
        consumers: &Consumers,
        max_unacked: u64,
    ) -> Option<ConsumerId> {
        each!(self, r => r.route(event, key, consumers, max_unacked))
    }

    fn refuse_attach(&self, consumers: &Consumers) -> Option<AttachRefusal> {
        each!(self, r => r.refuse_attach(consumers))
    }

    fn regroup(
        &mut self,
        consumers: &Consumers,
        joined: Option<ConsumerId>,
        out: &mut Vec<Output>,
    ) -> Vec<u32> {
        each!(self, r => r.regroup(consumers, joined, out))
    }

    #[inline]
    fn delivered(&mut self, key: Option<u64>, consumer: ConsumerId) {
        each!(self, r => r.delivered(key, consumer))
    }

    #[inline]
    fn settled(&mut self, key: Option<u64>) {
        each!(self, r => r.settled(key))
    }

    fn forget_deliveries(&mut self) {
        each!(self, r => r.forget_deliveries())
    }

    #[inline]
    fn epoch(&self, partition: u32) -> u64 {
        each!(self, r => r.epoch(partition))
    }

    fn active_per_partition(&self) -> Option<&[Option<ConsumerId>]> {
        each!(self, r => r.active_per_partition())
    }
}

/// Consumers `(id, name, priority)`, each with ten credits and nothing
/// outstanding, for the routings' own tests.
#[cfg(test)]
pub(super) fn test_consumers(list: &[(ConsumerId, &str, i32)]) -> Consumers {
    list.iter()
        .map(|&(id, name, priority)| {
            let consumer = Consumer {
                name: name.to_owned(),
                priority,
                credits: 10,
                outstanding: 0,
                held: false,
            };
            (id, consumer)
        })
        .collect()
}
