//! Nacks, ack deadlines and dead letters over real gRPC.

mod common;

use std::time::{Duration, Instant};

use common::consumer::{AttachSpec, TestConsumer, handles, proto_duration};
use common::{Herald, event};
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::*;

const QUIET: Duration = Duration::from_millis(300);

fn policy(max_attempts: u32) -> RedeliveryPolicy {
    RedeliveryPolicy {
        min_backoff: Some(proto_duration(Duration::from_millis(50))),
        max_backoff: Some(proto_duration(Duration::from_millis(200))),
        multiplier: 2.0,
        max_delivery_attempts: max_attempts,
        dead_letter_topic: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nack_with_delay_redelivers_after_the_delay_with_the_next_attempt() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec =
        AttachSpec::new("orders", "billing", SubscriptionType::Shared, "c").redelivery(policy(0));
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish("orders", vec![event("o1", 10)])
        .await
        .unwrap();
    let first = consumer.events(1, Duration::from_secs(5)).await;
    assert_eq!(first[0].delivery_attempt, 1);
    let nacked_at = Instant::now();
    consumer
        .nack(
            handles(&first),
            Some(Duration::from_millis(700)),
            "database busy",
        )
        .await;
    assert!(
        consumer.events(1, QUIET).await.is_empty(),
        "not before the delay"
    );
    let again = consumer.events(1, Duration::from_secs(5)).await;
    assert!(nacked_at.elapsed() >= Duration::from_millis(700));
    assert_eq!(again[0].delivery_attempt, 2);
    assert_eq!(again[0].offset, first[0].offset);
    assert_ne!(again[0].ack_handle, first[0].ack_handle);
    consumer.ack(handles(&again)).await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ack_deadline_expiry_redelivers() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("slow", "s", SubscriptionType::Exclusive, "c")
        .ack_deadline(Duration::from_millis(300))
        .redelivery(policy(0));
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client.publish("slow", vec![event("x", 10)]).await.unwrap();
    let first = consumer.events(1, Duration::from_secs(5)).await;
    // Not acked: after the deadline (plus the 50 ms backoff) it comes again.
    let again = consumer.events(1, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].offset, first[0].offset);
    assert_eq!(again[0].delivery_attempt, 2);

    // Extending the deadline holds redelivery back.
    consumer
        .send(ClientMessage::ExtendDeadline(ExtendDeadline {
            ack_handles: handles(&again),
            extension: Some(proto_duration(Duration::from_secs(30))),
        }))
        .await;
    assert!(
        consumer
            .events(1, Duration::from_millis(800))
            .await
            .is_empty()
    );
    consumer.ack(handles(&again)).await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_nacked_past_max_attempts_lands_in_the_dead_letter_topic() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let spec =
        AttachSpec::new("routes", "alerts", SubscriptionType::Shared, "c").redelivery(policy(3));
    let mut consumer = TestConsumer::attach(&endpoint, &spec).await;
    client
        .publish("routes", vec![event("poison", 10), event("fine", 10)])
        .await
        .unwrap();
    let mut attempts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let got = consumer.events(1, Duration::from_millis(500)).await;
        for e in &got {
            let id = &e.event.as_ref().unwrap().id;
            if id == "poison" {
                attempts.push(e.delivery_attempt);
                consumer
                    .nack(vec![e.ack_handle.clone()], None, "cannot parse route")
                    .await;
            } else {
                consumer.ack(vec![e.ack_handle.clone()]).await;
            }
        }
        if attempts.len() == 3 && got.is_empty() {
            break;
        }
    }
    assert_eq!(
        attempts,
        [1, 2, 3],
        "delivered max_delivery_attempts times, then no more"
    );

    // The dead letter is in "routes.alerts.dlq", with why and where from.
    let mut reader = herald::v1::subscriber_client::SubscriberClient::connect(endpoint.clone())
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..50 {
        let mut stream = reader
            .read(ReadRequest {
                topic: "routes.alerts.dlq".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        dead.clear();
        while let Some(batch) = stream.message().await.unwrap() {
            dead.extend(batch.events);
        }
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1);
    let letter = dead[0].event.as_ref().unwrap();
    assert_eq!(letter.id, "poison");
    let attr = |k: &str| letter.attributes.get(k).cloned().unwrap_or_default();
    assert_eq!(attr("herald_dlq_reason"), "cannot parse route");
    assert_eq!(attr("herald_dlq_attempts"), "3");
    assert_eq!(attr("herald_dlq_source_topic"), "routes");
    assert_eq!(attr("herald_dlq_subscription"), "alerts");
    assert_eq!(attr("herald_dlq_source_offset"), "0");

    // And it is acked on the source: nothing is left in the backlog.
    let stats = client
        .admin()
        .get_subscription_stats(GetSubscriptionStatsRequest {
            topic: "routes".into(),
            name: "alerts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.backlog, 0);
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_subscription_deletes_its_empty_dead_letter_topic_and_keeps_one_with_events() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    let create = |name: &str, dead_letter_topic: &str| CreateSubscriptionRequest {
        topic: "orders".into(),
        name: name.into(),
        r#type: SubscriptionType::Shared as i32,
        redelivery: Some(RedeliveryPolicy {
            max_delivery_attempts: 2,
            dead_letter_topic: dead_letter_topic.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exists = |topic: &'static str| {
        let mut admin = client.admin();
        async move {
            match admin
                .get_topic(GetTopicRequest { name: topic.into() })
                .await
            {
                Ok(_) => true,
                Err(status) if status.code() == tonic::Code::NotFound => false,
                Err(status) => panic!("GetTopic {topic}: {status:?}"),
            }
        }
    };
    let delete = |name: &'static str| {
        let mut admin = client.admin();
        async move {
            admin
                .delete_subscription(DeleteSubscriptionRequest {
                    topic: "orders".into(),
                    name: name.into(),
                    force: false,
                })
                .await
                .unwrap()
                .into_inner()
                .kept_dead_letter_topics
        }
    };
    client
        .publish("orders", vec![event("o1", 4)])
        .await
        .unwrap();
    for name in ["empty", "full", "custom"] {
        let dlq = if name == "custom" { "shared.dlq" } else { "" };
        admin.create_subscription(create(name, dlq)).await.unwrap();
    }
    assert!(exists("orders.empty.dlq").await && exists("orders.full.dlq").await);
    client
        .publish("orders.full.dlq", vec![event("dead", 4)])
        .await
        .unwrap();

    // Empty and made by Herald: goes with its subscription.
    assert!(delete("empty").await.is_empty());
    assert!(!exists("orders.empty.dlq").await);
    // Holds events: kept, and the answer says so.
    assert_eq!(delete("full").await, ["orders.full.dlq"]);
    assert!(exists("orders.full.dlq").await);
    // Named by the user: theirs to delete.
    assert!(delete("custom").await.is_empty());
    assert!(exists("shared.dlq").await);

    // Deleting the topic does the same for its subscriptions.
    admin
        .create_subscription(create("again", ""))
        .await
        .unwrap();
    assert!(exists("orders.again.dlq").await);
    let kept = admin
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .kept_dead_letter_topics;
    assert!(kept.is_empty(), "{kept:?}");
    assert!(!exists("orders.again.dlq").await);
}
