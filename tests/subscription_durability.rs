//! Subscriptions across restarts and seeks, against a real `herald` process.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::consumer::{AttachSpec, TestConsumer, handles};
use common::{Herald, event};
use herald::v1::*;

const QUIET: Duration = Duration::from_millis(500);

fn ids(events: &[DeliveredEvent]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_from_the_persisted_cursor_and_loses_no_unacked_event() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("ledger", "audit", SubscriptionType::Exclusive, "c");
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish(
            "ledger",
            (0..100).map(|i| event(&format!("l{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let got = consumer.events(100, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 100);
    // Ack the first 60; wait past the cursor flush interval (100 ms).
    consumer.ack(handles(&got[..60])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(consumer);

    let server = server.restart_after_kill();
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let again = consumer.events(100, QUIET).await;
    let expected: BTreeSet<String> = (60..100).map(|i| format!("l{i}")).collect();
    assert_eq!(
        ids(&again),
        expected,
        "exactly the unacked events come back"
    );
    consumer.ack(handles(&again)).await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_after_the_last_flush_may_repeat_but_unacked_events_never_vanish() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("t", "s", SubscriptionType::Shared, "c");
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish("t", (0..50).map(|i| event(&format!("e{i}"), 20)).collect())
        .await
        .unwrap();
    let got = consumer.events(50, Duration::from_secs(5)).await;
    consumer.ack(handles(&got[..25])).await;
    // kill -9 right away: some acks may not be flushed.
    let server = server.restart_after_kill();
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let again = ids(&consumer.events(50, QUIET).await);
    let unacked: BTreeSet<String> = (25..50).map(|i| format!("e{i}")).collect();
    assert!(
        again.is_superset(&unacked),
        "every unacked event is redelivered"
    );
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seek_replays_from_an_offset_and_from_earliest() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    client
        .publish(
            "replay",
            (0..10).map(|i| event(&format!("r{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let spec = AttachSpec::new("replay", "s", SubscriptionType::Exclusive, "c");
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let all = consumer.events(10, Duration::from_secs(5)).await;
    consumer.ack(handles(&all)).await;
    assert!(consumer.events(1, QUIET).await.is_empty());

    admin
        .seek(SeekRequest {
            topic: "replay".into(),
            name: "s".into(),
            position: Some(Position {
                kind: Some(position::Kind::Offsets(PartitionOffsets {
                    offsets: [(0, 7)].into(),
                })),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let replayed = consumer.events(3, Duration::from_secs(5)).await;
    assert_eq!(
        replayed.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [7, 8, 9]
    );
    consumer.ack(handles(&replayed)).await;

    // The deprecated spelling of the subscription is still accepted.
    #[allow(deprecated)]
    let seek_earliest = SeekRequest {
        topic: "replay".into(),
        subscription: "s".into(),
        position: Some(Position {
            kind: Some(position::Kind::Earliest(())),
        }),
        ..Default::default()
    };
    admin.seek(seek_earliest).await.unwrap();
    assert_eq!(consumer.events(10, Duration::from_secs(5)).await.len(), 10);
    consumer.close().await;
}
