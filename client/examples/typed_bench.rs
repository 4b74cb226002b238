//! Throughput of the typed client: `Producer<T>` with many concurrent
//! `publish` calls, `Producer<T>` with `publish_batch` calls of 100 events
//! from several tasks (the fair comparison with the raw PublishStream bench,
//! which sends batches of 100), and `Consumer<T>` draining a backlog with an
//! ack per event. Against a running server (release build for real figures):
//!
//! ```sh
//! cargo run --release -p herald-client --example typed_bench -- http://127.0.0.1:50051 10 1000000
//! ```
//! (endpoint, producer seconds, events for the consumer run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_client::prelude::*;

/// A 100-byte payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The payload bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

impl prost::Name for Sample {
    const NAME: &'static str = "Sample";
    const PACKAGE: &'static str = "herald.bench.v1";
}

impl Event for Sample {
    const TOPIC: &'static str = "typed-bench";
    const TYPE: &'static str = "herald.bench.sample";
    const SOURCE: &'static str = "/bench";
}

const PUBLISHERS: usize = 8192;

/// Tasks calling `publish_batch` in the batch section.
const BATCH_PUBLISHERS: usize = 64;

/// Events per `publish_batch` call.
const BATCH: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let backlog: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let client = Client::builder().endpoint(&endpoint).connect().await?;
    let sample = Sample { data: vec![7; 100] };

    // Producer<T>: many callers, one batching stream.
    let producer = client.producer::<Sample>().max_in_flight(16).build();
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (producer, sent, sample) = (producer.clone(), sent.clone(), sample.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                producer.publish(&sample).await.expect("publish");
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let published = sent.load(Ordering::Relaxed);
    let stats = producer.stats();
    println!(
        "producer: {published} events in {secs:.1} s = {:.0} events/s ({} requests, {:.0} events/request)",
        published as f64 / secs,
        stats.requests,
        stats.events as f64 / stats.requests.max(1) as f64
    );
    producer.close().await;

    // Producer<T>::publish_batch: batches of 100 from several tasks.
    let producer = client.producer::<Sample>().max_in_flight(16).build();
    let batch_sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..BATCH_PUBLISHERS {
        let (producer, sent) = (producer.clone(), batch_sent.clone());
        let batch = vec![sample.clone(); BATCH];
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                producer.publish_batch(&batch).await.expect("publish_batch");
                sent.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let batch_published = batch_sent.load(Ordering::Relaxed);
    let stats = producer.stats();
    println!(
        "producer publish_batch({BATCH}) x {BATCH_PUBLISHERS} tasks: {batch_published} events in {secs:.1} s = {:.0} events/s ({} requests, {:.0} events/request)",
        batch_published as f64 / secs,
        stats.requests,
        stats.events as f64 / stats.requests.max(1) as f64
    );
    producer.close().await;
    let published = published + batch_published;

    // Consumer<T>: drain `backlog` events from the start, ack per event.
    let to_read = backlog.min(published);
    let consumer = client
        .consumer::<Sample>(format!("drain-{}", uuid::Uuid::now_v7()))
        .subscription_type(SubscriptionType::Shared)
        .initial_position(Position::Earliest)
        .credits(5000)
        .subscribe()
        .await?;
    let seen = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let started = Instant::now();
    let (counter, stop) = (seen.clone(), done.clone());
    consumer
        .run_until(done.clone(), move |_event: Envelope<Sample>| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= to_read {
                stop.cancel();
            }
            async { Ok::<(), String>(()) }
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let read = seen.load(Ordering::Relaxed);
    println!(
        "consumer: {read} events in {secs:.1} s = {:.0} events/s (ack per event)",
        read as f64 / secs
    );
    Ok(())
}
