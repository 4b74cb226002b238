//! The typed producer and consumer against an in-process broker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use herald_client::prelude::*;
use herald_client::v1::{self, ErrorCode};
use herald_server::testing::{TestServer, start_in_memory};

/// The test event type, with a hand-written [`Event`] impl.
#[derive(Clone, PartialEq, prost::Message)]
struct OrderPlaced {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(uint64, tag = "2")]
    amount: u64,
}

impl prost::Name for OrderPlaced {
    const NAME: &'static str = "OrderPlaced";
    const PACKAGE: &'static str = "test.v1";
}

impl Event for OrderPlaced {
    const TOPIC: &'static str = "orders";
    const TYPE: &'static str = "com.example.order.placed";
    const SOURCE: &'static str = "/tests/orders";
    fn key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

fn order(id: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: id.into(),
        amount: 42,
    }
}

async fn setup() -> (TestServer, Client) {
    let server = start_in_memory().await;
    let client = Client::connect(server.endpoint()).await.expect("connect");
    (server, client)
}

/// Quick redelivery so tests do not wait for the 1 s default backoff.
fn fast_redelivery(max_attempts: u32) -> Redelivery {
    Redelivery {
        min_backoff: Some(Duration::from_millis(20)),
        max_backoff: Some(Duration::from_millis(50)),
        max_delivery_attempts: max_attempts,
        ..Redelivery::default()
    }
}

/// Reads the first event of `topic`, polling until one is there (10 s).
async fn first_event(client: &Client, topic: &str) -> v1::DeliveredEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = client
            .subscriber()
            .read(v1::ReadRequest {
                topic: topic.into(),
                max_events: 1,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(stream) = stream.as_mut()
            && let Ok(Some(response)) = stream.message().await
            && let Some(event) = response.events.into_iter().next()
        {
            return event;
        }
        assert!(Instant::now() < deadline, "nothing ever reached {topic}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn published_events_arrive_decoded_with_their_attributes() {
    let (_server, client) = setup().await;
    let producer = client.producer::<OrderPlaced>().build();
    let before = SystemTime::now() - Duration::from_secs(1);
    for id in ["a", "b", "c"] {
        let receipt = producer.publish(&order(id)).await.expect("publish");
        assert!(!receipt.duplicate);
        assert!(receipt.publish_time.is_some());
    }
    let consumer = client
        .consumer::<OrderPlaced>("audit")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    let envelopes: Vec<_> = consumer.stream().take(3).collect().await;
    let ids: Vec<String> = envelopes
        .iter()
        .map(|e| e.as_ref().expect("decoded").value.order_id.clone())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for envelope in envelopes {
        let envelope = envelope.expect("decoded");
        assert_eq!(envelope.value.amount, 42);
        assert_eq!(envelope.event_type, "com.example.order.placed");
        assert_eq!(envelope.source, "/tests/orders");
        assert_eq!(envelope.data_schema, "test.v1.OrderPlaced");
        assert_eq!(envelope.key, envelope.value.order_id);
        assert_eq!(envelope.topic, "orders");
        assert_eq!(envelope.delivery_attempt, 1);
        assert!(uuid::Uuid::parse_str(&envelope.id).is_ok());
        let time = envelope.time.expect("time set");
        assert!(time >= before && time <= SystemTime::now());
        envelope.ack();
    }
    let raw = first_event(&client, "orders").await.event.expect("event");
    assert_eq!(raw.data_content_type, "application/protobuf");
}

#[tokio::test]
async fn concurrent_publishes_share_requests() {
    let (_server, client) = setup().await;
    let producer = client
        .producer::<OrderPlaced>()
        .linger(Duration::from_millis(20))
        .max_batch(100)
        .build();
    let calls = (0..300).map(|i| {
        let producer = producer.clone();
        async move { producer.publish(&order(&format!("o{i}"))).await }
    });
    let receipts: Vec<Receipt> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every publish succeeds");
    let mut offsets: Vec<u64> = receipts.iter().map(|r| r.offset).collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), 300, "each event has its own offset");
    let stats = producer.stats();
    assert_eq!(stats.events, 300);
    assert!(
        stats.requests <= 30,
        "300 concurrent publishes took {} requests",
        stats.requests
    );
    let batch = producer
        .publish_batch(&[order("x"), order("y")])
        .await
        .expect("batch");
    assert_eq!(batch.len(), 2);
    producer.close().await;
}

#[tokio::test]
async fn failing_handler_is_redelivered_then_dead_lettered_with_the_reason() {
    let (_server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("billing")
        .initial_position(Position::Earliest)
        .redelivery(fast_redelivery(2))
        .subscribe()
        .await
        .expect("subscribe");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer.run_until(
        shutdown.clone(),
        move |e: Envelope<OrderPlaced>| {
            seen.lock().unwrap().push(e.delivery_attempt);
            async move { Err::<(), _>(format!("card declined for {}", e.value.order_id)) }
        },
    ));
    client
        .producer::<OrderPlaced>()
        .build()
        .publish(&order("o1"))
        .await
        .expect("publish");

    let dead = first_event(&client, "orders.billing.dlq").await;
    let event = dead.event.expect("event");
    assert_eq!(
        event
            .attributes
            .get("herald_dlq_reason")
            .map(String::as_str),
        Some("card declined for o1")
    );
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
    shutdown.cancel();
    run.await.expect("join").expect("run ends cleanly");
}

#[tokio::test]
async fn handler_panic_is_nacked_and_the_loop_goes_on() {
    let (_server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("shipping")
        .initial_position(Position::Earliest)
        .redelivery(fast_redelivery(0))
        .subscribe()
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer.run_until(
        shutdown.clone(),
        move |e: Envelope<OrderPlaced>| {
            let tx = tx.clone();
            async move {
                if e.value.order_id == "poison" && e.delivery_attempt == 1 {
                    panic!("handler bug");
                }
                tx.send((e.value.order_id.clone(), e.delivery_attempt))
                    .unwrap();
                Ok::<(), String>(())
            }
        },
    ));
    let producer = client.producer::<OrderPlaced>().build();
    producer.publish(&order("poison")).await.expect("publish");
    producer.publish(&order("fine")).await.expect("publish");

    let mut got = Vec::new();
    while got.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("events keep coming after a panic")
            .expect("open");
        got.push(next);
    }
    got.sort();
    assert_eq!(got, [("fine".to_owned(), 1), ("poison".to_owned(), 2)]);
    shutdown.cancel();
    run.await.expect("join").expect("run ends cleanly");
}

#[tokio::test]
async fn undecodable_event_is_nacked_with_the_reason_and_the_loop_goes_on() {
    let (_server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("decode")
        .initial_position(Position::Earliest)
        .redelivery(fast_redelivery(1))
        .subscribe()
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer.run_until(
        shutdown.clone(),
        move |e: Envelope<OrderPlaced>| {
            let tx = tx.clone();
            async move {
                tx.send(e.value.order_id.clone()).unwrap();
                Ok::<(), String>(())
            }
        },
    ));
    // An incomplete varint: not a valid OrderPlaced.
    client
        .publish(
            "orders",
            vec![herald_client::event("garbage", vec![0xffu8, 0xff, 0xff])],
        )
        .await
        .expect("raw publish");
    client
        .producer::<OrderPlaced>()
        .build()
        .publish(&order("valid"))
        .await
        .expect("publish");

    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the valid event is handled")
        .expect("open");
    assert_eq!(next, "valid");
    let dead = first_event(&client, "orders.decode.dlq").await;
    let reason = dead.event.expect("event").attributes["herald_dlq_reason"].clone();
    assert!(
        reason.contains("cannot decode") && reason.contains("test.v1.OrderPlaced"),
        "{reason}"
    );
    shutdown.cancel();
    run.await.expect("join").expect("run ends cleanly");
}

#[tokio::test]
async fn event_over_the_topic_max_is_a_typed_error() {
    let (_server, client) = setup().await;
    client
        .admin()
        .create_topic(v1::CreateTopicRequest {
            name: "orders".into(),
            config: Some(v1::TopicConfig {
                max_event_bytes: 1024,
                ..Default::default()
            }),
        })
        .await
        .expect("create topic");
    let producer = client.producer::<OrderPlaced>().build();
    let error = producer
        .publish(&order(&"x".repeat(4096)))
        .await
        .expect_err("too large");
    assert_eq!(error.code(), ErrorCode::EventTooLarge, "{error}");
    assert!(matches!(error, ClientError::Rejected { .. }), "{error:?}");
    // The stream survives the refusal.
    producer
        .publish(&order("small"))
        .await
        .expect("small event");
}

#[tokio::test]
async fn connecting_to_a_down_server_fails_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let error = Client::builder()
        .endpoint(&endpoint)
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .err()
        .expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&endpoint), "{error}");
}

#[tokio::test]
async fn run_stops_when_the_server_ends_the_stream_without_reconnect() {
    let (server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("shutdown")
        .reconnect(false)
        .subscribe()
        .await
        .expect("subscribe");
    let run =
        tokio::spawn(consumer.run(|_e: Envelope<OrderPlaced>| async { Ok::<(), String>(()) }));
    server.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run returns once the server is gone")
        .expect("join");
    if let Err(error) = result {
        assert!(error.is_transient(), "{error:?}");
    }
}

#[tokio::test]
async fn credits_are_topped_up_past_the_window_and_acks_survive_shutdown() {
    let (_server, client) = setup().await;
    let producer = client.producer::<OrderPlaced>().build();
    let batch: Vec<OrderPlaced> = (0..100).map(|i| order(&format!("o{i}"))).collect();
    producer.publish_batch(&batch).await.expect("publish");

    let consumer = client
        .consumer::<OrderPlaced>("window")
        .initial_position(Position::Earliest)
        .credits(8)
        .subscribe()
        .await
        .expect("subscribe");
    let handled = Arc::new(Mutex::new(0usize));
    let count = handled.clone();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    consumer
        .run_until(shutdown, move |_e: Envelope<OrderPlaced>| {
            let (count, stop) = (count.clone(), stop.clone());
            async move {
                let mut n = count.lock().unwrap();
                *n += 1;
                if *n == 100 {
                    stop.cancel();
                }
                Ok::<(), String>(())
            }
        })
        .await
        .expect("run");
    assert_eq!(
        *handled.lock().unwrap(),
        100,
        "8 credits, topped up, carry 100 events"
    );

    // Every ack was applied before run returned: a new consumer of the same
    // subscription gets nothing.
    let again = client
        .consumer::<OrderPlaced>("window")
        .subscribe()
        .await
        .expect("subscribe again");
    let mut stream = Box::pin(again.stream());
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "redelivered after ack: {next:?}");
}

#[tokio::test]
async fn stream_nack_with_delay_redelivers_and_extend_keeps_it() {
    let (_server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("manual")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    client
        .producer::<OrderPlaced>()
        .build()
        .publish(&order("o1"))
        .await
        .expect("publish");
    let mut stream = Box::pin(consumer.stream());
    let first = stream.next().await.expect("event").expect("decoded");
    assert_eq!(first.delivery_attempt, 1);
    first.extend(Duration::from_secs(5));
    first.nack(Some(Duration::from_millis(10)), "not yet");
    let second = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("redelivered")
        .expect("event")
        .expect("decoded");
    assert_eq!(second.id, first.id);
    assert_eq!(second.delivery_attempt, 2);
    second.ack();
}

#[tokio::test]
async fn failover_consumers_see_their_role() {
    let (_server, client) = setup().await;
    let first = client
        .consumer::<OrderPlaced>("roles")
        .subscription_type(SubscriptionType::Failover)
        .consumer_name("a")
        .priority(0)
        .subscribe()
        .await
        .expect("subscribe a");
    let second = client
        .consumer::<OrderPlaced>("roles")
        .subscription_type(SubscriptionType::Failover)
        .consumer_name("b")
        .priority(1)
        .subscribe()
        .await
        .expect("subscribe b");
    assert_eq!(second.attached().consumer_name, "b");
    let mut role_a = first.active_state();
    let mut role_b = second.active_state();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let handler = |_e: Envelope<OrderPlaced>| async { Ok::<(), String>(()) };
    let run_a = tokio::spawn(first.run_until(stop_a.clone(), handler));
    let run_b = tokio::spawn(second.run_until(stop_b.clone(), handler));

    let b = tokio::time::timeout(
        Duration::from_secs(5),
        role_b.wait_for(|s| s.as_ref().is_some_and(|s| !s.active)),
    )
    .await
    .expect("b hears it stands by")
    .expect("open")
    .clone()
    .expect("state");
    assert_eq!(b.active_consumer, "a");
    tokio::time::timeout(
        Duration::from_secs(5),
        role_a.wait_for(|s| s.as_ref().is_some_and(|s| s.active)),
    )
    .await
    .expect("a hears it is active")
    .expect("open");

    // a leaves: b takes over and hears so.
    stop_a.cancel();
    run_a.await.expect("join").expect("a ends cleanly");
    tokio::time::timeout(
        Duration::from_secs(5),
        role_b.wait_for(|s| s.as_ref().is_some_and(|s| s.active)),
    )
    .await
    .expect("b hears it took over")
    .expect("open");
    stop_b.cancel();
    run_b.await.expect("join").expect("b ends cleanly");
}

#[tokio::test]
async fn consumer_reattaches_after_a_server_restart() {
    let server = start_in_memory().await;
    let addr = server.local_addr();
    let client = Client::builder()
        .endpoint(server.endpoint())
        .reconnect(ReconnectPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            multiplier: 2.0,
            jitter: 0.1,
        })
        .connect()
        .await
        .expect("connect");
    let consumer = client
        .consumer::<OrderPlaced>("durable")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(consumer.run_until(
        shutdown.clone(),
        move |e: Envelope<OrderPlaced>| {
            let tx = tx.clone();
            async move {
                tx.send(e.value.order_id.clone()).unwrap();
                Ok::<(), String>(())
            }
        },
    ));
    client
        .producer::<OrderPlaced>()
        .build()
        .publish(&order("before"))
        .await
        .expect("publish");
    assert_eq!(rx.recv().await.as_deref(), Some("before"));

    server.shutdown().await;
    let restarted = herald_server::testing::start(herald_server::config::ServerConfig {
        listen: addr,
        in_memory: true,
        ..Default::default()
    })
    .await
    .expect("restart on the same port");
    // In-memory storage starts empty: the re-attach recreates the
    // subscription from the earliest event, which is this one.
    let producer = client.producer::<OrderPlaced>().build();
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.publish(&order("after")).await.is_err() {
        assert!(Instant::now() < deadline, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the consumer re-attached");
    assert_eq!(next.as_deref(), Some("after"));
    shutdown.cancel();
    run.await.expect("join").expect("run ends cleanly");
    restarted.shutdown().await;
}

#[tokio::test]
async fn a_too_large_event_fails_only_its_own_call_in_a_shared_batch() {
    let (_server, client) = setup().await;
    client
        .admin()
        .create_topic(v1::CreateTopicRequest {
            name: "orders".into(),
            config: Some(v1::TopicConfig {
                max_event_bytes: 1024,
                ..Default::default()
            }),
        })
        .await
        .expect("create topic");
    let producer = client
        .producer::<OrderPlaced>()
        .linger(Duration::from_millis(50))
        .build();
    let calls = (0..20).map(|i| {
        let producer = producer.clone();
        let id = if i == 7 {
            "x".repeat(4096)
        } else {
            format!("o{i}")
        };
        async move { producer.publish(&order(&id)).await }
    });
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.iter().enumerate() {
        if i == 7 {
            let error = result.as_ref().expect_err("too large");
            assert_eq!(error.code(), ErrorCode::EventTooLarge);
        } else {
            result
                .as_ref()
                .expect("neighbours of the large event are stored");
        }
    }
    assert!(
        producer.stats().requests < 20,
        "calls were batched: {:?}",
        producer.stats()
    );
}

#[tokio::test]
async fn deleting_the_subscription_ends_run_instead_of_recreating_it() {
    let (_server, client) = setup().await;
    let consumer = client
        .consumer::<OrderPlaced>("doomed")
        .subscribe()
        .await
        .expect("subscribe");
    let run =
        tokio::spawn(consumer.run(|_e: Envelope<OrderPlaced>| async { Ok::<(), String>(()) }));
    client
        .admin()
        .delete_subscription(v1::DeleteSubscriptionRequest {
            topic: "orders".into(),
            name: "doomed".into(),
            force: true,
        })
        .await
        .expect("delete");
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run returns")
        .expect("join");
    let error = result.expect_err("the subscription is gone");
    assert_eq!(error.code(), ErrorCode::SubscriptionClosed, "{error:?}");
    let listed = client
        .admin()
        .list_subscriptions(v1::ListSubscriptionsRequest {
            topic: "orders".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.subscriptions.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn close_flushes_and_later_publishes_fail_as_closed() {
    let (_server, client) = setup().await;
    let producer = client
        .producer::<OrderPlaced>()
        .linger(Duration::from_millis(200))
        .build();
    let clone = producer.clone();
    let pending = tokio::spawn({
        let producer = producer.clone();
        async move { producer.publish(&order("queued")).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    producer.close().await;
    assert!(
        started.elapsed() < Duration::from_millis(190),
        "close flushed at once"
    );
    pending.await.expect("join").expect("queued event stored");
    let error = clone.publish(&order("late")).await.expect_err("closed");
    assert!(matches!(error, ClientError::Closed(_)), "{error:?}");
}
