//! Behaviour and property tests of the dispatcher, without sockets or tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::ack_set::AckSet;
use super::dispatch::*;

fn dispatcher(kind: SubscriptionKind, partitions: usize, max_attempts: u32) -> Dispatcher {
    limited_dispatcher(kind, partitions, max_attempts, 1_000)
}

/// A dispatcher whose consumers may hold at most `max_unacked` events.
fn limited_dispatcher(
    kind: SubscriptionKind,
    partitions: usize,
    max_attempts: u32,
    max_unacked: u64,
) -> Dispatcher {
    Dispatcher::new(
        kind,
        RedeliveryPolicy {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_delivery_attempts: max_attempts,
        },
        Duration::from_secs(5),
        max_unacked,
        vec![AckSet::default(); partitions],
    )
}

fn deliveries(outputs: &[Output]) -> Vec<Delivery> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn offsets(ds: &[Delivery]) -> Vec<u64> {
    ds.iter().map(|d| d.handle.offset).collect()
}

#[test]
fn exclusive_refuses_a_second_consumer_naming_the_holder() {
    let mut d = dispatcher(SubscriptionKind::Exclusive, 1, 0);
    d.attach(1, "first", 0, 10).unwrap();
    assert_eq!(
        d.attach(2, "second", 0, 10),
        Err(AttachRefusal::ExclusiveHeld {
            holder: "first".into()
        })
    );
}

#[test]
fn consumer_names_are_unique() {
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    assert_eq!(
        d.attach(2, "a", 0, 10),
        Err(AttachRefusal::NameTaken { name: "a".into() })
    );
}

#[test]
fn credits_cap_deliveries_and_zero_credits_report_held() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Exclusive, 1, 0);
    d.attach(1, "c", 0, 0).unwrap();
    for o in 0..5 {
        d.offer((0, o), None);
    }
    let out = d.dispatch(now);
    assert!(deliveries(&out).is_empty());
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Held {
            consumer: 1,
            reason: HeldReason::NoCredits,
            ..
        }
    )));
    // Held is reported once, not on every pass.
    assert!(d.dispatch(now).is_empty());
    d.credit(1, 3);
    assert_eq!(offsets(&deliveries(&d.dispatch(now))), [0, 1, 2]);
}

#[test]
fn unread_events_in_the_log_report_a_consumer_without_credits() {
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "c", 0, 0).unwrap();
    assert!(
        d.dispatch(Instant::now()).is_empty(),
        "nothing waiting, nothing said"
    );
    d.set_unread(true);
    let out = d.dispatch(Instant::now());
    assert!(matches!(
        out[..],
        [Output::Held {
            consumer: 1,
            reason: HeldReason::NoCredits,
            ..
        }]
    ));
}

#[test]
fn shared_round_robins_over_consumers_with_credits() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 100).unwrap();
    d.attach(2, "b", 0, 100).unwrap();
    d.attach(3, "c", 0, 1).unwrap();
    for o in 0..9 {
        d.offer((0, o), None);
    }
    let ds = deliveries(&d.dispatch(now));
    let mut per: BTreeMap<u64, usize> = BTreeMap::new();
    for x in &ds {
        *per.entry(x.consumer).or_default() += 1;
    }
    assert_eq!(ds.len(), 9);
    assert_eq!(per[&3], 1, "c had one credit");
    assert_eq!(per[&1], 4);
    assert_eq!(per[&2], 4);
}

#[test]
fn lost_shared_consumer_events_go_to_the_others() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 2).unwrap();
    d.attach(2, "b", 0, 0).unwrap();
    d.offer((0, 0), None);
    d.offer((0, 1), None);
    assert_eq!(deliveries(&d.dispatch(now)).len(), 2);
    d.credit(2, 10);
    d.detach(1, now);
    let ds = deliveries(&d.dispatch(now));
    assert_eq!(offsets(&ds), [0, 1]);
    assert!(ds.iter().all(|x| x.consumer == 2 && x.attempt == 2));
}

#[test]
fn nack_with_delay_redelivers_after_it_with_the_next_attempt() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    let first = deliveries(&d.dispatch(now)).remove(0);
    let handle = first.handle.to_string();
    let (outcome, _) = d.nack(
        1,
        [handle.as_str()],
        Some(Duration::from_secs(2)),
        "busy",
        now,
    );
    assert_eq!(outcome, AckOutcome::default());
    assert!(deliveries(&d.tick(now + Duration::from_secs(1))).is_empty());
    assert!(deliveries(&d.dispatch(now + Duration::from_secs(1))).is_empty());
    d.tick(now + Duration::from_secs(2));
    let again = deliveries(&d.dispatch(now + Duration::from_secs(2)));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    // The first handle is now stale; the new one acks.
    let stale = d.ack(1, [handle.as_str()], false);
    assert_eq!(stale.stale, [handle]);
    let ok = d.ack(1, [again[0].handle.to_string().as_str()], false);
    assert_eq!(ok.acked, 1);
    assert_eq!(d.cursors()[0].mark_delete(), 1);
}

#[test]
fn ack_deadline_expiry_redelivers_with_backoff() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Exclusive, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    deliveries(&d.dispatch(now));
    assert_eq!(d.next_wakeup(), Some(now + Duration::from_secs(5)));
    d.tick(now + Duration::from_secs(5));
    // Backoff after the first attempt is min_backoff.
    assert!(deliveries(&d.dispatch(now + Duration::from_secs(5))).is_empty());
    d.tick(now + Duration::from_millis(5100));
    let again = deliveries(&d.dispatch(now + Duration::from_millis(5100)));
    assert_eq!(again[0].attempt, 2);
}

#[test]
fn extend_moves_the_deadline() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Exclusive, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    let h = deliveries(&d.dispatch(now))[0].handle.to_string();
    d.extend(
        1,
        [h.as_str()],
        Duration::from_secs(60),
        now + Duration::from_secs(4),
    );
    d.tick(now + Duration::from_secs(10));
    assert!(deliveries(&d.dispatch(now + Duration::from_secs(20))).is_empty());
    assert_eq!(d.ack(1, [h.as_str()], false).acked, 1);
}

#[test]
fn past_max_attempts_an_event_is_dead_lettered_then_acked() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 2);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    let h1 = deliveries(&d.dispatch(now))[0].handle.to_string();
    let (_, out) = d.nack(1, [h1.as_str()], Some(Duration::ZERO), "bad payload", now);
    assert!(out.is_empty());
    let h2 = deliveries(&d.dispatch(now))[0].handle.to_string();
    let (_, out) = d.nack(1, [h2.as_str()], Some(Duration::ZERO), "still bad", now);
    assert_eq!(
        out,
        [Output::DeadLetter {
            event: (0, 0),
            attempts: 2,
            reason: "still bad".into()
        }]
    );
    assert!(
        deliveries(&d.dispatch(now)).is_empty(),
        "not redelivered while dead-lettering"
    );
    d.dead_lettered((0, 0), true, now);
    assert_eq!(d.cursors()[0].mark_delete(), 1);
    assert_eq!(d.counters().dead_lettered, 1);
}

#[test]
fn cumulative_ack_is_for_exclusive_and_failover_only() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Exclusive, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    for o in 0..5 {
        d.offer((0, o), None);
    }
    let ds = deliveries(&d.dispatch(now));
    let outcome = d.ack(1, [ds[3].handle.to_string().as_str()], true);
    assert_eq!(outcome.acked, 4);
    assert_eq!(d.cursors()[0].mark_delete(), 4);
    assert_eq!(d.unacked(), 1);

    let mut s = dispatcher(SubscriptionKind::Shared, 1, 0);
    s.attach(1, "a", 0, 10).unwrap();
    s.offer((0, 0), None);
    let h = deliveries(&s.dispatch(now))[0].handle.to_string();
    assert_eq!(s.ack(1, [h.as_str()], true).invalid, [h]);
}

#[test]
fn unknown_malformed_and_foreign_handles_are_reported() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.attach(2, "b", 0, 10).unwrap();
    d.offer((0, 0), None);
    let ds = deliveries(&d.dispatch(now));
    let h = ds[0].handle.to_string();
    let other = if ds[0].consumer == 1 { 2 } else { 1 };
    let outcome = d.ack(other, ["garbage", "0.99.99", "7.0.1", h.as_str()], false);
    assert_eq!(outcome.invalid, ["garbage", "0.99.99", "7.0.1"]);
    assert_eq!(
        outcome.stale,
        std::slice::from_ref(&h),
        "another consumer's delivery"
    );
    assert_eq!(d.ack(ds[0].consumer, [h.as_str()], false).acked, 1);
    assert_eq!(
        d.ack(ds[0].consumer, [h.as_str()], false).invalid,
        [h],
        "already acked"
    );
}

#[test]
fn a_handle_repeated_in_one_ack_or_nack_counts_once_and_the_repeats_are_reported() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    d.offer((0, 1), None);
    let ds = deliveries(&d.dispatch(now));
    let (h0, h1) = (ds[0].handle.to_string(), ds[1].handle.to_string());
    let outcome = d.ack(1, [h0.as_str(), h0.as_str(), h0.as_str()], false);
    assert_eq!(outcome.acked, 1);
    assert_eq!(outcome.invalid, [h0.clone(), h0.clone()]);
    assert_eq!(d.counters().acked, 1);
    let (outcome, _) = d.nack(1, [h1.as_str(), h1.as_str()], None, "no", now);
    assert_eq!(outcome.invalid, std::slice::from_ref(&h1));
    assert_eq!(d.counters().nacked, 1);
}

#[test]
fn failover_promotes_the_next_consumer_with_the_unacked_events_first_in_order() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Failover, 1, 0);
    let out = d.attach(1, "b-standby", 5, 10).unwrap();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ActiveStatus {
            consumer: 1,
            active: true,
            ..
        }
    )));
    // A preferred consumer (lower priority value) takes over.
    let out = d.attach(2, "a-primary", 1, 10).unwrap();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ActiveStatus {
            consumer: 2,
            active: true,
            epoch: 2,
            ..
        }
    )));
    assert!(out.iter().any(
        |o| matches!(o, Output::ActiveStatus { consumer: 1, active: false, active_consumer, .. } if active_consumer == "a-primary")
    ));
    for o in 0..4 {
        d.offer((0, o), None);
    }
    let ds = deliveries(&d.dispatch(now));
    assert!(ds.iter().all(|x| x.consumer == 2 && x.epoch == 2));
    d.ack(2, [ds[0].handle.to_string().as_str()], false);
    let out = d.detach(2, now);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ActiveStatus {
            consumer: 1,
            active: true,
            epoch: 3,
            ..
        }
    )));
    let again = deliveries(&d.dispatch(now));
    assert_eq!(
        offsets(&again),
        [1, 2, 3],
        "from the first unacked, in order"
    );
    assert!(again.iter().all(|x| x.consumer == 1 && x.epoch == 3));
}

#[test]
fn failover_handover_to_a_live_consumer_fences_the_old_one() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Failover, 1, 0);
    d.attach(1, "old", 5, 10).unwrap();
    d.offer((0, 0), None);
    let old = deliveries(&d.dispatch(now))[0].handle.to_string();
    d.attach(2, "new", 1, 10).unwrap();
    let new = deliveries(&d.dispatch(now));
    assert_eq!(new[0].consumer, 2);
    assert_eq!(
        d.ack(1, [old.as_str()], false).stale,
        [old],
        "old epoch is stale"
    );
}

#[test]
fn failover_spreads_partitions_over_the_preferred_consumers() {
    let mut d = dispatcher(SubscriptionKind::Failover, 4, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.attach(2, "b", 0, 10).unwrap();
    let views = d.consumers();
    assert!(views.iter().all(|v| v.active));
    for p in 0..4 {
        d.offer((p, 0), None);
    }
    let ds = deliveries(&d.dispatch(Instant::now()));
    let by_partition: HashMap<u32, u64> = ds
        .iter()
        .map(|x| (x.handle.partition, x.consumer))
        .collect();
    assert_eq!(by_partition[&0], by_partition[&2]);
    assert_ne!(by_partition[&0], by_partition[&1]);
}

#[test]
fn key_shared_sends_one_key_to_one_consumer() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::KeyShared, 1, 0);
    d.attach(1, "a", 0, 1000).unwrap();
    d.attach(2, "b", 0, 1000).unwrap();
    d.attach(3, "c", 0, 1000).unwrap();
    for o in 0..300 {
        d.offer((0, o), Some(hash64(&format!("key-{}", o % 30))));
    }
    let ds = deliveries(&d.dispatch(now));
    assert_eq!(ds.len(), 300);
    let mut owner: HashMap<u64, u64> = HashMap::new();
    for x in &ds {
        let key = x.handle.offset % 30;
        assert_eq!(
            *owner.entry(key).or_insert(x.consumer),
            x.consumer,
            "key {key} stays on one consumer"
        );
    }
    assert!(
        owner.values().collect::<HashSet<_>>().len() > 1,
        "keys spread over consumers"
    );
}

#[test]
fn key_shared_joiner_waits_for_the_previous_owner_to_finish_a_key() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::KeyShared, 1, 0);
    d.attach(1, "a", 0, 1000).unwrap();
    let key = |o: u64| Some(hash64(&format!("k{}", o % 50)));
    for o in 0..100 {
        d.offer((0, o), key(o));
    }
    let first = deliveries(&d.dispatch(now));
    assert_eq!(first.len(), 100);
    d.attach(2, "b", 0, 1000).unwrap();
    for o in 100..200 {
        d.offer((0, o), key(o));
    }
    let second = deliveries(&d.dispatch(now));
    // Keys now owned by b are held back while a still has them outstanding.
    assert!(second.iter().all(|x| x.consumer == 1));
    let held = 100 - second.len();
    assert!(held > 0, "b owns some keys");
    let handles: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|x| x.handle.to_string())
        .collect();
    d.ack(1, handles.iter().map(String::as_str), false);
    let third = deliveries(&d.dispatch(now));
    assert_eq!(third.len(), held);
    assert!(third.iter().all(|x| x.consumer == 2));
    let mut last: HashMap<u64, u64> = HashMap::new();
    for x in &third {
        let k = x.handle.offset % 50;
        assert!(
            last.insert(k, x.handle.offset)
                .is_none_or(|prev| prev < x.handle.offset),
            "per-key order"
        );
    }
}

#[test]
fn seek_drops_everything_in_flight() {
    let now = Instant::now();
    let mut d = dispatcher(SubscriptionKind::Shared, 1, 0);
    d.attach(1, "a", 0, 10).unwrap();
    d.offer((0, 0), None);
    let h = deliveries(&d.dispatch(now))[0].handle.to_string();
    d.seek(vec![AckSet::starting_at(0)]);
    assert_eq!(d.unacked(), 0);
    assert_eq!(d.ack(1, [h.as_str()], false).acked, 0);
}

/// One step of a random scenario.
#[derive(Debug, Clone)]
enum Step {
    Attach(u8, i8, u8),
    Detach(u8),
    Credit(u8, u8),
    Offer(u8, u8),
    AckSome(u8, u8),
    NackSome(u8, u8),
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, -1i8..2, 0u8..20).prop_map(|(c, p, n)| Step::Attach(c, p, n)),
        (0u8..4).prop_map(Step::Detach),
        (0u8..4, 0u8..20).prop_map(|(c, n)| Step::Credit(c, n)),
        (0u8..3, 1u8..10).prop_map(|(p, n)| Step::Offer(p, n)),
        (0u8..4, 0u8..8).prop_map(|(c, n)| Step::AckSome(c, n)),
        (0u8..4, 0u8..4).prop_map(|(c, n)| Step::NackSome(c, n)),
        (0u16..8000).prop_map(Step::Advance),
    ]
}

fn kind() -> impl Strategy<Value = SubscriptionKind> {
    prop_oneof![
        Just(SubscriptionKind::Exclusive),
        Just(SubscriptionKind::Shared),
        Just(SubscriptionKind::Failover),
        Just(SubscriptionKind::KeyShared),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever consumers do, no event is outstanding twice, credits are
    /// never exceeded, key_shared keeps a key on one consumer at a time,
    /// failover has one active per partition, and once a consumer drains
    /// everything every offered event is acked or dead-lettered.
    #[test]
    fn dispatch_invariants_hold(kind in kind(), max_attempts in 0u32..4, steps in prop::collection::vec(step(), 1..120)) {
        const PARTITIONS: usize = 3;
        let start = Instant::now();
        let mut now = start;
        let mut d = dispatcher(kind, PARTITIONS, max_attempts);
        let mut next_offset = [0u64; PARTITIONS];
        // consumer -> handles it holds; event -> consumer holding it.
        let mut held: BTreeMap<u64, Vec<Delivery>> = BTreeMap::new();
        let mut holder: HashMap<(u32, u64), u64> = HashMap::new();
        let mut credits: HashMap<u64, i64> = HashMap::new();
        let mut dead: HashSet<(u32, u64)> = HashSet::new();
        let key_of = |p: u32, o: u64| Some(hash64(&format!("{}", (p as u64 * 7 + o) % 5)));

        let mut absorb = |outputs: Vec<Output>, d: &mut Dispatcher, held: &mut BTreeMap<u64, Vec<Delivery>>, holder: &mut HashMap<(u32, u64), u64>, credits: &mut HashMap<u64, i64>, now: Instant| -> Result<(), TestCaseError> {
            for o in outputs {
                match o {
                    Output::Deliver(x) => {
                        let e = (x.handle.partition, x.handle.offset);
                        prop_assert!(holder.insert(e, x.consumer).is_none(), "event {:?} outstanding twice", e);
                        let c = credits.get_mut(&x.consumer).expect("delivered to an attached consumer");
                        *c -= 1;
                        prop_assert!(*c >= 0, "credits exceeded");
                        held.entry(x.consumer).or_default().push(x);
                    }
                    Output::DeadLetter { event, .. } => {
                        dead.insert(event);
                        d.dead_lettered(event, true, now);
                    }
                    _ => {}
                }
            }
            Ok(())
        };

        for s in steps {
            match s {
                Step::Attach(c, p, n) => {
                    let id = c as u64;
                    if d.attach(id, &format!("c{c}"), p as i32, n as u64).is_ok() {
                        credits.insert(id, n as i64);
                        held.insert(id, Vec::new());
                    }
                }
                Step::Detach(c) => {
                    let id = c as u64;
                    if credits.remove(&id).is_some() {
                        for x in held.remove(&id).unwrap_or_default() {
                            holder.remove(&(x.handle.partition, x.handle.offset));
                        }
                        let out = d.detach(id, now);
                        absorb(out, &mut d, &mut held, &mut holder, &mut credits, now)?;
                    }
                }
                Step::Credit(c, n) => {
                    if let Some(cr) = credits.get_mut(&(c as u64)) {
                        *cr += n as i64;
                        d.credit(c as u64, n as u64);
                    }
                }
                Step::Offer(p, n) => {
                    for _ in 0..n {
                        let o = next_offset[p as usize];
                        next_offset[p as usize] += 1;
                        d.offer((p as u32, o), if kind == SubscriptionKind::KeyShared { key_of(p as u32, o) } else { None });
                    }
                }
                Step::AckSome(c, n) => {
                    let id = c as u64;
                    let taken: Vec<Delivery> = held.get_mut(&id).map(|h| h.drain(..(n as usize).min(h.len())).collect()).unwrap_or_default();
                    let handles: Vec<String> = taken.iter().map(|x| x.handle.to_string()).collect();
                    let outcome = d.ack(id, handles.iter().map(String::as_str), false);
                    for x in &taken {
                        holder.remove(&(x.handle.partition, x.handle.offset));
                    }
                    prop_assert_eq!(outcome.acked as usize + outcome.stale.len() + outcome.invalid.len(), taken.len());
                    for h in &outcome.invalid {
                        let h: AckHandle = h.parse().unwrap();
                        prop_assert!(d.cursors()[h.partition as usize].contains(h.offset), "only settled events are invalid");
                    }
                }
                Step::NackSome(c, n) => {
                    let id = c as u64;
                    let taken: Vec<Delivery> = held.get_mut(&id).map(|h| h.drain(..(n as usize).min(h.len())).collect()).unwrap_or_default();
                    let handles: Vec<String> = taken.iter().map(|x| x.handle.to_string()).collect();
                    for x in &taken {
                        holder.remove(&(x.handle.partition, x.handle.offset));
                    }
                    let (_, out) = d.nack(id, handles.iter().map(String::as_str), None, "nack", now);
                    absorb(out, &mut d, &mut held, &mut holder, &mut credits, now)?;
                }
                Step::Advance(ms) => {
                    now += Duration::from_millis(ms as u64);
                    let out = d.tick(now);
                    absorb(out, &mut d, &mut held, &mut holder, &mut credits, now)?;
                }
            }
            // Handovers and expiry revoke deliveries: keep the model in step
            // by dropping what the dispatcher no longer counts as outstanding.
            let total: u64 = d.consumers().iter().map(|v| v.outstanding).sum();
            prop_assert_eq!(total, d.unacked());
            let out = d.dispatch(now);
            let before: HashSet<(u32, u64)> = holder.keys().copied().collect();
            // Events redelivered now were revoked earlier: forget the old holders.
            for o in &out {
                if let Output::Deliver(x) = o {
                    let e = (x.handle.partition, x.handle.offset);
                    if before.contains(&e)
                        && let Some(old) = holder.remove(&e)
                        && let Some(h) = held.get_mut(&old)
                    {
                        h.retain(|y| (y.handle.partition, y.handle.offset) != e);
                    }
                }
            }
            absorb(out, &mut d, &mut held, &mut holder, &mut credits, now)?;

            if kind == SubscriptionKind::Failover && !credits.is_empty() {
                let active: Vec<_> = d.consumers().into_iter().filter(|v| v.active).collect();
                prop_assert!(!active.is_empty() && active.len() <= PARTITIONS);
            }
            if kind == SubscriptionKind::KeyShared {
                // Every key's live deliveries sit on one consumer.
                let mut key_owner: HashMap<Option<u64>, u64> = HashMap::new();
                for (e, c) in d.outstanding() {
                    let owner = *key_owner.entry(key_of(e.0, e.1)).or_insert(c);
                    prop_assert_eq!(owner, c, "a key is outstanding on two consumers");
                }
            }
        }

        // Drain: one fresh consumer with plenty of credits acks everything.
        for id in credits.keys().copied().collect::<Vec<_>>() {
            let out = d.detach(id, now);
            for o in out {
                if let Output::DeadLetter { event, .. } = o {
                    dead.insert(event);
                    d.dead_lettered(event, true, now);
                }
            }
        }
        d.attach(99, "drain", 0, MAX_CREDITS).unwrap();
        for _ in 0..200 {
            now += Duration::from_secs(2);
            let mut out = d.tick(now);
            out.extend(d.dispatch(now));
            let mut handles = Vec::new();
            for o in out {
                match o {
                    Output::Deliver(x) => handles.push(x.handle.to_string()),
                    Output::DeadLetter { event, .. } => {
                        dead.insert(event);
                        d.dead_lettered(event, true, now);
                    }
                    _ => {}
                }
            }
            d.ack(99, handles.iter().map(String::as_str), false);
            d.credit(99, MAX_CREDITS);
            if (0..PARTITIONS).all(|p| d.cursors()[p].mark_delete() == next_offset[p]) {
                break;
            }
        }
        for (p, next) in next_offset.iter().enumerate() {
            prop_assert_eq!(d.cursors()[p].mark_delete(), *next, "partition {} lost events", p);
        }
    }
}

// What each type's routing promises on its own. The invariants above hold
// for every type; these replay the same random `Step`s through one driver,
// `Scenario`, and judge the outputs with the rules of a single type.

const SCENARIO_PARTITIONS: usize = 3;

/// A random scenario played against a dispatcher by well-behaved clients:
/// they ack and nack only handles they were given and drop a handle once
/// its event is delivered again.
struct Scenario {
    d: Dispatcher,
    now: Instant,
    next_offset: [u64; SCENARIO_PARTITIONS],
    /// Position of each offered event in offer order.
    offered: HashMap<EventRef, u64>,
    /// Attached consumers and the credits they have left, as the model
    /// counts them.
    credits: BTreeMap<u64, i64>,
    /// Deliveries each consumer may still ack or nack.
    held: BTreeMap<u64, Vec<Delivery>>,
    /// Consumer holding each delivered event, to drop superseded handles.
    holder: HashMap<EventRef, u64>,
}

/// What one step did.
struct Played {
    /// Set when the step was an attach and it was refused.
    refused: Option<AttachRefusal>,
    /// Everything the dispatcher asked for, the closing dispatch pass included.
    outputs: Vec<Output>,
    /// What was outstanding, and where, just before that pass: the
    /// deliveries it makes are judged against it.
    outstanding: Vec<(EventRef, ConsumerId)>,
}

impl Scenario {
    fn new(d: Dispatcher) -> Self {
        Self {
            d,
            now: Instant::now(),
            next_offset: [0; SCENARIO_PARTITIONS],
            offered: HashMap::new(),
            credits: BTreeMap::new(),
            held: BTreeMap::new(),
            holder: HashMap::new(),
        }
    }

    fn name(id: u64) -> String {
        format!("c{id}")
    }

    /// The key of an event: five keys spread over the partitions.
    fn key(event: EventRef) -> u64 {
        hash64(&format!("{}", (event.0 as u64 * 7 + event.1) % 5))
    }

    /// Applies `step`, then a dispatch pass, as the subscription task would.
    fn play(&mut self, step: &Step) -> Played {
        let mut refused = None;
        let mut outputs = Vec::new();
        match *step {
            Step::Attach(c, p, n) => {
                let id = c as u64;
                match self.d.attach(id, &Self::name(id), p as i32, n as u64) {
                    Ok(out) => {
                        self.credits.insert(id, n as i64);
                        self.held.insert(id, Vec::new());
                        outputs = out;
                    }
                    Err(refusal) => refused = Some(refusal),
                }
            }
            Step::Detach(c) => {
                let id = c as u64;
                if self.credits.remove(&id).is_some() {
                    for x in self.held.remove(&id).unwrap_or_default() {
                        self.holder.remove(&(x.handle.partition, x.handle.offset));
                    }
                    outputs = self.d.detach(id, self.now);
                }
            }
            Step::Credit(c, n) => {
                if let Some(credits) = self.credits.get_mut(&(c as u64)) {
                    *credits += n as i64;
                    self.d.credit(c as u64, n as u64);
                }
            }
            Step::Offer(p, n) => {
                for _ in 0..n {
                    let event = (p as u32, self.next_offset[p as usize]);
                    self.next_offset[p as usize] += 1;
                    self.offered.insert(event, self.offered.len() as u64);
                    let keyed = self.d.kind() == SubscriptionKind::KeyShared;
                    self.d.offer(event, keyed.then(|| Self::key(event)));
                }
            }
            Step::AckSome(c, n) => {
                let id = c as u64;
                let handles = self.take(id, n);
                self.d.ack(id, handles.iter().map(String::as_str), false);
            }
            Step::NackSome(c, n) => {
                let id = c as u64;
                let handles = self.take(id, n);
                let (_, out) = self.d.nack(
                    id,
                    handles.iter().map(String::as_str),
                    None,
                    "nack",
                    self.now,
                );
                outputs = out;
            }
            Step::Advance(ms) => {
                self.now += Duration::from_millis(ms as u64);
                outputs = self.d.tick(self.now);
            }
        }
        self.absorb(&outputs);
        let outstanding = self.d.outstanding();
        let pass = self.d.dispatch(self.now);
        self.absorb(&pass);
        outputs.extend(pass);
        Played {
            refused,
            outputs,
            outstanding,
        }
    }

    /// The handles of the first `n` deliveries `consumer` holds, given up.
    fn take(&mut self, consumer: u64, n: u8) -> Vec<String> {
        let Some(held) = self.held.get_mut(&consumer) else {
            return Vec::new();
        };
        let taken: Vec<Delivery> = held.drain(..(n as usize).min(held.len())).collect();
        for x in &taken {
            self.holder.remove(&(x.handle.partition, x.handle.offset));
        }
        taken.iter().map(|x| x.handle.to_string()).collect()
    }

    fn absorb(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Deliver(x) => {
                    let event = (x.handle.partition, x.handle.offset);
                    // Delivered again: the earlier handle was revoked.
                    if let Some(old) = self.holder.insert(event, x.consumer)
                        && let Some(held) = self.held.get_mut(&old)
                    {
                        held.retain(|y| (y.handle.partition, y.handle.offset) != event);
                    }
                    if let Some(credits) = self.credits.get_mut(&x.consumer) {
                        *credits -= 1;
                    }
                    self.held.entry(x.consumer).or_default().push(x.clone());
                }
                Output::DeadLetter { event, .. } => self.d.dead_lettered(*event, true, self.now),
                _ => {}
            }
        }
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Exclusive: while a consumer is attached every other attach is
    /// refused naming it, it gets every delivery, and each partition's
    /// first deliveries come in offset order.
    #[test]
    fn exclusive_routing_serves_only_its_one_consumer(max_attempts in 0u32..4, steps in steps()) {
        let mut s = Scenario::new(dispatcher(SubscriptionKind::Exclusive, SCENARIO_PARTITIONS, max_attempts));
        let mut first_offsets: [Option<u64>; SCENARIO_PARTITIONS] = [None; SCENARIO_PARTITIONS];
        for step in &steps {
            let before = s.credits.keys().next().copied();
            let played = s.play(step);
            if let Step::Attach(c, ..) = *step {
                match (before, &played.refused) {
                    (None, None) => {}
                    (Some(h), Some(AttachRefusal::ExclusiveHeld { holder })) => {
                        prop_assert_eq!(holder, &Scenario::name(h));
                    }
                    (h, r) => prop_assert!(false, "attach of c{} while {:?} held it: {:?}", c, h, r),
                }
            }
            prop_assert!(s.credits.len() <= 1, "two consumers attached");
            let only = s.credits.keys().next().copied();
            for x in deliveries(&played.outputs) {
                prop_assert_eq!(Some(x.consumer), only, "delivered past the one consumer");
                prop_assert_eq!(x.epoch, 0);
                if x.attempt == 1 {
                    let last = first_offsets[x.handle.partition as usize].replace(x.handle.offset);
                    prop_assert!(last.is_none_or(|o| o < x.handle.offset), "first deliveries out of order");
                }
            }
        }
    }

    /// Shared: a delivery goes only to an attached consumer with a credit
    /// to spend and room under the unacked limit, and an event waits only
    /// while no consumer could take it.
    #[test]
    fn shared_routing_fills_every_consumer_within_its_limits(max_unacked in 1u64..6, max_attempts in 0u32..4, steps in steps()) {
        let d = limited_dispatcher(SubscriptionKind::Shared, SCENARIO_PARTITIONS, max_attempts, max_unacked);
        let mut s = Scenario::new(d);
        for step in &steps {
            let played = s.play(step);
            for x in deliveries(&played.outputs) {
                prop_assert!(s.credits.contains_key(&x.consumer), "delivered to a detached consumer");
                prop_assert_eq!(x.epoch, 0);
            }
            for o in &played.outputs {
                if let Output::Held { reason, outstanding, credits, .. } = *o {
                    match reason {
                        HeldReason::NoCredits => prop_assert_eq!(credits, 0),
                        HeldReason::UnackedLimit => prop_assert!(credits > 0 && outstanding >= max_unacked),
                    }
                }
            }
            let views = s.d.consumers();
            for v in &views {
                prop_assert!(v.active);
                prop_assert!(s.credits[&v.id] >= 0, "credits exceeded");
                prop_assert_eq!(v.credits as i64, s.credits[&v.id]);
                prop_assert!(v.outstanding <= max_unacked, "unacked limit exceeded");
            }
            if s.d.fresh_len() > 0 {
                prop_assert!(
                    views.iter().all(|v| v.credits == 0 || v.outstanding >= max_unacked),
                    "an event waits while a consumer could take it"
                );
            }
        }
    }

    /// Failover: each partition has exactly one active consumer while any
    /// is attached, as told by ActiveStatus; only it gets the partition's
    /// events and holds them outstanding, and a handover raises the epoch.
    #[test]
    fn failover_routing_has_one_active_per_partition(max_attempts in 0u32..4, steps in steps()) {
        let mut s = Scenario::new(dispatcher(SubscriptionKind::Failover, SCENARIO_PARTITIONS, max_attempts));
        // The partitions each consumer was last told it is active for.
        let mut told: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        // The last delivery of each partition: (consumer, epoch).
        let mut last: [Option<(u64, u64)>; SCENARIO_PARTITIONS] = [None; SCENARIO_PARTITIONS];
        for step in &steps {
            if let Step::Detach(c) = *step {
                told.remove(&(c as u64));
            }
            let played = s.play(step);
            for o in &played.outputs {
                if let Output::ActiveStatus { consumer, active, partitions, .. } = o {
                    prop_assert_eq!(*active, !partitions.is_empty());
                    told.insert(*consumer, partitions.clone());
                }
            }
            let mut owner: [Option<u64>; SCENARIO_PARTITIONS] = [None; SCENARIO_PARTITIONS];
            for (&c, partitions) in &told {
                prop_assert!(s.credits.contains_key(&c), "a detached consumer is active");
                for &p in partitions {
                    let other = owner[p as usize].replace(c);
                    prop_assert!(other.is_none(), "partition {} active on {:?} and {}", p, other, c);
                }
            }
            if !s.credits.is_empty() {
                prop_assert!(owner.iter().all(Option::is_some), "a partition without an active consumer");
            }
            for v in s.d.consumers() {
                prop_assert_eq!(v.active, told.get(&v.id).is_some_and(|p| !p.is_empty()));
            }
            for x in deliveries(&played.outputs) {
                let p = x.handle.partition as usize;
                prop_assert_eq!(Some(x.consumer), owner[p], "a standby got an event");
                if let Some((c, epoch)) = last[p] {
                    if c == x.consumer {
                        prop_assert!(x.epoch >= epoch, "epoch went back");
                    } else {
                        prop_assert!(x.epoch > epoch, "handover without a new epoch");
                    }
                }
                last[p] = Some((x.consumer, x.epoch));
            }
            for (e, c) in s.d.outstanding() {
                prop_assert_eq!(Some(c), owner[e.0 as usize], "outstanding on a consumer not active for it");
            }
        }
    }

    /// Key_shared: between attaches and detaches a key goes to one
    /// consumer only, a key moves to another consumer only once nothing of
    /// it is outstanding on the old one, and each key's first deliveries
    /// come in the order its events were offered.
    #[test]
    fn key_shared_routing_keeps_keys_with_their_owner_in_order(max_attempts in 0u32..4, steps in steps()) {
        let mut s = Scenario::new(dispatcher(SubscriptionKind::KeyShared, SCENARIO_PARTITIONS, max_attempts));
        // The consumer each key went to since the membership last changed.
        let mut owner: HashMap<u64, u64> = HashMap::new();
        // Offer position of each key's latest first delivery.
        let mut first: HashMap<u64, u64> = HashMap::new();
        for step in &steps {
            if matches!(step, Step::Attach(..) | Step::Detach(_)) {
                owner.clear();
            }
            let played = s.play(step);
            let holders: HashMap<u64, u64> = played
                .outstanding
                .iter()
                .map(|&(e, c)| (Scenario::key(e), c))
                .collect();
            for x in deliveries(&played.outputs) {
                let event = (x.handle.partition, x.handle.offset);
                let key = Scenario::key(event);
                prop_assert!(
                    holders.get(&key).is_none_or(|&c| c == x.consumer),
                    "a key went to a new consumer while the old one still had it"
                );
                prop_assert_eq!(
                    *owner.entry(key).or_insert(x.consumer),
                    x.consumer,
                    "a key moved without a consumer joining or leaving"
                );
                if x.attempt == 1 {
                    let position = s.offered[&event];
                    let previous = first.insert(key, position);
                    prop_assert!(previous.is_none_or(|p| p < position), "a key's first deliveries out of order");
                }
            }
        }
    }
}
