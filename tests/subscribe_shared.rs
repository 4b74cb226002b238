//! Shared subscriptions over real gRPC.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::consumer::{AttachSpec, TestConsumer, handles};
use common::{Herald, event};
use herald::v1::SubscriptionType;

const QUIET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread")]
async fn shared_spreads_events_over_consumers_and_each_is_acked_once() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut consumers = Vec::new();
    for name in ["a", "b", "c"] {
        let spec =
            AttachSpec::new("work", "workers", SubscriptionType::Shared, name).credits(10_000);
        consumers.push(TestConsumer::attach(&endpoint, &spec).await);
    }
    for batch in 0..10 {
        let events = (0..100)
            .map(|i| event(&format!("e{batch}-{i}"), 50))
            .collect();
        client.publish("work", events).await.unwrap();
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_consumer = Vec::new();
    for consumer in &mut consumers {
        let got = consumer.events(1000, QUIET).await;
        per_consumer.push(got.len());
        for e in &got {
            *seen
                .entry(e.event.as_ref().unwrap().id.clone())
                .or_default() += 1;
            assert_eq!(e.delivery_attempt, 1);
        }
        consumer.ack(handles(&got)).await;
    }
    assert_eq!(seen.len(), 1000, "every event delivered");
    assert!(seen.values().all(|&n| n == 1), "each exactly once");
    assert!(
        per_consumer.iter().all(|&n| n > 100),
        "spread: {per_consumer:?}"
    );
    for consumer in consumers {
        consumer.close().await;
    }
    let stats = client
        .admin()
        .get_subscription_stats(herald::v1::GetSubscriptionStatsRequest {
            topic: "work".into(),
            name: "workers".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.backlog, 0);
    assert_eq!(stats.unacked, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_shared_consumer_s_unacked_events_go_to_the_others() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let spec = |name: &str, credits| {
        AttachSpec::new("jobs", "pool", SubscriptionType::Shared, name).credits(credits)
    };
    let mut doomed = TestConsumer::attach(&endpoint, &spec("doomed", 30)).await;
    client
        .publish(
            "jobs",
            (0..30).map(|i| event(&format!("j{i}"), 10)).collect(),
        )
        .await
        .unwrap();
    let taken = doomed.events(30, QUIET).await;
    assert_eq!(taken.len(), 30);
    doomed.ack(handles(&taken[..10])).await;
    let mut survivor = TestConsumer::attach(&endpoint, &spec("survivor", 100)).await;
    // Give the acks time to land, then drop the stream without closing it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(doomed);
    let redelivered = survivor.events(20, Duration::from_secs(5)).await;
    let mut ids: Vec<String> = redelivered
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = taken[10..]
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.clone())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(redelivered.iter().all(|e| e.delivery_attempt == 2));
}
