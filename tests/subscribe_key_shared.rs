//! Key_shared subscriptions over real gRPC: one key's events always go to
//! one consumer, and per-key order holds while consumers join and leave.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consumer::{AttachSpec, TestConsumer, handles};
use common::{Herald, event};
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::*;
use herald_client::Client;

/// How long "nothing more arrives" is waited for.
const QUIET: Duration = Duration::from_millis(400);
/// Long enough for anything that should happen; a hang fails the test.
const WAIT: Duration = Duration::from_secs(5);

fn spec(topic: &str, subscription: &str, name: &str) -> AttachSpec {
    AttachSpec::new(topic, subscription, SubscriptionType::KeyShared, name).credits(10_000)
}

/// `count` events with keys `k0..k{keys}` in turn; ids name the round.
fn keyed(round: usize, count: usize, keys: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let mut e = event(&format!("r{round}-{i}"), 10);
            e.key = format!("k{}", i % keys);
            e
        })
        .collect()
}

fn key(e: &DeliveredEvent) -> String {
    e.event.as_ref().expect("envelope").key.clone()
}

fn keys(events: &[DeliveredEvent]) -> BTreeSet<String> {
    events.iter().map(key).collect()
}

async fn wait_backlog_zero(client: &Client, topic: &str, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = client
            .admin()
            .get_subscription_stats(GetSubscriptionStatsRequest {
                topic: topic.into(),
                name: name.into(),
            })
            .await
            .expect("subscription stats")
            .into_inner();
        if s.backlog == 0 && s.unacked == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backlog never drained: {s:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_shared_sends_every_event_of_one_key_to_the_same_consumer() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut consumers = Vec::new();
    for name in ["k-one", "k-two", "k-three"] {
        consumers.push((
            name,
            TestConsumer::attach(&endpoint, &spec("clicks", "sessions", name)).await,
        ));
    }
    for round in 0..3 {
        client
            .publish("clicks", keyed(round, 100, 24))
            .await
            .unwrap();
    }
    let mut owner: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut busy = 0;
    for (name, consumer) in &mut consumers {
        let got = consumer.events(300, QUIET).await;
        if !got.is_empty() {
            busy += 1;
        }
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for e in &got {
            owner.entry(key(e)).or_default().insert(*name);
            assert!(seen.insert(e.offset), "offset {} delivered twice", e.offset);
            assert_eq!(e.delivery_attempt, 1);
            if let Some(prev) = last.insert(key(e), e.offset) {
                assert!(prev < e.offset, "{name}: key {} out of order", key(e));
            }
        }
        consumer.ack(handles(&got)).await;
    }
    assert_eq!(seen.len(), 300, "every event delivered");
    for (k, names) in &owner {
        assert_eq!(names.len(), 1, "key {k} went to {names:?}");
    }
    assert!(busy >= 2, "keys are spread over consumers: {owner:?}");
    wait_backlog_zero(&client, "clicks", "sessions").await;
}

/// One event as a consumer processed it.
#[derive(Debug, Clone)]
struct Receipt {
    consumer: String,
    key: String,
    offset: u64,
    attempt: u32,
}

/// A consumer that records every event it receives (in one log shared by
/// all consumers) and acks it right after; stopping it closes its stream.
struct Worker {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn start(name: &str, mut consumer: TestConsumer, log: Arc<Mutex<Vec<Receipt>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_owned();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                if stopping.load(Ordering::Acquire) {
                    // Half-close: the acks sent so far are applied before
                    // the server detaches this consumer; events still in
                    // flight are dropped unrecorded (they are redelivered).
                    consumer.close().await;
                    return;
                }
                match consumer.next(Duration::from_millis(20)).await {
                    None => {}
                    Some(Ok(ServerMessage::Events(batch))) => {
                        {
                            // Record before acking: the next delivery of a
                            // key can only follow the ack.
                            let mut log = log.lock().unwrap();
                            for e in &batch.events {
                                log.push(Receipt {
                                    consumer: name.clone(),
                                    key: key(e),
                                    offset: e.offset,
                                    attempt: e.delivery_attempt,
                                });
                            }
                        }
                        consumer.ack(handles(&batch.events)).await;
                    }
                    Some(Ok(ServerMessage::AckResult(result))) => {
                        panic!("{name}: acks of current deliveries failed: {result:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => panic!("{name}: stream failed: {status:?}"),
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("worker panicked");
    }
}

async fn wait_receipts(log: &Arc<Mutex<Vec<Receipt>>>, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let distinct: BTreeSet<u64> = log.lock().unwrap().iter().map(|r| r.offset).collect();
        if distinct.len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events received",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_shared_keeps_per_key_order_while_consumers_join_and_leave() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let log: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    let attach = |name: &'static str| {
        let endpoint = endpoint.clone();
        let log = log.clone();
        async move {
            let consumer = TestConsumer::attach(&endpoint, &spec("trades", "books", name)).await;
            Worker::start(name, consumer, log)
        }
    };
    const KEYS: usize = 32;
    const ROUND: usize = 192; // 6 events of each key per round
    let a = attach("ann").await;
    let b = attach("bob").await;
    client
        .publish("trades", keyed(0, ROUND, KEYS))
        .await
        .unwrap();
    // Join while round 0 may still be in flight.
    let c = attach("cat").await;
    client
        .publish("trades", keyed(1, ROUND, KEYS))
        .await
        .unwrap();
    wait_receipts(&log, ROUND).await;
    // Leave while round 1 may still be in flight.
    b.stop().await;
    client
        .publish("trades", keyed(2, ROUND, KEYS))
        .await
        .unwrap();
    let d = attach("dan").await;
    client
        .publish("trades", keyed(3, ROUND, KEYS))
        .await
        .unwrap();
    wait_receipts(&log, 4 * ROUND).await;
    wait_backlog_zero(&client, "trades", "books").await;
    for w in [a, c, d] {
        w.stop().await;
    }

    let log = log.lock().unwrap().clone();
    let mut per_key: BTreeMap<&str, Vec<&Receipt>> = BTreeMap::new();
    for r in &log {
        per_key.entry(r.key.as_str()).or_default().push(r);
    }
    assert_eq!(per_key.len(), KEYS);
    for (k, receipts) in &per_key {
        let offsets: Vec<u64> = receipts.iter().map(|r| r.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {k}: processed out of order or twice: {receipts:?}"
        );
        assert_eq!(offsets.len(), 4 * ROUND / KEYS, "key {k}: {receipts:?}");
    }
    let by_consumer = |name: &str| log.iter().filter(|r| r.consumer == name).count();
    for name in ["ann", "cat", "dan"] {
        assert!(by_consumer(name) > 0, "{name} got no key at all");
    }
    // Only events that were in flight to bob when he left are redelivered.
    let redelivered: Vec<&Receipt> = log.iter().filter(|r| r.attempt > 1).collect();
    assert!(
        redelivered.iter().all(|r| r.consumer != "bob"),
        "{redelivered:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_shared_gives_a_joining_consumer_a_key_only_after_the_old_owner_acks_it() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    const KEYS: usize = 32;
    let mut old = TestConsumer::attach(&endpoint, &spec("carts", "pricing", "old-owner")).await;
    client.publish("carts", keyed(0, KEYS, KEYS)).await.unwrap();
    let held = old.events(KEYS, WAIT).await;
    assert_eq!(held.len(), KEYS, "alone, old-owner gets every key");

    let mut new = TestConsumer::attach(&endpoint, &spec("carts", "pricing", "new-owner")).await;
    client.publish("carts", keyed(1, KEYS, KEYS)).await.unwrap();
    let kept = old.events(KEYS, QUIET).await;
    assert!(
        new.events(1, QUIET).await.is_empty(),
        "a key must not move while its old owner holds unacked events of it"
    );
    let kept_keys = keys(&kept);
    let moved: BTreeSet<String> = keys(&held).difference(&kept_keys).cloned().collect();
    assert!(!moved.is_empty(), "some keys move to the new consumer");
    assert!(!kept.is_empty(), "some keys stay with the old one");

    old.ack(handles(&held)).await;
    let taken = new.events(moved.len(), WAIT).await;
    assert_eq!(
        keys(&taken),
        moved,
        "after the ack, the moved keys go to the new consumer"
    );
    assert_eq!(taken.len(), moved.len());
    assert!(taken.iter().all(|e| e.delivery_attempt == 1));
    let offsets: Vec<u64> = taken.iter().map(|e| e.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(
        old.events(1, QUIET).await.is_empty(),
        "the old owner gets no moved key's event"
    );
    old.ack(handles(&kept)).await;
    new.ack(handles(&taken)).await;
    wait_backlog_zero(&client, "carts", "pricing").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_shared_redelivers_a_lost_consumer_s_events_before_later_events_of_its_keys() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    const KEYS: usize = 32;
    let mut stays = TestConsumer::attach(&endpoint, &spec("rides", "fares", "stays")).await;
    let mut leaves = TestConsumer::attach(&endpoint, &spec("rides", "fares", "leaves")).await;
    client
        .publish("rides", keyed(0, 2 * KEYS, KEYS))
        .await
        .unwrap();
    let stayed = stays.events(2 * KEYS, QUIET).await;
    stays.ack(handles(&stayed)).await;
    // `leaves` never acks what it got.
    let lost = leaves.events(2 * KEYS, QUIET).await;
    assert!(!lost.is_empty() && !stayed.is_empty(), "keys are spread");
    assert_eq!(stayed.len() + lost.len(), 2 * KEYS);
    let lost_keys = keys(&lost);
    drop(leaves);
    client.publish("rides", keyed(1, KEYS, KEYS)).await.unwrap();

    let got = stays.events(lost.len() + KEYS, WAIT).await;
    assert_eq!(got.len(), lost.len() + KEYS, "every key comes to stays now");
    let mut by_key: BTreeMap<String, Vec<&DeliveredEvent>> = BTreeMap::new();
    for e in &got {
        by_key.entry(key(e)).or_default().push(e);
    }
    for (k, events) in &by_key {
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {k}: {offsets:?}"
        );
        let attempts: Vec<u32> = events.iter().map(|e| e.delivery_attempt).collect();
        if lost_keys.contains(k) {
            assert_eq!(
                attempts,
                vec![2, 2, 1],
                "key {k}: the lost events first, then the new one"
            );
        } else {
            assert_eq!(attempts, vec![1], "key {k}");
        }
    }
    stays.ack(handles(&got)).await;
    wait_backlog_zero(&client, "rides", "fares").await;
}
