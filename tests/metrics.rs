//! Metrics and `herald stats` against a real `herald` process: a scripted
//! scenario, then `/metrics` (parsed as Prometheus text) and the stats
//! tables must show exactly its counts.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Herald, herald_bin};
use futures::StreamExt;
use herald_client::prelude::*;
use prometheus_parse::{Scrape, Value};

#[derive(Clone, PartialEq, prost::Message)]
struct OrderPlaced {
    #[prost(string, tag = "1")]
    order_id: String,
}

impl prost::Name for OrderPlaced {
    const NAME: &'static str = "OrderPlaced";
    const PACKAGE: &'static str = "test.v1";
}

impl Event for OrderPlaced {
    const TOPIC: &'static str = "orders";
    const TYPE: &'static str = "com.example.order.placed";
    const SOURCE: &'static str = "/tests/metrics";
    fn key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

/// The `/metrics` address the server logged (it was started on port 0).
fn metrics_addr(server: &Herald) -> String {
    let logs = server.logs();
    let rest = logs
        .split("metrics on http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address in the logs:\n{logs}"));
    rest.split("/metrics").next().unwrap().to_owned()
}

/// GET /metrics over plain HTTP/1.0, parsed as Prometheus text.
fn scrape(addr: &str) -> Scrape {
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: herald\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of the sample `metric` with exactly these labels.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

const SUB: [(&str, &str); 2] = [("topic", "orders"), ("subscription", "billing")];

/// The scenario: 60 events are published and all consumed (shared
/// subscription, max 2 delivery attempts): events 0-9 are nacked on their
/// first delivery; on their redelivery 5-9 are acked and 0-4 nacked again,
/// which dead-letters them; 10-59 are acked at once. Then 40 more are
/// published and the consumer (10 credits) holds 10 of them unacked.
/// Publishing in two steps keeps the held events from using the credits the
/// redeliveries need, so every count is exact:
/// delivered 60 + 10 + 10 = 80, redelivered 10, nacked 10 + 5 = 15,
/// acked 50 + 5 = 55, dead-lettered 5, backlog 100 - 55 - 5 = 40,
/// unacked 10, consumers 1.
#[tokio::test]
async fn scripted_scenario_shows_exact_counts_in_metrics_and_stats() {
    let (server, _dir) = Herald::start(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let client = server.client().await;
    let producer = client.producer::<OrderPlaced>().build();
    let publish = |range: std::ops::Range<usize>| {
        let producer = producer.clone();
        async move {
            let sends = range.map(|i| {
                let producer = producer.clone();
                async move {
                    producer
                        .publish(&OrderPlaced {
                            order_id: format!("o{i}"),
                        })
                        .await
                        .expect("publish")
                }
            });
            futures::future::join_all(sends).await;
        }
    };
    let consumer = client
        .consumer::<OrderPlaced>("billing")
        .subscription_type(SubscriptionType::Shared)
        .initial_position(Position::Earliest)
        .credits(10)
        .redelivery(Redelivery {
            min_backoff: Some(Duration::from_millis(10)),
            max_backoff: Some(Duration::from_millis(20)),
            max_delivery_attempts: 2,
            ..Redelivery::default()
        })
        .subscribe()
        .await
        .expect("subscribe");
    publish(0..60).await;

    let mut stream = Box::pin(consumer.stream());
    let mut seen: HashMap<String, u32> = HashMap::new();
    let (mut first, mut again) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while first < 60 || again < 10 {
        let event = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("stuck after {first} first and {again} redeliveries"))
            .expect("stream open")
            .expect("delivery");
        let n: usize = event.value.order_id[1..].parse().unwrap();
        *seen.entry(event.value.order_id.clone()).or_default() += 1;
        match event.delivery_attempt {
            1 => {
                first += 1;
                if n < 10 {
                    event.nack(None, "not yet");
                } else {
                    event.ack();
                }
            }
            _ => {
                again += 1;
                if n < 5 {
                    event.nack(None, "poison");
                } else {
                    event.ack();
                }
            }
        }
    }
    assert_eq!(seen.len(), 60);

    publish(60..100).await;
    let mut held = Vec::new();
    while held.len() < 10 {
        let event = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("the late events arrive")
            .unwrap()
            .unwrap();
        assert_eq!(event.delivery_attempt, 1);
        held.push(event);
    }

    // Dead-lettering publishes asynchronously: wait for it, then compare
    // every count at once.
    let scrape = loop {
        let scrape = scrape(&metrics);
        if value(&scrape, "herald_subscription_dead_lettered_total", &SUB) == Some(5.0)
            && value(&scrape, "herald_subscription_acked_total", &SUB) == Some(55.0)
        {
            break scrape;
        }
        assert!(Instant::now() < deadline, "dead letters never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let topic = [("topic", "orders")];
    let expected = [
        ("herald_published_events_total", &topic[..], 100.0),
        ("herald_topic_stored_events", &topic[..], 100.0),
        ("herald_subscription_delivered_total", &SUB[..], 80.0),
        ("herald_subscription_redelivered_total", &SUB[..], 10.0),
        ("herald_subscription_nacked_total", &SUB[..], 15.0),
        ("herald_subscription_acked_total", &SUB[..], 55.0),
        ("herald_subscription_dead_lettered_total", &SUB[..], 5.0),
        ("herald_subscription_backlog_events", &SUB[..], 40.0),
        ("herald_subscription_unacked_events", &SUB[..], 10.0),
        ("herald_subscription_consumers", &SUB[..], 1.0),
        // The dead letters are events of their own topic.
        (
            "herald_published_events_total",
            &[("topic", "orders.billing.dlq")][..],
            5.0,
        ),
        (
            "herald_grpc_streams_open",
            &[("stream", "subscribe")][..],
            1.0,
        ),
    ];
    for (metric, labels, want) in expected {
        assert_eq!(
            value(&scrape, metric, labels),
            Some(want),
            "{metric} {labels:?}"
        );
    }
    let positive = [
        ("herald_published_bytes_total", &topic[..]),
        ("herald_topic_storage_bytes", &topic[..]),
        ("herald_topic_storage_segments", &topic[..]),
        ("herald_subscription_backlog_bytes", &SUB[..]),
        ("herald_subscription_oldest_unacked_age_seconds", &SUB[..]),
        ("herald_publish_duration_seconds", &topic[..]),
        ("herald_fsync_duration_seconds", &[][..]),
        ("herald_grpc_connections_open", &[][..]),
    ];
    for (metric, labels) in positive {
        let v = value(&scrape, metric, labels);
        assert!(v.is_some_and(|v| v > 0.0), "{metric} {labels:?}: {v:?}");
    }
    // No series carries an event id or a consumer name.
    for sample in &scrape.samples {
        for key in sample.labels.keys() {
            assert!(
                ["topic", "subscription", "stream", "le"].contains(&key.as_str()),
                "unexpected label {key} on {}",
                sample.metric
            );
        }
    }

    // `herald stats` reads the same state through the Admin API.
    let output = tokio::process::Command::new(herald_bin())
        .args(["stats", "--interval", "200ms", "--endpoint"])
        // host:port, without a scheme, is an endpoint like any other.
        .arg(&server.addr)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let topic_row = rows
        .iter()
        .find(|r| r.first() == Some(&"orders") && r.len() == 6)
        .unwrap_or_else(|| panic!("no topic row:\n{text}"));
    assert_eq!(&topic_row[1..3], ["1", "100"], "{text}");
    let sub_row = rows
        .iter()
        .find(|r| r.get(1) == Some(&"billing"))
        .unwrap_or_else(|| panic!("no subscription row:\n{text}"));
    // TOPIC SUBSCRIPTION TYPE CONSUMERS BACKLOG UNACKED LAG REDELIVERED DLQ
    assert_eq!(sub_row[2..6], ["shared", "1", "40", "10"], "{text}");
    assert_eq!(sub_row[7..], ["10", "5"], "{text}");
    drop(held);
}

#[tokio::test]
async fn stats_says_when_no_server_is_there() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::process::Command::new(herald_bin())
        .args(["stats", "--endpoint", &format!("http://127.0.0.1:{port}")])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach a Herald server at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    // Said once, with its real cause once, and no colour codes in a pipe.
    assert_eq!(stderr.matches("cannot reach").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("tcp connect error").count(), 1, "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}
