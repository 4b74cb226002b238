//! Bad input to subscriptions over real gRPC: each is refused with a
//! specific status, a Herald error code and a message a person can act on,
//! and the server stays up.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::consumer::{AttachSpec, TestConsumer, earliest, handles, open, request, stats};
use common::{Herald, event};
use herald::StatusExt;
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::subscriber_client::SubscriberClient;
use herald::v1::*;
use herald_client::Client;
use tonic::Code;

/// How long "nothing arrives" is waited for.
const QUIET: Duration = Duration::from_millis(400);
/// Long enough for anything that should happen; a hang fails the test.
const WAIT: Duration = Duration::from_secs(5);

/// Asserts the status code, the Herald error code, and that the message
/// mentions `needle` (what the person has to fix).
#[track_caller]
fn assert_refused(status: &tonic::Status, code: Code, herald: ErrorCode, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.herald_code(), herald, "{status:?}");
    assert!(
        status.message().contains(needle),
        "the message should mention {needle:?}: {:?}",
        status.message()
    );
}

/// The process is alive and a publish plus an attach still work.
async fn assert_serving(server: &mut Herald) {
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "herald exited; logs:\n{}",
        server.logs()
    );
    let client = server.client().await;
    client
        .publish("still-up", vec![event("", 4)])
        .await
        .expect("publish after bad input");
    let spec = AttachSpec::new("still-up", "probe", SubscriptionType::Shared, "");
    let mut probe = TestConsumer::attach(&server.endpoint(), &spec).await;
    assert!(
        !probe.events(1, WAIT).await.is_empty(),
        "attach still works"
    );
}

/// The status a Subscribe stream fails with (at the call or on the stream).
async fn subscribe_error(endpoint: &str, first: SubscribeRequest) -> tonic::Status {
    let (_tx, mut stream) = match open(endpoint, first).await {
        Err(status) => return status,
        Ok(opened) => opened,
    };
    match tokio::time::timeout(WAIT, stream.message()).await {
        Err(_) => panic!("the stream neither failed nor ended"),
        Ok(Err(status)) => status,
        Ok(Ok(Some(response))) => panic!("expected an error, got {response:?}"),
        Ok(Ok(None)) => panic!("the stream ended without an error status"),
    }
}

/// The status the stream ends with, skipping other messages.
async fn stream_end(consumer: &mut TestConsumer) -> tonic::Status {
    loop {
        match consumer.next(WAIT).await {
            Some(Err(status)) => return status,
            Some(Ok(_)) => continue,
            None => panic!("the stream did not end within {WAIT:?}"),
        }
    }
}

fn attach_message(topic: &str, subscription: &str, kind: i32) -> SubscribeRequest {
    request(ClientMessage::Attach(Attach {
        topic: topic.into(),
        subscription: subscription.into(),
        r#type: kind,
        consumer_name: "c".into(),
        initial_position: Some(earliest()),
        initial_credits: 10,
        ..Default::default()
    }))
}

async fn create_topic(client: &Client, name: &str) {
    client
        .admin()
        .create_topic(CreateTopicRequest {
            name: name.into(),
            config: None,
        })
        .await
        .expect("create topic");
}

fn create_subscription(topic: &str, name: &str) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        topic: topic.into(),
        name: name.into(),
        r#type: SubscriptionType::Shared as i32,
        initial_position: Some(earliest()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_with_an_unknown_subscription_type_is_invalid_argument() {
    let (mut server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    for kind in [0, 9] {
        let status = subscribe_error(&endpoint, attach_message("orders", "typed", kind)).await;
        assert_refused(
            &status,
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionConfig,
            "subscription type",
        );
        assert!(
            status.message().contains("SUBSCRIPTION_TYPE_EXCLUSIVE"),
            "the message lists the valid types: {}",
            status.message()
        );
    }
    let admin = server.client().await.admin();
    let status = admin
        .clone()
        .create_subscription(CreateSubscriptionRequest {
            r#type: 9,
            ..create_subscription("orders", "typed")
        })
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_without_a_topic_is_invalid_argument() {
    let (mut server, _dir) = Herald::start(&[]);
    let first = attach_message("", "no-topic", SubscriptionType::Shared as i32);
    let status = subscribe_error(&server.endpoint(), first).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest,
        "topic",
    );
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscribe_stream_that_does_not_start_with_an_attach_is_a_protocol_violation() {
    let (mut server, _dir) = Herald::start(&[]);
    let first = request(ClientMessage::Credit(Credit { credits: 5 }));
    let status = subscribe_error(&server.endpoint(), first).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::ProtocolViolation,
        "Attach",
    );
    let first = request(ClientMessage::Ack(Ack {
        ack_handles: vec!["0.0.1".into()],
        cumulative: false,
    }));
    let status = subscribe_error(&server.endpoint(), first).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::ProtocolViolation,
        "Attach",
    );
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_attach_on_the_same_stream_ends_it_with_a_protocol_violation() {
    let (mut server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let spec = AttachSpec::new("orders", "twice", SubscriptionType::Shared, "once");
    let mut consumer = TestConsumer::attach(&endpoint, &spec).await;
    consumer
        .send(ClientMessage::Attach(Attach {
            topic: "orders".into(),
            subscription: "twice".into(),
            r#type: SubscriptionType::Shared as i32,
            consumer_name: "again".into(),
            ..Default::default()
        }))
        .await;
    let status = stream_end(&mut consumer).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::ProtocolViolation,
        "new Subscribe stream",
    );
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credit_of_zero_is_answered_inline_and_the_stream_continues() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("orders", "zero", SubscriptionType::Shared, "z").credits(0);
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish("orders", vec![event("a", 4), event("b", 4)])
        .await
        .unwrap();
    consumer.credit(0).await;
    let detail = loop {
        match consumer.next(WAIT).await {
            Some(Ok(ServerMessage::Error(detail))) => break detail,
            Some(Ok(ServerMessage::Events(batch))) => panic!("events without credits: {batch:?}"),
            Some(Ok(_)) => continue,
            Some(Err(status)) => panic!("a zero credit must not end the stream: {status:?}"),
            None => panic!("no inline error for a zero credit"),
        }
    };
    assert_eq!(detail.code, ErrorCode::InvalidCredits as i32, "{detail:?}");
    assert_eq!(detail.grpc_code, Code::InvalidArgument as i32);
    assert!(detail.message.contains("at least one"), "{detail:?}");
    consumer.credit(2).await;
    let got = consumer.events(2, WAIT).await;
    assert_eq!(got.len(), 2, "a later Credit works");
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absurdly_large_credits_are_capped() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("orders", "greedy", SubscriptionType::Shared, "g").credits(u32::MAX);
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let s = stats(&client, "orders", "greedy").await;
    assert_eq!(s.consumers.len(), 1);
    assert!(s.consumers[0].credits <= 100_000, "{s:?}");
    assert!(s.consumers[0].credits > 0, "{s:?}");
    consumer.credit(u32::MAX).await;
    consumer.credit(u32::MAX).await;
    client.publish("orders", vec![event("x", 4)]).await.unwrap();
    assert_eq!(consumer.events(1, WAIT).await.len(), 1);
    let s = stats(&client, "orders", "greedy").await;
    assert!(s.consumers[0].credits <= 100_000, "{s:?}");
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_of_unknown_malformed_or_foreign_handles_come_back_in_ack_result() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let endpoint = server.endpoint();
    let spec =
        |name: &str| AttachSpec::new("orders", "acks", SubscriptionType::Shared, name).credits(1);
    let mut mine = TestConsumer::attach(&endpoint, &spec("mine")).await;
    let mut theirs = TestConsumer::attach(&endpoint, &spec("theirs")).await;
    client
        .publish("orders", vec![event("a", 4), event("b", 4)])
        .await
        .unwrap();
    let my_events = mine.events(1, WAIT).await;
    let their_events = theirs.events(1, WAIT).await;
    assert_eq!((my_events.len(), their_events.len()), (1, 1));

    let bogus = vec![
        "not-a-handle".to_owned(),
        String::new(),
        "0.999999.123456789".to_owned(),
    ];
    mine.ack(bogus.clone()).await;
    let result = loop {
        match mine.next(WAIT).await {
            Some(Ok(ServerMessage::AckResult(result))) => break result,
            Some(Ok(_)) => continue,
            Some(Err(status)) => panic!("a bad handle must not end the stream: {status:?}"),
            None => panic!("no AckResult for bad handles"),
        }
    };
    let mut invalid = result.invalid_handles.clone();
    invalid.sort();
    let mut expected = bogus.clone();
    expected.sort();
    assert_eq!(invalid, expected, "{result:?}");
    assert!(result.stale_handles.is_empty(), "{result:?}");

    // Another consumer's handle is refused and not applied.
    mine.ack(handles(&their_events)).await;
    let result = loop {
        match mine.next(WAIT).await {
            Some(Ok(ServerMessage::AckResult(result))) => break result,
            Some(Ok(_)) => continue,
            Some(Err(status)) => panic!("a foreign handle must not end the stream: {status:?}"),
            None => panic!("no AckResult for a foreign handle"),
        }
    };
    let refused: Vec<&String> = result
        .invalid_handles
        .iter()
        .chain(&result.stale_handles)
        .collect();
    assert_eq!(refused, vec![&their_events[0].ack_handle], "{result:?}");
    let s = stats(&client, "orders", "acks").await;
    assert_eq!(s.unacked, 2, "the foreign ack was not applied: {s:?}");

    // Both streams still work: their own acks apply without complaint.
    mine.ack(handles(&my_events)).await;
    theirs.ack(handles(&their_events)).await;
    let deadline = Instant::now() + WAIT;
    while stats(&client, "orders", "acks").await.backlog != 0 {
        assert!(Instant::now() < deadline, "own acks never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for consumer in [&mut mine, &mut theirs] {
        assert!(
            consumer.status(QUIET).await.is_none(),
            "valid acks get no AckResult"
        );
    }
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seek_past_the_end_or_without_a_position_is_invalid_argument() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    client
        .publish(
            "orders",
            (0..3).map(|i| event(&format!("e{i}"), 4)).collect(),
        )
        .await
        .unwrap();
    admin
        .create_subscription(create_subscription("orders", "replay"))
        .await
        .unwrap();
    let seek = |offset: u64| SeekRequest {
        topic: "orders".into(),
        name: "replay".into(),
        position: Some(Position {
            kind: Some(position::Kind::Offsets(PartitionOffsets {
                offsets: HashMap::from([(0, offset)]),
            })),
        }),
        ..Default::default()
    };
    let status = admin.seek(seek(10)).await.expect_err("past the end");
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::SeekPastEnd,
        "past the end",
    );
    let detail = status.herald_detail().unwrap();
    assert_eq!(
        detail.metadata.get("next_offset").map(String::as_str),
        Some("3")
    );
    admin.seek(seek(3)).await.expect("the end itself is fine");
    admin.seek(seek(1)).await.expect("an offset inside is fine");

    // Named twice, differently: which one was meant?
    #[allow(deprecated)]
    let twice = SeekRequest {
        subscription: "other".into(),
        ..seek(1)
    };
    let status = admin.seek(twice).await.expect_err("two names");
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest,
        "set only name",
    );

    for position in [None, Some(Position { kind: None })] {
        let status = admin
            .seek(SeekRequest {
                topic: "orders".into(),
                name: "replay".into(),
                position,
                ..Default::default()
            })
            .await
            .expect_err("no position");
        assert_refused(
            &status,
            Code::InvalidArgument,
            ErrorCode::InvalidRequest,
            "position",
        );
    }
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_subscription_with_consumers_needs_force_and_force_disconnects_them() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    let spec = AttachSpec::new("orders", "busy", SubscriptionType::Shared, "attached");
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    let delete = |force| DeleteSubscriptionRequest {
        topic: "orders".into(),
        name: "busy".into(),
        force,
    };
    let status = admin
        .delete_subscription(delete(false))
        .await
        .expect_err("consumers are connected");
    assert_refused(
        &status,
        Code::FailedPrecondition,
        ErrorCode::SubscriptionHasConsumers,
        "force",
    );
    // Still there, still delivering.
    client.publish("orders", vec![event("a", 4)]).await.unwrap();
    assert_eq!(consumer.events(1, WAIT).await.len(), 1);

    admin
        .delete_subscription(delete(true))
        .await
        .expect("forced delete");
    let ended = stream_end(&mut consumer).await;
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(ended.herald_code(), ErrorCode::SubscriptionClosed);
    let status = admin
        .get_subscription(GetSubscriptionRequest {
            topic: "orders".into(),
            name: "busy".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_duplicate_and_misnamed_subscriptions_are_refused_by_admin() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    create_topic(&client, "orders").await;

    let status = admin
        .get_subscription(GetSubscriptionRequest {
            topic: "orders".into(),
            name: "ghost".into(),
        })
        .await
        .expect_err("unknown");
    assert_refused(
        &status,
        Code::NotFound,
        ErrorCode::SubscriptionNotFound,
        "ghost",
    );
    let status = admin
        .delete_subscription(DeleteSubscriptionRequest {
            topic: "orders".into(),
            name: "ghost".into(),
            force: false,
        })
        .await
        .expect_err("unknown");
    assert_refused(
        &status,
        Code::NotFound,
        ErrorCode::SubscriptionNotFound,
        "ghost",
    );
    let status = admin
        .get_subscription_stats(GetSubscriptionStatsRequest {
            topic: "orders".into(),
            name: "ghost".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    admin
        .create_subscription(create_subscription("orders", "twin"))
        .await
        .expect("first create");
    let status = admin
        .create_subscription(create_subscription("orders", "twin"))
        .await
        .expect_err("second create");
    assert_refused(
        &status,
        Code::AlreadyExists,
        ErrorCode::SubscriptionAlreadyExists,
        "twin",
    );

    for name in ["", "has space", "slash/y", &"x".repeat(250)] {
        let status = admin
            .create_subscription(create_subscription("orders", name))
            .await
            .expect_err("invalid name");
        assert_refused(
            &status,
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionName,
            "1-249 characters",
        );
    }
    let spec = AttachSpec::new("orders", "has space", SubscriptionType::Shared, "c");
    let status = TestConsumer::try_attach(&server.endpoint(), &spec)
        .await
        .err()
        .expect("invalid name at attach");
    assert_refused(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidSubscriptionName,
        "1-249 characters",
    );
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_deadline_out_of_range_is_an_invalid_subscription_config() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut admin = client.admin();
    create_topic(&client, "orders").await;
    for deadline in [Duration::from_secs(2 * 3600), Duration::from_millis(1)] {
        let status = admin
            .create_subscription(CreateSubscriptionRequest {
                ack_deadline: Some(common::consumer::proto_duration(deadline)),
                ..create_subscription("orders", "slowpoke")
            })
            .await
            .expect_err("out of range");
        assert_refused(
            &status,
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionConfig,
            "ack_deadline",
        );
        let spec = AttachSpec::new("orders", "slowpoke", SubscriptionType::Shared, "c")
            .ack_deadline(deadline);
        let status = TestConsumer::try_attach(&server.endpoint(), &spec)
            .await
            .err()
            .expect("out of range at attach");
        assert_refused(
            &status,
            Code::InvalidArgument,
            ErrorCode::InvalidSubscriptionConfig,
            "ack_deadline",
        );
    }
    let status = admin
        .get_subscription(GetSubscriptionRequest {
            topic: "orders".into(),
            name: "slowpoke".into(),
        })
        .await
        .expect_err("nothing was created");
    assert_eq!(status.code(), Code::NotFound);
    assert_serving(&mut server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_a_deleted_topic_is_not_found() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    client.publish("doomed", vec![event("a", 4)]).await.unwrap();
    client
        .admin()
        .delete_topic(DeleteTopicRequest {
            name: "doomed".into(),
        })
        .await
        .unwrap();
    let mut reader = SubscriberClient::connect(server.endpoint()).await.unwrap();
    let request = ReadRequest {
        topic: "doomed".into(),
        position: Some(earliest()),
        ..Default::default()
    };
    let status = match reader.read(request).await {
        Err(status) => status,
        Ok(response) => match tokio::time::timeout(WAIT, response.into_inner().message()).await {
            Ok(Err(status)) => status,
            other => panic!("reading a deleted topic must fail: {other:?}"),
        },
    };
    assert_refused(&status, Code::NotFound, ErrorCode::TopicNotFound, "doomed");
    assert_serving(&mut server).await;
}

/// The next AckResult, failing on errors.
async fn next_ack_result(consumer: &mut TestConsumer, what: &str) -> AckResult {
    loop {
        match consumer.next(WAIT).await {
            Some(Ok(ServerMessage::AckResult(result))) => return result,
            Some(Ok(_)) => continue,
            Some(Err(status)) => panic!("{what} must not end the stream: {status:?}"),
            None => panic!("no AckResult for {what}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handle_repeated_in_one_ack_or_nack_counts_once_and_the_repeats_come_back() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let spec = AttachSpec::new("orders", "repeats", SubscriptionType::Shared, "c").credits(10);
    let mut consumer = TestConsumer::attach(&server.endpoint(), &spec).await;
    client
        .publish("orders", vec![event("a", 4), event("b", 4)])
        .await
        .unwrap();
    let events = consumer.events(2, WAIT).await;
    let (a, b) = (events[0].ack_handle.clone(), events[1].ack_handle.clone());

    consumer.ack(vec![a.clone(), a.clone(), a.clone()]).await;
    let result = next_ack_result(&mut consumer, "a repeated ack handle").await;
    assert_eq!(result.invalid_handles, [a.clone(), a.clone()], "{result:?}");
    consumer
        .nack(
            vec![b.clone(), b.clone()],
            Some(Duration::from_secs(60)),
            "later",
        )
        .await;
    let result = next_ack_result(&mut consumer, "a repeated nack handle").await;
    assert_eq!(
        result.invalid_handles,
        std::slice::from_ref(&b),
        "{result:?}"
    );

    let s = stats(&client, "orders", "repeats").await;
    assert_eq!((s.acked, s.nacked), (1, 1), "{s:?}");
    assert_serving(&mut server).await;
}
