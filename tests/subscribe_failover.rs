//! Failover subscriptions over real gRPC: one active consumer per partition,
//! standbys told who is active, promotion on loss of the active, and fencing
//! of the old active's acks by epoch.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::consumer::{AttachSpec, TestConsumer, handles, stats, wait_stats};
use common::{Herald, event};
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::*;

/// How long "nothing more arrives" is waited for.
const QUIET: Duration = Duration::from_millis(400);
/// Long enough for anything that should happen; a hang fails the test.
const WAIT: Duration = Duration::from_secs(5);

fn spec(topic: &str, subscription: &str, name: &str, priority: i32) -> AttachSpec {
    AttachSpec::new(topic, subscription, SubscriptionType::Failover, name).priority(priority)
}

fn ids(events: &[DeliveredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.as_ref().expect("envelope").id.clone())
        .collect()
}

/// The next ActiveStatus, with the events that came before it.
async fn next_active_status(
    consumer: &mut TestConsumer,
    who: &str,
) -> (ActiveStatus, Vec<DeliveredEvent>) {
    let mut before = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.next(left).await {
            Some(Ok(ServerMessage::ActiveStatus(status))) => return (status, before),
            Some(Ok(ServerMessage::Events(batch))) => before.extend(batch.events),
            Some(Ok(other)) => panic!("{who}: expected ActiveStatus, got {other:?}"),
            Some(Err(status)) => panic!("{who}: stream failed: {status:?}"),
            None => panic!("{who}: no ActiveStatus within {WAIT:?}"),
        }
    }
}

/// The next ActiveStatus, which must come before any event.
async fn active_status(consumer: &mut TestConsumer, who: &str) -> ActiveStatus {
    let (status, before) = next_active_status(consumer, who).await;
    assert!(
        before.is_empty(),
        "{who}: events arrived before the ActiveStatus: {:?}",
        ids(&before)
    );
    status
}

/// The next AckResult within `timeout`, failing on events or errors.
async fn ack_result(consumer: &mut TestConsumer, timeout: Duration) -> Option<AckResult> {
    loop {
        match consumer.next(timeout).await? {
            Ok(ServerMessage::AckResult(result)) => return Some(result),
            Ok(ServerMessage::Events(batch)) => {
                panic!("unexpected events: {:?}", ids(&batch.events))
            }
            Ok(_) => continue,
            Err(status) => panic!("stream failed: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_promotes_the_standby_when_the_active_stream_drops_and_it_resumes_from_the_first_unacked_event()
 {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut primary =
        TestConsumer::attach(&endpoint, &spec("orders", "billing", "primary", 0)).await;
    let first = active_status(&mut primary, "primary").await;
    assert!(first.active, "the only consumer is active: {first:?}");
    assert_eq!(first.active_consumer, "primary");
    assert_eq!(first.partitions, vec![0]);
    let mut backup = TestConsumer::attach(&endpoint, &spec("orders", "billing", "backup", 1)).await;
    let standby = active_status(&mut backup, "backup").await;
    assert!(!standby.active, "a lower-priority consumer stands by");
    assert_eq!(standby.active_consumer, "primary");

    client
        .publish(
            "orders",
            (0..10).map(|i| event(&format!("o{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let taken = primary.events(10, WAIT).await;
    assert_eq!(
        ids(&taken),
        (0..10).map(|i| format!("o{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        taken.iter().map(|e| e.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<u64>>()
    );
    for e in &taken {
        assert_eq!(e.delivery_attempt, 1);
        assert_eq!(e.epoch, first.epoch, "deliveries carry the active epoch");
    }
    assert!(
        backup.events(1, QUIET).await.is_empty(),
        "a standby receives nothing"
    );

    primary.ack(handles(&taken[..3])).await;
    wait_stats(&client, "orders", "billing", "the first 3 acks", |s| {
        s.backlog == 7
    })
    .await;
    // Drop the stream without closing it: a crashed consumer.
    drop(primary);

    let (promoted, before) = next_active_status(&mut backup, "backup").await;
    assert!(
        before.is_empty(),
        "the promotion is announced before any event: {:?}",
        ids(&before)
    );
    assert!(promoted.active, "the standby is promoted: {promoted:?}");
    assert_eq!(promoted.active_consumer, "backup");
    assert_eq!(promoted.partitions, vec![0]);
    assert!(
        promoted.epoch > first.epoch,
        "a handover raises the epoch: {} -> {}",
        first.epoch,
        promoted.epoch
    );
    let resumed = backup.events(7, WAIT).await;
    assert_eq!(
        ids(&resumed),
        (3..10).map(|i| format!("o{i}")).collect::<Vec<_>>(),
        "the standby continues in order from the first unacked event"
    );
    for e in &resumed {
        assert_eq!(e.delivery_attempt, 2, "offset {} is a redelivery", e.offset);
        assert_eq!(e.epoch, promoted.epoch);
    }

    // New events follow the redeliveries, as first deliveries.
    client
        .publish(
            "orders",
            (10..13).map(|i| event(&format!("o{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let fresh = backup.events(3, WAIT).await;
    assert_eq!(ids(&fresh), vec!["o10", "o11", "o12"]);
    assert!(fresh.iter().all(|e| e.delivery_attempt == 1));
    backup.ack(handles(&resumed)).await;
    backup.ack(handles(&fresh)).await;
    wait_stats(&client, "orders", "billing", "every event acked", |s| {
        s.backlog == 0 && s.unacked == 0
    })
    .await;
    assert!(
        ack_result(&mut backup, QUIET).await.is_none(),
        "acks of current deliveries are all applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_standbys_are_told_who_is_active_and_who_takes_over() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    // Priority beats name; among equal priorities the name decides.
    let mut zulu = TestConsumer::attach(&endpoint, &spec("ticks", "watch", "zulu", 0)).await;
    let status = active_status(&mut zulu, "zulu").await;
    assert!(status.active);
    assert_eq!(status.active_consumer, "zulu");
    let mut mike = TestConsumer::attach(&endpoint, &spec("ticks", "watch", "mike", 5)).await;
    let status = active_status(&mut mike, "mike").await;
    assert!(!status.active);
    assert_eq!(status.active_consumer, "zulu", "mike is told who is active");
    assert!(status.partitions.is_empty(), "{status:?}");
    let mut alpha = TestConsumer::attach(&endpoint, &spec("ticks", "watch", "alpha", 5)).await;
    let status = active_status(&mut alpha, "alpha").await;
    assert!(!status.active);
    assert_eq!(
        status.active_consumer, "zulu",
        "alpha is told who is active"
    );

    // The active goes away: alpha (priority 5, first by name) takes over,
    // and the remaining standby learns about it.
    drop(zulu);
    let promoted = active_status(&mut alpha, "alpha").await;
    assert!(promoted.active, "{promoted:?}");
    assert_eq!(promoted.active_consumer, "alpha");
    let told = active_status(&mut mike, "mike").await;
    assert!(!told.active, "{told:?}");
    assert_eq!(
        told.active_consumer, "alpha",
        "a standby is told the new active consumer after a handover"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_acks_from_an_older_epoch_are_answered_stale() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut slow = TestConsumer::attach(&endpoint, &spec("ledger", "audit", "slow", 5)).await;
    let old = active_status(&mut slow, "slow").await;
    assert!(old.active);
    client
        .publish(
            "ledger",
            (0..5).map(|i| event(&format!("l{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let held = slow.events(5, WAIT).await;
    assert_eq!(held.len(), 5);
    assert!(held.iter().all(|e| e.epoch == old.epoch));

    // A preferred consumer attaches while the old active stays connected.
    let mut fast = TestConsumer::attach(&endpoint, &spec("ledger", "audit", "fast", 0)).await;
    let demoted = active_status(&mut slow, "slow").await;
    assert!(!demoted.active, "{demoted:?}");
    assert_eq!(demoted.active_consumer, "fast");
    assert!(demoted.epoch > old.epoch, "{old:?} -> {demoted:?}");
    let (new, _) = next_active_status(&mut fast, "fast").await;
    assert!(new.active, "{new:?}");
    assert_eq!(new.epoch, demoted.epoch);

    // The old active's acks are fenced off.
    slow.ack(handles(&held)).await;
    let result = ack_result(&mut slow, WAIT)
        .await
        .expect("acks of an older epoch are answered");
    let stale: BTreeSet<String> = result.stale_handles.iter().cloned().collect();
    assert_eq!(
        stale,
        handles(&held).into_iter().collect::<BTreeSet<_>>(),
        "every handle of the old epoch is stale: {result:?}"
    );
    assert!(result.invalid_handles.is_empty(), "{result:?}");

    // The new active got them, once, under the new epoch, in order.
    let taken = fast.events(5, WAIT).await;
    assert_eq!(ids(&taken), ids(&held));
    for e in &taken {
        assert_eq!(e.epoch, new.epoch);
        assert_eq!(e.delivery_attempt, 2);
    }
    assert!(slow.events(1, QUIET).await.is_empty());
    fast.ack(handles(&taken)).await;
    wait_stats(&client, "ledger", "audit", "the new active's acks", |s| {
        s.backlog == 0 && s.unacked == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_with_two_partitions_and_equal_priorities_makes_each_consumer_active_for_one() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    client
        .admin()
        .create_topic(CreateTopicRequest {
            name: "sensors".into(),
            config: Some(TopicConfig {
                partitions: 2,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut east = TestConsumer::attach(&endpoint, &spec("sensors", "rollup", "east", 0)).await;
    let alone = active_status(&mut east, "east").await;
    assert!(alone.active);
    assert_eq!(alone.partitions, vec![0, 1], "alone, east has both");
    let mut west = TestConsumer::attach(&endpoint, &spec("sensors", "rollup", "west", 0)).await;
    let w = active_status(&mut west, "west").await;
    assert!(w.active, "{w:?}");
    assert_eq!(w.active_consumer, "west");
    assert_eq!(w.partitions, vec![1]);
    let e = active_status(&mut east, "east").await;
    assert!(e.active, "{e:?}");
    assert_eq!(e.partitions, vec![0], "east keeps partition 0 only");

    let events = (0..40)
        .map(|i| {
            let mut e = event(&format!("s{i}"), 10);
            e.key = format!("sensor-{i}");
            e
        })
        .collect();
    client.publish("sensors", events).await.unwrap();
    let got_east = east.events(40, QUIET).await;
    let got_west = west.events(40, QUIET).await;
    assert!(
        got_east.iter().all(|e| e.partition == 0),
        "east only gets partition 0"
    );
    assert!(
        got_west.iter().all(|e| e.partition == 1),
        "west only gets partition 1"
    );
    assert!(!got_east.is_empty() && !got_west.is_empty());
    let mut all: Vec<String> = ids(&got_east);
    all.extend(ids(&got_west));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "every event delivered once");
    for got in [&got_east, &got_west] {
        let offsets: Vec<u64> = got.iter().map(|e| e.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition order: {offsets:?}"
        );
    }
    let s = stats(&client, "sensors", "rollup").await;
    assert_eq!(s.consumers.len(), 2);
    assert!(
        s.consumers.iter().all(|c| c.active),
        "both hold an active role: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_promotes_the_standby_when_the_active_consumer_process_freezes() {
    // A frozen process keeps its TCP connection open, so only keepalive
    // PINGs going unanswered can tell the server it is gone.
    let (server, _dir) = Herald::start(&[
        "--keepalive-interval",
        "300ms",
        "--keepalive-timeout",
        "700ms",
    ]);
    let endpoint = server.endpoint();
    let topic = "frozen.orders";
    let client = server.client().await;
    client.publish(topic, vec![event("e0", 8)]).await.unwrap();
    let mut frozen = Agent::spawn(
        "rust",
        &[
            "consume",
            "--endpoint",
            &endpoint,
            "--topic",
            topic,
            "--subscription",
            "workers",
            "--type",
            "failover",
            "--consumer-name",
            "a-frozen",
            "--count",
            "1000",
            "--timeout-s",
            "60",
        ],
    );
    frozen.wait_for("the active role", Duration::from_secs(60), |lines| {
        lines.iter().any(|l| l["role"] == "active")
    });
    let mut standby =
        TestConsumer::attach(&endpoint, &spec(topic, "workers", "b-standby", 0)).await;
    let told = active_status(&mut standby, "b-standby").await;
    assert!(!told.active, "{told:?}");
    assert_eq!(told.active_consumer, "a-frozen");

    frozen.signal(libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let promoted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match standby.next(left).await {
            Some(Ok(ServerMessage::ActiveStatus(status))) if status.active => break status,
            Some(Ok(_)) => {}
            Some(Err(status)) => panic!("standby stream failed: {status:?}"),
            None => panic!(
                "the standby was not promoted within 20 s of the active consumer freezing; logs:\n{}",
                server.logs()
            ),
        }
    };
    assert_eq!(promoted.active_consumer, "b-standby");
    assert!(promoted.epoch > told.epoch, "{promoted:?} after {told:?}");
    frozen.kill();
}
