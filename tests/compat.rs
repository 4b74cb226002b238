//! Data directories written by earlier Herald releases open with today's
//! server: topic and subscription metadata, cursors and logs are read back
//! as they were written.
//!
//! `tests/fixtures/data-dir-v1/` was written by the `herald` binary of the
//! first release of the versioned record formats' predecessor (commit
//! 58efaf0, whose cursor records carry no `version` field), with:
//!
//! ```text
//! HERALD_BIN=/path/to/old/herald HERALD_FIXTURE_OUT=tests/fixtures/data-dir-v1 \
//!   cargo test --test compat -- --ignored write_fixture
//! ```

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::Herald;
use common::consumer::{AttachSpec, TestConsumer, handles};
use herald::v1::*;

const FIXTURE: &str = "tests/fixtures/data-dir-v1";

/// The events of the fixture's `orders` topic: id, key, data.
fn orders() -> Vec<(String, String, Vec<u8>)> {
    (0..20)
        .map(|i| {
            (
                format!("o{i}"),
                format!("k{}", i % 4),
                format!("payload-{i}").into_bytes(),
            )
        })
        .collect()
}

fn order_event(id: &str, key: &str, data: &[u8]) -> Event {
    Event {
        id: id.into(),
        key: key.into(),
        r#type: "OrderPlaced".into(),
        source: "compat".into(),
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn redelivery() -> RedeliveryPolicy {
    RedeliveryPolicy {
        max_delivery_attempts: 3,
        ..Default::default()
    }
}

/// Writes the fixture with whatever binary `HERALD_BIN` names.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes tests/fixtures/data-dir-v1; run by hand with an old binary"]
async fn write_fixture() {
    let out = std::env::var("HERALD_FIXTURE_OUT").expect("set HERALD_FIXTURE_OUT");
    let out = Path::new(&out);
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut server = Herald::start_in(out, &[]);
    let client = server.client().await;
    client
        .admin()
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                partitions: 2,
                retention_age: Some(prost_types::Duration {
                    seconds: 7 * 24 * 3600,
                    nanos: 0,
                }),
                max_event_bytes: 4096,
                segment_bytes: 1 << 20,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let spec = AttachSpec::new("orders", "billing", SubscriptionType::Shared, "c")
        .redelivery(redelivery());
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let events = orders()
        .iter()
        .map(|(id, key, data)| order_event(id, key, data))
        .collect();
    client.publish("orders", events).await.unwrap();
    client
        .publish(
            "audit",
            (0..5)
                .map(|i| common::event(&format!("a{i}"), 10))
                .collect(),
        )
        .await
        .unwrap();
    let got = consumer.events(20, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 20);
    let even: Vec<DeliveredEvent> = got
        .into_iter()
        .filter(|e| {
            let n: u32 = e.event.as_ref().unwrap().id[1..].parse().unwrap();
            n.is_multiple_of(2)
        })
        .collect();
    consumer.ack(handles(&even)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.close().await;
    drop(client);
    assert!(server.terminate().success());
    std::fs::remove_file(out.join("herald.lock")).unwrap();
}

/// A copy of the fixture in a temp dir (the server writes to its data dir).
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(FIXTURE)
                .join("."),
        )
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_written_before_versioned_records_opens_as_it_was() {
    let dir = fixture_copy();
    let server = Herald::start_in(dir.path(), &[]);
    let client = server.client().await;

    let topics = client
        .admin()
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = topics.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["audit", "orders", "orders.billing.dlq"]);
    let orders_topic = topics.topics.iter().find(|t| t.name == "orders").unwrap();
    let config = orders_topic.config.as_ref().unwrap();
    assert_eq!(config.partitions, 2);
    assert_eq!(config.max_event_bytes, 4096);
    assert_eq!(config.segment_bytes, 1 << 20);
    assert_eq!(
        config.retention_age.as_ref().map(|d| d.seconds),
        Some(7 * 24 * 3600)
    );

    // Every stored event reads back byte for byte.
    let mut read = Vec::new();
    let mut responses = client
        .subscriber()
        .read(ReadRequest {
            topic: "orders".into(),
            position: Some(common::consumer::earliest()),
            max_events: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(batch) = responses.message().await.unwrap() {
        read.extend(batch.events.into_iter().map(|d| d.event.unwrap()));
    }
    let mut stored: Vec<(String, String, Vec<u8>)> = read
        .into_iter()
        .map(|e| (e.id, e.key, e.data.to_vec()))
        .collect();
    stored.sort();
    let mut expected = orders();
    expected.sort();
    assert_eq!(stored, expected);

    // The subscription kept its settings and its cursor: only the events
    // not acked before come back.
    let subscription = client
        .admin()
        .get_subscription(GetSubscriptionRequest {
            topic: "orders".into(),
            name: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subscription.r#type, SubscriptionType::Shared as i32);
    assert_eq!(
        subscription
            .redelivery
            .as_ref()
            .map(|r| r.max_delivery_attempts),
        Some(3)
    );
    let spec = AttachSpec::new("orders", "billing", SubscriptionType::Shared, "c")
        .redelivery(redelivery());
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let again: BTreeSet<String> = consumer
        .events(20, Duration::from_millis(500))
        .await
        .into_iter()
        .map(|e| e.event.unwrap().id)
        .collect();
    let odd: BTreeSet<String> = (1..20).step_by(2).map(|i| format!("o{i}")).collect();
    assert_eq!(again, odd);
    consumer.close().await;
}
