//! Subscriptions across restarts and seeks, against a real `herald` process.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::consumer::{AttachSpec, TestConsumer, handles};
use common::{Herald, event};
use herald::v1::subscribe_response::Response as ServerMessage;
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

/// The first segment file of `topic`'s partition 0.
fn first_segment(data_dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    data_dir
        .join("topics")
        .join(topic)
        .join("0")
        .join("00000000000000000000.log")
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_failing_mid_stream_closes_consumers_with_its_code_then_resumes() {
    use herald::StatusExt;
    let (server, dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("fragile", "s", SubscriptionType::Shared, "c");
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish(
            "fragile",
            (0..3).map(|i| event(&format!("f{i}"), 20)).collect(),
        )
        .await
        .unwrap();
    let got = consumer.events(3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);

    // The segment loses its bytes under the running server; a redelivery
    // has to read the log again and fails.
    let segment = first_segment(dir.path(), "fragile");
    let original = std::fs::read(&segment).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(0)
        .unwrap();
    consumer
        .nack(handles(&got[..1]), Some(Duration::ZERO), "retry")
        .await;
    let status = loop {
        match consumer.next(Duration::from_secs(5)).await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the consumer was not told that storage failed"),
        }
    };
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(
        status.herald_code(),
        ErrorCode::StorageFailure,
        "{status:?}"
    );
    assert!(
        status.message().contains("fragile") && status.message().contains("corrupt"),
        "the message names the topic and what failed: {}",
        status.message()
    );

    // The server stays up and answers other calls.
    client
        .admin()
        .get_topic(GetTopicRequest {
            name: "fragile".into(),
        })
        .await
        .unwrap();

    // Storage recovers: a consumer that reconnects gets every unacked event.
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::options()
            .write(true)
            .open(&segment)
            .unwrap()
            .write_all_at(&original, 0)
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
        let mut received = Vec::new();
        let mut failed = false;
        while received.len() < 3 {
            match consumer.next(Duration::from_secs(1)).await {
                Some(Ok(ServerMessage::Events(batch))) => received.extend(batch.events),
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        if !failed && received.len() == 3 {
            consumer.ack(handles(&received)).await;
            consumer.close().await;
            break received;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription did not resume after storage recovered"
        );
    };
    let expected: BTreeSet<String> = (0..3).map(|i| format!("f{i}")).collect();
    assert_eq!(ids(&again), expected);
    assert!(
        server
            .logs()
            .contains("subscription paused: storage failed"),
        "{}",
        server.logs()
    );
}
