//! `herald bench publish`: drives a running server's Publisher over gRPC,
//! pipelined on PublishStream (sequence numbers, several batches in flight)
//! or with concurrent unary Publish calls, and reports throughput and
//! publish-to-ack latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use herald::v1::admin_client::AdminClient;
use herald::v1::publisher_client::PublisherClient;
use herald::v1::{
    CreateTopicRequest, DeleteTopicRequest, ErrorDetail, Event, FsyncPolicy, GetTopicRequest,
    PublishRequest, TopicConfig,
};
use herald_server::api::wire::PublishStreamFrame;
use herald_server::broker::Fsync;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::load::{self, LoadOptions, LoadOutcome, LoadReport, Run};
use super::pacing::Pacer;
use super::progress::Tally;
use super::summary;

/// `herald.v1.PublishStreamResponse` with each result left undecoded: the
/// load generator only counts them, and decoding a `PublishResult` (an id
/// `String` each) would spend the shared cores on the client.
#[derive(Clone, PartialEq, prost::Message)]
struct PublishStreamAnswer {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    results: Vec<Bytes>,
    #[prost(message, optional, tag = "3")]
    error: Option<ErrorDetail>,
}

const PUBLISH_STREAM_PATH: &str = "/herald.v1.Publisher/PublishStream";

/// How long a stream may take to answer its outstanding batches after the run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which Publisher call to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishMode {
    /// One PublishStream per connection, `in_flight` batches outstanding.
    Stream,
    /// `in_flight` concurrent Publish callers per connection.
    Unary,
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct PublishOptions {
    pub load: LoadOptions,
    pub topic: String,
    /// Payload bytes per event.
    pub event_size: usize,
    /// Events per request.
    pub batch_size: usize,
    pub mode: PublishMode,
    /// Create the topic with this fsync policy first (an existing topic is kept).
    pub create_topic_fsync: Option<Fsync>,
    /// With `create_topic_fsync`: the new topic's dedup window (zero turns
    /// dedup off); the server's default when `None`.
    pub create_topic_dedup_window: Option<Duration>,
    /// Keep the topic at the end even when this run created it.
    pub keep: bool,
}

/// Publishes as configured and reports. `opts.load.rate` counts events per
/// second here (it is converted to batches per second for pacing).
pub(crate) async fn run(opts: PublishOptions) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(opts.batch_size > 0, "batch size must be positive");
    let mut load = opts.load.clone();
    load.rate = opts.load.rate.map(|events| events / opts.batch_size as f64);
    load.validate()?;
    let channels = load::connect_all(&load).await?;
    // A topic this run creates is deleted at the end (a long run leaves
    // hundreds of MiB behind); one that was there is the user's.
    let existed = topic_exists(channels[0].clone(), &opts.topic).await?;
    if let Some(fsync) = opts.create_topic_fsync {
        let dedup_window = opts.create_topic_dedup_window;
        create_topic(channels[0].clone(), &opts.topic, fsync, dedup_window).await?;
    }
    let events: Vec<Event> = (0..opts.batch_size)
        .map(|_| bench_event(opts.event_size))
        .collect();
    let (name, outcome) = match opts.mode {
        PublishMode::Unary => {
            let request = PublishRequest {
                topic: opts.topic.clone(),
                events,
            };
            let clients = channels.into_iter().map(PublisherClient::new).collect();
            let call = move |mut client: PublisherClient<Channel>| {
                let request = request.clone();
                async move { client.publish(request).await.map(drop) }
            };
            let outcome =
                load::drive_unary(&load, clients, call, opts.batch_size as u64, "events").await?;
            ("publish-unary", outcome)
        }
        PublishMode::Stream => {
            let encoded: Vec<Bytes> = events.iter().map(encode_event).collect();
            let batches: Batches = Arc::new(move |_| Some(encoded.clone()));
            (
                "publish-stream",
                drive_streams(&load, channels, &opts.topic, batches, opts.batch_size).await?,
            )
        }
    };
    if !existed && !opts.keep {
        let mut admin = AdminClient::new(load::connect_all(&load).await?.remove(0));
        let request = DeleteTopicRequest {
            name: opts.topic.clone(),
        };
        if let Err(status) = admin.delete_topic(request).await {
            tracing::warn!(topic = %opts.topic, %status, "could not delete the bench topic");
        }
    }
    Ok(LoadReport::new(
        name,
        &load,
        opts.batch_size,
        opts.event_size,
        &outcome,
    ))
}

/// Whether `topic` exists on the server.
async fn topic_exists(channel: Channel, topic: &str) -> anyhow::Result<bool> {
    let request = GetTopicRequest {
        name: topic.to_owned(),
    };
    match AdminClient::new(channel).get_topic(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(status) => Err(anyhow::anyhow!("cannot look up topic {topic}: {status}")),
    }
}

/// An event with `size` payload bytes; the broker assigns its id.
pub(super) fn bench_event(size: usize) -> Event {
    Event {
        source: "/herald/bench".into(),
        r#type: "herald.bench".into(),
        data: Bytes::from(vec![b'x'; size]),
        ..Event::default()
    }
}

/// Admin.CreateTopic with `fsync` (and `dedup_window`); an existing topic is fine.
pub(super) async fn create_topic(
    channel: Channel,
    topic: &str,
    fsync: Fsync,
    dedup_window: Option<Duration>,
) -> anyhow::Result<()> {
    let fsync_policy = match fsync {
        Fsync::Batch => FsyncPolicy::Batch,
        Fsync::Interval => FsyncPolicy::Interval,
        Fsync::None => FsyncPolicy::None,
    };
    let request = CreateTopicRequest {
        name: topic.to_owned(),
        config: Some(TopicConfig {
            fsync_policy: fsync_policy as i32,
            dedup_window: dedup_window.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
            ..TopicConfig::default()
        }),
    };
    match AdminClient::new(channel).create_topic(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            tracing::info!(%topic, "topic exists; its fsync policy is kept");
            Ok(())
        }
        Err(status) => Err(anyhow::anyhow!("cannot create topic {topic}: {status}")),
    }
}

/// An event as a producer sends it on PublishStream.
pub(super) fn encode_event(event: &Event) -> Bytes {
    event.encode_to_vec().into()
}

/// The events of the next batch of a stream, encoded (see
/// [`encode_event`]), given the instant its latency counts from (the
/// intended send time in an open loop); `None` ends the stream (e.g. a
/// fixed number of batches was sent). Events are encoded ahead, as a
/// producer library does on the caller's side, so the load generator spends
/// little of the cores it shares with the server.
pub(super) type Batches = Arc<dyn Fn(Instant) -> Option<Vec<Bytes>> + Send + Sync>;

/// One PublishStream per channel, each with up to `in_flight` batches
/// unanswered, sending what `batches` makes until it says stop or the run's
/// duration is over.
pub(super) async fn drive_streams(
    opts: &LoadOptions,
    channels: Vec<Channel>,
    topic: &str,
    batches: Batches,
    batch_size: usize,
) -> anyhow::Result<LoadOutcome> {
    let run = Run::start(opts, batch_size as u64, "events");
    let streams = channels
        .into_iter()
        .map(|channel| {
            tokio::spawn(one_stream(
                channel,
                topic.to_owned(),
                batches.clone(),
                opts.in_flight,
                run.pacer.clone(),
                run.deadline,
                run.tally.clone(),
            ))
        })
        .collect();
    run.finish(streams).await
}

/// Sends batches on one stream until the deadline, then half-closes and
/// waits for the outstanding answers. Failures are counted in `tally`.
async fn one_stream(
    channel: Channel,
    topic: String,
    batches: Batches,
    in_flight: usize,
    pacer: Arc<Pacer>,
    deadline: Instant,
    tally: Arc<Tally>,
) -> Histogram<u64> {
    let mut latencies = summary::new_histogram();
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let window = Arc::new(Semaphore::new(in_flight));
    let (tx, rx) = mpsc::channel::<PublishStreamFrame>(in_flight);

    let sender = {
        let (sent, window) = (sent.clone(), window.clone());
        tokio::spawn(async move {
            let mut sequence = 0u64;
            while let Some(slot) = pacer.next(deadline).await {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let origin = slot.origin();
                let Some(events) = batches(origin) else {
                    break;
                };
                let request = PublishStreamFrame {
                    sequence,
                    topic: topic.clone(),
                    events,
                };
                sent.lock().insert(sequence, origin);
                if tx.send(request).await.is_err() {
                    break;
                }
                sequence += 1;
            }
            // Dropping `tx` half-closes the stream; the server then answers
            // what is outstanding and ends it.
        })
    };

    let answers = async {
        let mut inbound = load::open_stream::<_, PublishStreamAnswer>(
            channel,
            PUBLISH_STREAM_PATH,
            ReceiverStream::new(rx),
        )
        .await?;
        while let Some(answer) = inbound.message().await? {
            let origin = sent.lock().remove(&answer.sequence);
            window.add_permits(1);
            match (answer.error, origin) {
                (Some(error), _) => tally.errors(
                    1,
                    format_args!(
                        "batch {}: {} {}",
                        answer.sequence, error.code, error.message
                    ),
                ),
                (None, Some(origin)) => {
                    summary::record(&mut latencies, origin.elapsed());
                    tally.ok();
                }
                (None, None) => tally.errors(
                    1,
                    format_args!("answer to unknown sequence {}", answer.sequence),
                ),
            }
        }
        Ok::<(), tonic::Status>(())
    };
    let drain_by = tokio::time::Instant::from_std(deadline) + DRAIN_TIMEOUT;
    match tokio::time::timeout_at(drain_by, answers).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => tally.errors(1, format_args!("stream failed: {status}")),
        Err(_) => tally.errors(1, "stream answers timed out"),
    }
    window.close();
    sender.abort();
    let _ = sender.await;
    let lost = sent.lock().len() as u64;
    tally.errors(lost, "batch unanswered when its stream ended");
    latencies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::TestServer;

    /// End to end against an in-process server: both modes publish for a
    /// short while and every batch is acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_bench_against_in_process_server() {
        let server = TestServer::start().await;
        let endpoint = server.endpoint.clone();

        for (mode, rate) in [
            (PublishMode::Stream, None),
            (PublishMode::Unary, None),
            (PublishMode::Stream, Some(20_000.0)),
        ] {
            let report = run(PublishOptions {
                load: LoadOptions {
                    endpoint: endpoint.clone(),
                    connections: 2,
                    in_flight: 4,
                    duration: Duration::from_millis(700),
                    rate,
                    quiet: true,
                },
                topic: "bench-smoke".into(),
                event_size: 50,
                batch_size: 10,
                mode,
                create_topic_fsync: Some(Fsync::None),
                create_topic_dedup_window: None,
                keep: false,
            })
            .await
            .unwrap();
            let left = topic_exists(
                load::connect_all(&LoadOptions {
                    endpoint: endpoint.clone(),
                    connections: 1,
                    in_flight: 1,
                    duration: Duration::ZERO,
                    rate: None,
                    quiet: true,
                })
                .await
                .unwrap()
                .remove(0),
                "bench-smoke",
            )
            .await
            .unwrap();
            assert!(!left, "{mode:?}: the run deletes the topic it created");
            assert_eq!(report.errors, 0, "{mode:?}: {report}");
            assert!(
                report.rpcs > 0 && report.events == report.rpcs * 10,
                "{report}"
            );
            assert_eq!(report.latency.count, report.rpcs);
            if rate.is_some() {
                // 20k events/s = 2k batches/s for 0.7 s, give or take the tail.
                assert!(report.rpcs <= 1_401, "{report}");
            }
        }
        server.stop().await;
    }
}
