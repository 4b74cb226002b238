//! The delivery state machine of one subscription: which consumer gets which
//! event, under credits, ack deadlines, nacks with backoff, dead-lettering,
//! and the rules of each subscription type. Plain data and no I/O: the
//! subscription task feeds it events and commands and carries out the
//! [`Output`]s it returns, and tests drive it directly.
//!
//! This module is the core every type shares: consumers, credits, the
//! unacked limit, ack deadlines, nacks, redelivery and dead-lettering, and
//! the cursors. Who may take an event is each type's own rule, kept in a
//! file per type and asked through the `Route` interface of `routing.rs`.
//!
//! Ordering: redeliveries go before fresh events, each in (partition, offset)
//! order. An ordering unit (the partition for exclusive and failover, the key
//! for key_shared) that cannot take its next event blocks its later events
//! for the rest of a pass, so order within the unit holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

// aHash, not SipHash: these maps are touched several times per delivery,
// and aHash is randomly keyed as well.
use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::ack_set::AckSet;

mod exclusive;
mod failover;
mod key_shared;
mod routing;
mod shared;

use routing::{Consumers, Order, Route, Routing};

/// A consumer attached to the subscription, unique within it.
pub(crate) type ConsumerId = u64;

/// Credits a consumer may hold at once; larger grants are capped.
pub(crate) const MAX_CREDITS: u64 = 100_000;

/// How events are shared among consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// One consumer at a time; a second attach is refused.
    Exclusive,
    /// Events spread over every consumer with credits, no order.
    Shared,
    /// One active consumer per partition, the others on standby.
    Failover,
    /// Each key's events go to one consumer at a time, in order.
    KeyShared,
}

impl fmt::Display for SubscriptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubscriptionKind::Exclusive => "exclusive",
            SubscriptionKind::Shared => "shared",
            SubscriptionKind::Failover => "failover",
            SubscriptionKind::KeyShared => "key_shared",
        })
    }
}

/// Redelivery with exponential backoff, and when to give up.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RedeliveryPolicy {
    /// First redelivery delay.
    pub min_backoff: Duration,
    /// Longest redelivery delay.
    pub max_backoff: Duration,
    /// Delay multiplier per attempt.
    pub multiplier: f64,
    /// Deliveries after which a failed event is dead-lettered; 0 = never.
    pub max_delivery_attempts: u32,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            max_delivery_attempts: 0,
        }
    }
}

impl RedeliveryPolicy {
    /// The delay before redelivering an event that failed its `attempts`-th delivery.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let secs = self.min_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }
}

/// One event of the topic.
pub(crate) type EventRef = (u32, u64);

/// Names one delivery; printed as `partition.offset.sequence`. A handle
/// whose delivery was superseded (redelivered, handed over) is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AckHandle {
    pub partition: u32,
    pub offset: u64,
    pub seq: u64,
}

impl fmt::Display for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.partition, self.offset, self.seq)
    }
}

impl FromStr for AckHandle {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.split('.');
        let handle = AckHandle {
            partition: parts.next().ok_or(())?.parse().map_err(|_| ())?,
            offset: parts.next().ok_or(())?.parse().map_err(|_| ())?,
            seq: parts.next().ok_or(())?.parse().map_err(|_| ())?,
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(handle)
    }
}

/// One event handed to one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub consumer: ConsumerId,
    pub handle: AckHandle,
    /// 1 on first delivery.
    pub attempt: u32,
    /// Failover epoch of the partition at delivery; 0 for other types.
    pub epoch: u64,
}

/// Why a consumer is not being sent events it could otherwise get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldReason {
    /// The consumer has no credits left.
    NoCredits,
    /// The consumer holds as many unacked events as it may.
    UnackedLimit,
}

/// What the subscription task must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Send this event to the consumer.
    Deliver(Delivery),
    /// Tell a failover consumer its role.
    ActiveStatus {
        consumer: ConsumerId,
        active: bool,
        active_consumer: String,
        epoch: u64,
        partitions: Vec<u32>,
    },
    /// Tell a consumer delivery is held back.
    Held {
        consumer: ConsumerId,
        reason: HeldReason,
        outstanding: u64,
        credits: u64,
    },
    /// Publish this event to the dead-letter topic, then report back with
    /// [`Dispatcher::dead_lettered`].
    DeadLetter {
        event: EventRef,
        attempts: u32,
        reason: String,
    },
}

/// Handles of an Ack/Nack/Extend that could not be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckOutcome {
    /// Never issued, malformed, not this consumer's type of ack, or already acked.
    pub invalid: Vec<String>,
    /// Superseded by a later delivery or a failover handover.
    pub stale: Vec<String>,
    /// Offsets newly acknowledged.
    pub acked: u64,
}

/// Why an attach is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttachRefusal {
    /// Exclusive subscription already has this consumer.
    ExclusiveHeld { holder: String },
    /// Another consumer of the subscription has this name.
    NameTaken { name: String },
}

/// Per-consumer state.
#[derive(Debug, Clone)]
struct Consumer {
    name: String,
    priority: i32,
    /// Deliveries it may still receive.
    credits: u64,
    /// Delivered, not yet acked.
    outstanding: u64,
    /// A Held output was sent and nothing changed since.
    held: bool,
}

impl Consumer {
    fn can_take(&self, max_unacked: u64) -> bool {
        self.credits > 0 && self.outstanding < max_unacked
    }
}

/// One delivery awaiting its ack.
#[derive(Debug, Clone)]
struct Outstanding {
    consumer: ConsumerId,
    seq: u64,
    deadline: Instant,
    key: Option<u64>,
}

/// Counters for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
}

/// A consumer as stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerView {
    pub id: ConsumerId,
    pub name: String,
    pub outstanding: u64,
    pub credits: u64,
    pub active: bool,
}

/// The delivery state of one subscription.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// Who may take what: the rules of the subscription type.
    routing: Routing,
    policy: RedeliveryPolicy,
    ack_deadline: Duration,
    /// Most unacked events one consumer may hold, whatever its credits.
    max_unacked: u64,
    /// Acked offsets per partition: the durable cursor.
    cursors: Vec<AckSet>,
    consumers: Consumers,
    /// Read from the log, never delivered, in read order (with key hash).
    fresh: VecDeque<(EventRef, Option<u64>)>,
    /// Due for redelivery now, by position.
    ready: BTreeMap<EventRef, Option<u64>>,
    /// Waiting for a nack delay or backoff to pass.
    delayed: BTreeSet<(Instant, EventRef)>,
    /// Key hashes of delayed events.
    delayed_keys: HashMap<EventRef, Option<u64>>,
    /// Delivered and not yet acked.
    outstanding: HashMap<EventRef, Outstanding>,
    /// Deadline index over `outstanding`, one entry per live delivery.
    deadlines: BTreeSet<(Instant, EventRef, u64)>,
    /// Deliveries so far of events not yet acked.
    attempts: HashMap<EventRef, u32>,
    /// Last failure reason of events not yet acked.
    reasons: HashMap<EventRef, String>,
    /// Being published to the dead-letter topic.
    dead_lettering: HashSet<EventRef>,
    /// The log holds events not read yet (the task reads only as far as
    /// credits allow), so consumers without credits are holding them up.
    unread: bool,
    /// Next delivery sequence number (handles).
    next_seq: u64,
    counters: Counters,
}

/// What orders events within a subscription type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OrderUnit {
    Partition(u32),
    Key(u64),
}

/// A stable 64-bit hash (of keys and consumer names).
pub(crate) fn hash64(value: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Dispatcher {
    /// A dispatcher over `cursors` (one per partition).
    pub(crate) fn new(
        kind: SubscriptionKind,
        policy: RedeliveryPolicy,
        ack_deadline: Duration,
        max_unacked: u64,
        cursors: Vec<AckSet>,
    ) -> Self {
        Self {
            routing: Routing::new(kind, cursors.len()),
            policy,
            ack_deadline,
            max_unacked: max_unacked.max(1),
            cursors,
            consumers: BTreeMap::new(),
            fresh: VecDeque::new(),
            ready: BTreeMap::new(),
            delayed: BTreeSet::new(),
            delayed_keys: HashMap::new(),
            outstanding: HashMap::new(),
            deadlines: BTreeSet::new(),
            attempts: HashMap::new(),
            reasons: HashMap::new(),
            dead_lettering: HashSet::new(),
            unread: false,
            next_seq: 1,
            counters: Counters::default(),
        }
    }

    pub(crate) fn kind(&self) -> SubscriptionKind {
        self.routing.kind()
    }

    /// The acked offsets of each partition.
    pub(crate) fn cursors(&self) -> &[AckSet] {
        &self.cursors
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// Delivered and not yet acked, over all consumers.
    pub(crate) fn unacked(&self) -> u64 {
        self.outstanding.len() as u64
    }

    /// Every live delivery: event and the consumer holding it.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> Vec<(EventRef, ConsumerId)> {
        self.outstanding
            .iter()
            .map(|(e, o)| (*e, o.consumer))
            .collect()
    }

    /// Events read but not delivered yet.
    pub(crate) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// How many fresh events are worth reading ahead: enough to use every
    /// consumer's credits, never more than `cap`. Zero without consumers.
    pub(crate) fn read_ahead(&self, cap: usize) -> usize {
        let credits: u64 = self.consumers.values().map(|c| c.credits).sum();
        (credits as usize).min(cap)
    }

    pub(crate) fn consumers(&self) -> Vec<ConsumerView> {
        self.consumers
            .iter()
            .map(|(&id, c)| ConsumerView {
                id,
                name: c.name.clone(),
                outstanding: c.outstanding,
                credits: c.credits,
                active: self
                    .routing
                    .active_per_partition()
                    .is_none_or(|active| active.contains(&Some(id))),
            })
            .collect()
    }

    /// The earliest time something becomes due (a deadline or a delay).
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(t, _, _)| *t);
        let delayed = self.delayed.first().map(|(t, _)| *t);
        match (deadline, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tells the dispatcher whether the log has events it has not been
    /// offered yet, so held-back consumers are told even when nothing is
    /// queued here.
    pub(crate) fn set_unread(&mut self, unread: bool) {
        self.unread = unread;
    }

    /// Whether the log was last known to hold events not offered yet.
    pub(crate) fn has_unread(&self) -> bool {
        self.unread
    }

    /// Adds a consumer with `credits`.
    pub(crate) fn attach(
        &mut self,
        id: ConsumerId,
        name: &str,
        priority: i32,
        credits: u64,
    ) -> Result<Vec<Output>, AttachRefusal> {
        if let Some(refusal) = self.routing.refuse_attach(&self.consumers) {
            return Err(refusal);
        }
        if self.consumers.values().any(|c| c.name == name) {
            return Err(AttachRefusal::NameTaken {
                name: name.to_owned(),
            });
        }
        self.consumers.insert(
            id,
            Consumer {
                name: name.to_owned(),
                priority,
                credits: credits.min(MAX_CREDITS),
                outstanding: 0,
                held: false,
            },
        );
        let mut out = Vec::new();
        self.regroup(Some(id), &mut out);
        Ok(out)
    }

    /// Removes a consumer; its unacked events are redelivered to the others
    /// (or dead-lettered past the attempt limit).
    pub(crate) fn detach(&mut self, id: ConsumerId, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.consumers.remove(&id).is_none() {
            return out;
        }
        let held: Vec<EventRef> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.consumer == id)
            .map(|(e, _)| *e)
            .collect();
        for event in held {
            self.fail(
                event,
                "consumer disconnected",
                Some(Duration::ZERO),
                now,
                &mut out,
            );
        }
        self.regroup(None, &mut out);
        out
    }

    /// Grants `credits` more to a consumer (capped at [`MAX_CREDITS`]).
    pub(crate) fn credit(&mut self, id: ConsumerId, credits: u64) {
        if let Some(c) = self.consumers.get_mut(&id) {
            c.credits = (c.credits + credits).min(MAX_CREDITS);
            c.held = false;
        }
    }

    /// A fresh event read from the log, in per-partition order.
    pub(crate) fn offer(&mut self, event: EventRef, key: Option<u64>) {
        if self.is_settled(event) {
            return;
        }
        self.fresh.push_back((event, key));
    }

    /// Acked, or in flight anywhere in this machine.
    fn is_settled(&self, event: EventRef) -> bool {
        self.cursors
            .get(event.0 as usize)
            .is_none_or(|c| c.contains(event.1))
    }

    /// Classifies a handle from `consumer`: Ok when it names that
    /// consumer's current delivery.
    fn check_handle(&self, consumer: ConsumerId, text: &str) -> Result<AckHandle, (bool, String)> {
        let Ok(handle) = text.parse::<AckHandle>() else {
            return Err((false, text.to_owned()));
        };
        let event = (handle.partition, handle.offset);
        match self.outstanding.get(&event) {
            Some(o) if o.seq == handle.seq && o.consumer == consumer => Ok(handle),
            Some(_) => Err((true, text.to_owned())),
            None if handle.seq >= self.next_seq || self.is_settled(event) => {
                Err((false, text.to_owned()))
            }
            // Issued once, now waiting for redelivery: superseded.
            None => Err((true, text.to_owned())),
        }
    }

    fn sort_handles<'a>(
        &self,
        consumer: ConsumerId,
        handles: impl IntoIterator<Item = &'a str>,
        outcome: &mut AckOutcome,
    ) -> Vec<AckHandle> {
        let mut valid = Vec::new();
        let mut seen = ahash::AHashSet::new();
        for text in handles {
            match self.check_handle(consumer, text) {
                // A handle repeated within one request settles its event
                // once; the repeats are answered like an already-acked one.
                Ok(h) if !seen.insert(h) => outcome.invalid.push(text.to_owned()),
                Ok(h) => valid.push(h),
                Err((true, t)) => outcome.stale.push(t),
                Err((false, t)) => outcome.invalid.push(t),
            }
        }
        valid
    }

    /// Acknowledges deliveries. Cumulative acks (exclusive and failover
    /// only) also acknowledge every earlier event of the same partition.
    pub(crate) fn ack<'a>(
        &mut self,
        consumer: ConsumerId,
        handles: impl IntoIterator<Item = &'a str>,
        cumulative: bool,
    ) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        let handles: Vec<&str> = handles.into_iter().collect();
        // Acking everything earlier in the partition is only sound when one
        // consumer at a time gets the partition, in order.
        if cumulative && self.routing.order() != Order::Partition {
            outcome
                .invalid
                .extend(handles.into_iter().map(str::to_owned));
            return outcome;
        }
        for handle in self.sort_handles(consumer, handles, &mut outcome) {
            let event = (handle.partition, handle.offset);
            if cumulative {
                outcome.acked += self.ack_through(event);
            } else {
                self.settle(event);
                self.attempts.remove(&event);
                self.reasons.remove(&event);
                self.cursors[event.0 as usize].insert(event.1);
                outcome.acked += 1;
            }
        }
        self.counters.acked += outcome.acked;
        if outcome.acked > 0
            && let Some(c) = self.consumers.get_mut(&consumer)
        {
            c.held = false;
        }
        outcome
    }

    /// Cumulative ack of everything in `event.0` up to `event.1`.
    fn ack_through(&mut self, event: EventRef) -> u64 {
        let (partition, offset) = event;
        let settled: Vec<EventRef> = self
            .outstanding
            .keys()
            .filter(|e| e.0 == partition && e.1 <= offset)
            .copied()
            .collect();
        for e in settled {
            self.settle(e);
        }
        let covered = |e: &EventRef| e.0 == partition && e.1 <= offset;
        self.fresh.retain(|(e, _)| !covered(e));
        self.ready.retain(|e, _| !covered(e));
        self.delayed.retain(|(_, e)| !covered(e));
        self.delayed_keys.retain(|e, _| !covered(e));
        self.attempts.retain(|e, _| !covered(e));
        self.reasons.retain(|e, _| !covered(e));
        self.cursors[partition as usize].insert_through(offset)
    }

    /// Removes an outstanding delivery and its bookkeeping.
    fn settle(&mut self, event: EventRef) -> Option<Outstanding> {
        let o = self.outstanding.remove(&event)?;
        // Drop its deadline now: left to expire, acked deliveries' entries
        // would pile up for a whole ack deadline at high rates.
        self.deadlines.remove(&(o.deadline, event, o.seq));
        if let Some(c) = self.consumers.get_mut(&o.consumer) {
            c.outstanding -= 1;
        }
        self.routing.settled(o.key);
        Some(o)
    }

    /// Refuses deliveries: each is redelivered after `delay` (or the
    /// policy's backoff), or dead-lettered past the attempt limit.
    pub(crate) fn nack<'a>(
        &mut self,
        consumer: ConsumerId,
        handles: impl IntoIterator<Item = &'a str>,
        delay: Option<Duration>,
        reason: &str,
        now: Instant,
    ) -> (AckOutcome, Vec<Output>) {
        let mut outcome = AckOutcome::default();
        let mut out = Vec::new();
        for handle in self.sort_handles(consumer, handles, &mut outcome) {
            self.counters.nacked += 1;
            let reason = if reason.is_empty() { "nacked" } else { reason };
            self.fail(
                (handle.partition, handle.offset),
                reason,
                delay,
                now,
                &mut out,
            );
        }
        (outcome, out)
    }

    /// Moves the ack deadline of deliveries to `now + extension`.
    pub(crate) fn extend<'a>(
        &mut self,
        consumer: ConsumerId,
        handles: impl IntoIterator<Item = &'a str>,
        extension: Duration,
        now: Instant,
    ) -> AckOutcome {
        let mut outcome = AckOutcome::default();
        for handle in self.sort_handles(consumer, handles, &mut outcome) {
            let event = (handle.partition, handle.offset);
            if let Some(o) = self.outstanding.get_mut(&event) {
                self.deadlines.remove(&(o.deadline, event, o.seq));
                o.deadline = now + extension;
                self.deadlines.insert((o.deadline, event, o.seq));
            }
        }
        outcome
    }

    /// A delivery failed: schedule redelivery, or dead-letter it.
    fn fail(
        &mut self,
        event: EventRef,
        reason: &str,
        delay: Option<Duration>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(o) = self.settle(event) else { return };
        if let Some(c) = self.consumers.get_mut(&o.consumer) {
            c.held = false;
        }
        self.reasons.insert(event, reason.to_owned());
        let attempts = self.attempts.get(&event).copied().unwrap_or(0);
        let limit = self.policy.max_delivery_attempts;
        if limit > 0 && attempts >= limit {
            self.dead_lettering.insert(event);
            out.push(Output::DeadLetter {
                event,
                attempts,
                reason: reason.to_owned(),
            });
            return;
        }
        let delay = delay.unwrap_or_else(|| self.policy.backoff(attempts));
        self.requeue(event, o.key, now + delay, now);
    }

    fn requeue(&mut self, event: EventRef, key: Option<u64>, at: Instant, now: Instant) {
        if at <= now {
            self.ready.insert(event, key);
        } else {
            self.delayed.insert((at, event));
            self.delayed_keys.insert(event, key);
        }
    }

    /// The dead-letter publish of `event` finished: on success the event is
    /// acknowledged; on failure it is retried after the longest backoff.
    pub(crate) fn dead_lettered(&mut self, event: EventRef, published: bool, now: Instant) {
        if !self.dead_lettering.remove(&event) {
            return;
        }
        if published {
            self.counters.dead_lettered += 1;
            self.attempts.remove(&event);
            self.reasons.remove(&event);
            self.cursors[event.0 as usize].insert(event.1);
        } else {
            let retry = now + self.policy.max_backoff.max(Duration::from_secs(1));
            self.delayed.insert((retry, event));
            self.delayed_keys.insert(event, None);
            // The next failure of this event goes straight back to the DLQ.
        }
    }

    /// Expires ack deadlines and releases delayed events due at `now`.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(&(deadline, event, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let live = self
                .outstanding
                .get(&event)
                .is_some_and(|o| o.seq == seq && o.deadline == deadline);
            if live {
                self.fail(event, "ack deadline expired", None, now, &mut out);
            }
        }
        while let Some(&(at, event)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            let key = self.delayed_keys.remove(&event).flatten();
            if self.dead_lettering.contains(&event) {
                // A failed dead-letter publish: try it again.
                let attempts = self.attempts.get(&event).copied().unwrap_or(0);
                let reason = self.reasons.get(&event).cloned().unwrap_or_default();
                out.push(Output::DeadLetter {
                    event,
                    attempts,
                    reason,
                });
            } else {
                self.ready.insert(event, key);
            }
        }
        out
    }

    /// Hands out every event that can go now.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.consumers.is_empty() {
            return out;
        }
        let mut blocked: HashSet<OrderUnit> = HashSet::new();
        let mut waiting = false;
        let max_unacked = self.max_unacked;
        let mut capacity: u64 = self
            .consumers
            .values()
            .filter(|c| c.can_take(max_unacked))
            .count() as u64;

        let ready: Vec<(EventRef, Option<u64>)> =
            self.ready.iter().map(|(e, k)| (*e, *k)).collect();
        for (event, key) in ready {
            if capacity == 0 {
                waiting = true;
                break;
            }
            if self.try_deliver(event, key, now, &mut blocked, &mut capacity, &mut out) {
                self.ready.remove(&event);
            } else {
                waiting = true;
            }
        }
        let mut index = 0;
        while index < self.fresh.len() {
            if capacity == 0 {
                waiting = true;
                break;
            }
            let (event, key) = self.fresh[index];
            if self.try_deliver(event, key, now, &mut blocked, &mut capacity, &mut out) {
                self.fresh.remove(index);
            } else {
                waiting = true;
                index += 1;
            }
        }
        if waiting || self.unread {
            self.report_held(&mut out);
        }
        out
    }

    fn order_unit(&self, event: EventRef, key: Option<u64>) -> Option<OrderUnit> {
        match self.routing.order() {
            Order::Partition => Some(OrderUnit::Partition(event.0)),
            Order::Key => key.map(OrderUnit::Key),
            Order::Unordered => None,
        }
    }

    /// Delivers `event` if its route allows; false leaves it queued.
    fn try_deliver(
        &mut self,
        event: EventRef,
        key: Option<u64>,
        now: Instant,
        blocked: &mut HashSet<OrderUnit>,
        capacity: &mut u64,
        out: &mut Vec<Output>,
    ) -> bool {
        if self.is_settled(event) {
            // Acked meanwhile (cumulative ack, dead-lettered): drop it.
            return true;
        }
        let unit = self.order_unit(event, key);
        if unit.is_some_and(|u| blocked.contains(&u)) {
            return false;
        }
        let Some(consumer) = self.route(event, key) else {
            if let Some(u) = unit {
                blocked.insert(u);
            }
            return false;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let attempt = {
            let a = self.attempts.entry(event).or_insert(0);
            *a += 1;
            *a
        };
        let deadline = now + self.ack_deadline;
        self.outstanding.insert(
            event,
            Outstanding {
                consumer,
                seq,
                deadline,
                key,
            },
        );
        self.deadlines.insert((deadline, event, seq));
        self.routing.delivered(key, consumer);
        let max_unacked = self.max_unacked;
        let c = self
            .consumers
            .get_mut(&consumer)
            .expect("routed to an attached consumer");
        c.credits -= 1;
        c.outstanding += 1;
        if c.credits == 0 || c.outstanding >= max_unacked {
            *capacity -= 1;
        }
        self.counters.delivered += 1;
        if attempt > 1 {
            self.counters.redelivered += 1;
        }
        let epoch = self.routing.epoch(event.0);
        out.push(Output::Deliver(Delivery {
            consumer,
            handle: AckHandle {
                partition: event.0,
                offset: event.1,
                seq,
            },
            attempt,
            epoch,
        }));
        true
    }

    /// The consumer `event` must go to now, if it can take it.
    fn route(&mut self, event: EventRef, key: Option<u64>) -> Option<ConsumerId> {
        let chosen = self
            .routing
            .route(event, key, &self.consumers, self.max_unacked)?;
        self.consumers
            .get(&chosen)
            .filter(|c| c.can_take(self.max_unacked))
            .map(|_| chosen)
    }

    /// A consumer joined or left: the routing regroups, and what it took
    /// from a consumer is revoked for redelivery, first and in order.
    fn regroup(&mut self, joined: Option<ConsumerId>, out: &mut Vec<Output>) {
        for partition in self.routing.regroup(&self.consumers, joined, out) {
            let revoked: Vec<EventRef> = self
                .outstanding
                .keys()
                .filter(|e| e.0 == partition)
                .copied()
                .collect();
            for event in revoked {
                if let Some(o) = self.settle(event) {
                    self.ready.insert(event, o.key);
                }
            }
        }
    }

    fn report_held(&mut self, out: &mut Vec<Output>) {
        let max_unacked = self.max_unacked;
        match self.routing.active_per_partition() {
            // Standbys are sent nothing, so only the actives are held back.
            Some(active) => {
                for &id in active.iter().flatten() {
                    if let Some(c) = self.consumers.get_mut(&id) {
                        Self::hold(id, c, max_unacked, out);
                    }
                }
            }
            None => {
                for (&id, c) in &mut self.consumers {
                    Self::hold(id, c, max_unacked, out);
                }
            }
        }
    }

    /// Tells a consumer that cannot take more that it is held back, once
    /// until something changes.
    fn hold(id: ConsumerId, c: &mut Consumer, max_unacked: u64, out: &mut Vec<Output>) {
        if c.held || c.can_take(max_unacked) {
            return;
        }
        c.held = true;
        out.push(Output::Held {
            consumer: id,
            reason: if c.credits == 0 {
                HeldReason::NoCredits
            } else {
                HeldReason::UnackedLimit
            },
            outstanding: c.outstanding,
            credits: c.credits,
        });
    }

    /// Moves the cursor: everything before `cursors` is acked, nothing in
    /// flight survives (its handles turn invalid).
    pub(crate) fn seek(&mut self, cursors: Vec<AckSet>) {
        self.cursors = cursors;
        self.fresh.clear();
        self.ready.clear();
        self.delayed.clear();
        self.delayed_keys.clear();
        let held: Vec<EventRef> = self.outstanding.keys().copied().collect();
        for event in held {
            self.settle(event);
        }
        self.deadlines.clear();
        self.attempts.clear();
        self.reasons.clear();
        self.routing.forget_deliveries();
        self.dead_lettering.clear();
    }
}
