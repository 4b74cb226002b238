//! Exclusive subscriptions over real gRPC: one consumer only, takeover
//! after it leaves, type checks, flow control and cumulative acks.

mod common;

use std::time::{Duration, Instant};

use common::consumer::{AttachSpec, TestConsumer, handles, wait_stats};
use common::{Herald, event};
use herald::StatusExt;
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::*;
use herald_client::Client;
use tonic::Code;

/// How long "nothing arrives" is waited for.
const QUIET: Duration = Duration::from_millis(400);
/// Long enough for anything that should happen; a hang fails the test.
const WAIT: Duration = Duration::from_secs(5);

fn spec(topic: &str, subscription: &str, name: &str) -> AttachSpec {
    AttachSpec::new(topic, subscription, SubscriptionType::Exclusive, name)
}

fn ids(events: &[DeliveredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.as_ref().expect("envelope").id.clone())
        .collect()
}

async fn publish(client: &Client, topic: &str, prefix: &str, count: usize) {
    client
        .publish(
            topic,
            (0..count)
                .map(|i| event(&format!("{prefix}{i}"), 16))
                .collect(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_refuses_a_second_consumer_naming_the_holder() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let holder = TestConsumer::attach(&endpoint, &spec("payments", "settle", "holder-7")).await;
    let refused = TestConsumer::try_attach(&endpoint, &spec("payments", "settle", "intruder"))
        .await
        .err()
        .expect("a second consumer is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.herald_code(), ErrorCode::ExclusiveConsumerAttached);
    assert!(
        refused.message().contains("holder-7"),
        "the message names the holder: {}",
        refused.message()
    );
    let detail = refused.herald_detail().expect("error detail");
    assert_eq!(
        detail.metadata.get("holder").map(String::as_str),
        Some("holder-7")
    );
    // The holder is unaffected.
    let client = server.client().await;
    publish(&client, "payments", "p", 2).await;
    let mut holder = holder;
    assert_eq!(holder.events(2, WAIT).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_hands_unacked_events_to_the_next_consumer_after_the_first_disconnects() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut first = TestConsumer::attach(&endpoint, &spec("invoices", "mailer", "first")).await;
    publish(&client, "invoices", "i", 10).await;
    let taken = first.events(10, WAIT).await;
    assert_eq!(taken.len(), 10);
    first.ack(handles(&taken[..4])).await;
    wait_stats(&client, "invoices", "mailer", "the first 4 acks", |s| {
        s.backlog == 6
    })
    .await;
    drop(first);

    // The old stream's detach is asynchronous: retry as a client would.
    let deadline = Instant::now() + WAIT;
    let mut second = loop {
        match TestConsumer::try_attach(&endpoint, &spec("invoices", "mailer", "second")).await {
            Ok(consumer) => break consumer,
            Err(status) if status.herald_code() == ErrorCode::ExclusiveConsumerAttached => {
                assert!(Instant::now() < deadline, "the first never detached");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(status) => panic!("attach failed: {status:?}"),
        }
    };
    let resumed = second.events(6, WAIT).await;
    assert_eq!(
        ids(&resumed),
        ids(&taken[4..]),
        "the unacked ones, in order"
    );
    assert!(resumed.iter().all(|e| e.delivery_attempt == 2));
    assert!(second.events(1, QUIET).await.is_empty(), "nothing else");
    second.ack(handles(&resumed)).await;
    wait_stats(&client, "invoices", "mailer", "every ack", |s| {
        s.backlog == 0 && s.unacked == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attaching_with_another_type_than_the_subscription_s_is_failed_precondition() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let _holder = TestConsumer::attach(&endpoint, &spec("audit", "archive", "keeper")).await;
    let shared = AttachSpec::new("audit", "archive", SubscriptionType::Shared, "other");
    let refused = TestConsumer::try_attach(&endpoint, &shared)
        .await
        .err()
        .expect("a type mismatch is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.herald_code(), ErrorCode::SubscriptionTypeMismatch);
    assert!(
        refused.message().contains("exclusive") && refused.message().contains("shared"),
        "the message names both types: {}",
        refused.message()
    );

    // Also for a subscription created through Admin with nobody attached.
    client
        .admin()
        .create_subscription(CreateSubscriptionRequest {
            topic: "audit".into(),
            name: "fanout".into(),
            r#type: SubscriptionType::KeyShared as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = TestConsumer::try_attach(&endpoint, &spec("audit", "fanout", "solo"))
        .await
        .err()
        .expect("a type mismatch is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.herald_code(), ErrorCode::SubscriptionTypeMismatch);
    assert!(
        refused.message().contains("key_shared"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_with_zero_credits_receives_nothing_and_is_told_why_until_it_grants_credits() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut consumer =
        TestConsumer::attach(&endpoint, &spec("metrics", "sink", "starved").credits(0)).await;
    publish(&client, "metrics", "m", 5).await;

    let mut flow = None;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match consumer.next(Duration::from_millis(200)).await {
            Some(Ok(ServerMessage::Events(batch))) => {
                panic!("events without credits: {:?}", ids(&batch.events))
            }
            Some(Ok(ServerMessage::FlowStatus(status))) => {
                flow = Some(status);
                break;
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(status)) => panic!("stream failed: {status:?}"),
            None => {}
        }
    }
    let flow = flow.expect("a consumer held back by credits gets a FlowStatus");
    assert_eq!(
        flow.reason,
        flow_status::Reason::NoCredits as i32,
        "{flow:?}"
    );
    assert_eq!(flow.credits, 0);
    assert_eq!(flow.outstanding, 0);

    consumer.credit(3).await;
    let got = consumer.events(5, QUIET).await;
    assert_eq!(
        ids(&got),
        vec!["m0", "m1", "m2"],
        "exactly the credits granted"
    );
    consumer.credit(10).await;
    let rest = consumer.events(5, WAIT).await;
    assert_eq!(ids(&rest), vec!["m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_cumulative_ack_acknowledges_every_earlier_event() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let mut consumer = TestConsumer::attach(&endpoint, &spec("logs", "indexer", "idx")).await;
    publish(&client, "logs", "l", 10).await;
    let got = consumer.events(10, WAIT).await;
    assert_eq!(got.len(), 10);
    consumer
        .send(ClientMessage::Ack(Ack {
            ack_handles: vec![got[6].ack_handle.clone()],
            cumulative: true,
        }))
        .await;
    let s = wait_stats(&client, "logs", "indexer", "the cumulative ack", |s| {
        s.backlog == 3
    })
    .await;
    assert_eq!(s.unacked, 3, "{s:?}");
    assert_eq!(s.consumers.len(), 1);
    assert_eq!(s.consumers[0].outstanding, 3, "{s:?}");

    // The earlier handles are acked already: acking them again is invalid.
    consumer.ack(vec![got[2].ack_handle.clone()]).await;
    let result = loop {
        match consumer.next(WAIT).await {
            Some(Ok(ServerMessage::AckResult(result))) => break result,
            Some(Ok(ServerMessage::Events(batch))) => {
                panic!("unexpected redelivery: {:?}", ids(&batch.events))
            }
            Some(Ok(_)) => continue,
            Some(Err(status)) => panic!("stream failed: {status:?}"),
            None => panic!("no AckResult"),
        }
    };
    assert_eq!(result.invalid_handles, vec![got[2].ack_handle.clone()]);
    consumer.ack(handles(&got[7..])).await;
    wait_stats(&client, "logs", "indexer", "the last acks", |s| {
        s.backlog == 0 && s.unacked == 0
    })
    .await;
}
