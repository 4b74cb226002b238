//! `herald bench subscribe`: consumers on Subscribe streams of a running
//! server, fed by an open-loop publisher (and/or a backlog published before
//! they attach), reporting delivered and acked events/s, the catch-up rate
//! of the backlog, and publish-to-deliver latency.
//!
//! Latency counts from the *intended* send time of each event's batch, which
//! the publisher writes into the first bytes of the event data (nanoseconds
//! after an instant of this process: publisher and consumers share its
//! monotonic clock), so a stalled broker cannot hide its stalls (no
//! coordinated omission). The broker's `publish_time` gives a second,
//! wall-clock figure (stored to received), valid because the bench and the
//! server run on one machine.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::{
    Ack, Attach, Credit, Event, Position, SubscribeRequest, SubscriptionType, position,
};
use herald_server::api::wire::subscribe_reply::Response as ServerMessage;
use herald_server::api::wire::{SubscribeReply, WireDelivered};
use herald_server::broker::{EncodedEvent, Fsync};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

use super::load::{self, LoadOptions, LoadOutcome};
use super::progress::{Progress, Tally};
use super::publish::{self, Batches};
use super::rss::{RssSampler, RssSummary};
use super::summary::{self, LatencySummary};

const SUBSCRIBE_PATH: &str = "/herald.v1.Subscriber/Subscribe";

/// Longest a backlog may take to publish.
const PREFILL_TIMEOUT: Duration = Duration::from_secs(3600);
/// After the publisher stops, how long consumers may take to receive the rest.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Longest a consumer waits for the server to end its stream after half-closing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending acks are sent at least this often.
const ACK_FLUSH_EVERY: Duration = Duration::from_millis(5);
/// How often `--server-pid`'s RSS is read.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// The `type` of backlog events; live events are `herald.bench`.
const PREFILL_TYPE: &str = "herald.bench.prefill";
/// Live event data starts with this, then the intended send time (u64 LE ns).
const STAMP_MAGIC: &[u8; 8] = b"hrldbnch";
const STAMP_LEN: usize = 16;

/// The subscription type, as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    Shared,
    Exclusive,
    Failover,
    #[value(name = "key_shared", alias = "key-shared")]
    KeyShared,
}

impl SubscriptionKind {
    fn proto(self) -> SubscriptionType {
        match self {
            SubscriptionKind::Shared => SubscriptionType::Shared,
            SubscriptionKind::Exclusive => SubscriptionType::Exclusive,
            SubscriptionKind::Failover => SubscriptionType::Failover,
            SubscriptionKind::KeyShared => SubscriptionType::KeyShared,
        }
    }
}

/// How fast the live publisher sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PublishRate {
    /// No live publisher (drain a `--prefill` backlog only).
    Off,
    /// Closed loop: a new batch as soon as the in-flight window has room.
    Max,
    /// Open loop at this many events/s.
    PerSec(f64),
}

impl std::str::FromStr for PublishRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(PublishRate::Max);
        }
        match s.parse::<f64>() {
            Ok(0.0) => Ok(PublishRate::Off),
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(PublishRate::PerSec(rate)),
            _ => Err(format!(
                "`{s}` is not a rate: give events/s (e.g. 10000), `max`, or 0 for no publisher"
            )),
        }
    }
}

impl std::fmt::Display for PublishRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishRate::Off => f.write_str("0"),
            PublishRate::Max => f.write_str("max"),
            PublishRate::PerSec(rate) => write!(f, "{rate}"),
        }
    }
}

/// JSON: a number of events/s, 0 for none, or `"max"`.
impl serde::Serialize for PublishRate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PublishRate::Off => serializer.serialize_f64(0.0),
            PublishRate::Max => serializer.serialize_str("max"),
            PublishRate::PerSec(rate) => serializer.serialize_f64(*rate),
        }
    }
}

/// What to run (and, in the report, what ran): the flags of `herald bench subscribe`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct SubscribeOptions {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Topic to publish to and subscribe on.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Subscription name (created on first attach, from the earliest event).
    #[arg(long, default_value = "bench")]
    pub subscription: String,
    /// Subscription type.
    #[arg(long = "type", value_enum, default_value = "shared")]
    pub kind: SubscriptionKind,
    /// Consumers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Credits per consumer; an acking consumer re-grants them as it acks,
    /// a quarter of them at a time.
    #[arg(long, default_value_t = 1000)]
    pub credits: u32,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub event_size: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Live publish rate: events/s in an open loop (latency counted from
    /// the intended send time), `max` for a closed loop as fast as the
    /// window allows, or 0 for no publisher (just drain the --prefill
    /// backlog).
    #[arg(long, default_value = "10000")]
    pub rate: PublishRate,
    /// Publisher connections, one PublishStream each (backlog and live).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Batches unanswered per publisher stream.
    #[arg(long, default_value_t = 32)]
    pub publish_in_flight: usize,
    /// How long to publish; with --rate 0, the longest wait for the backlog.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Events to publish before the consumers attach (a backlog to catch
    /// up), rounded up to whole batches.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Ack and re-grant credits; `--ack false` makes consumers that take
    /// their initial credits and then stall.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ack: bool,
    /// Create the topic first with this fsync policy: batch, interval or none
    /// (an existing topic is kept as is).
    #[arg(long)]
    pub create_topic_fsync: Option<Fsync>,
    /// Sample this process's resident memory (the server's) during the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// No progress output (set by --json).
    #[arg(skip)]
    #[serde(skip)]
    pub quiet: bool,
}

impl SubscribeOptions {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.consumers > 0, "consumers must be positive");
        anyhow::ensure!(self.credits > 0, "credits must be positive");
        anyhow::ensure!(self.batch_size > 0, "batch size must be positive");
        anyhow::ensure!(
            self.producers > 0 && self.publish_in_flight > 0,
            "producers and publish in-flight must be positive"
        );
        if let PublishRate::PerSec(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "rate must be a positive number of events/s, `max`, or 0 for none"
            );
        }
        anyhow::ensure!(
            self.kind != SubscriptionKind::Exclusive || self.consumers == 1,
            "an exclusive subscription takes one consumer"
        );
        Ok(())
    }

    fn publisher_load(&self, duration: Duration, rate: Option<f64>) -> LoadOptions {
        LoadOptions {
            endpoint: self.endpoint.clone(),
            connections: self.producers,
            in_flight: self.publish_in_flight,
            duration,
            rate: rate.map(|events| events / self.batch_size as f64),
            quiet: true,
        }
    }

    fn attach(&self, consumer: usize) -> SubscribeRequest {
        request(ClientMessage::Attach(Attach {
            topic: self.topic.clone(),
            subscription: self.subscription.clone(),
            r#type: self.kind.proto() as i32,
            consumer_name: format!("bench-{consumer}"),
            initial_position: Some(Position {
                kind: Some(position::Kind::Earliest(())),
            }),
            initial_credits: self.credits,
            ..Attach::default()
        }))
    }
}

fn request(message: ClientMessage) -> SubscribeRequest {
    SubscribeRequest {
        request: Some(message),
    }
}

/// Event data of `size` bytes starting with the magic and `at` as
/// nanoseconds after `base`; plain filler when `size` has no room for it.
pub(crate) fn stamped_data(size: usize, base: Instant, at: Instant) -> Bytes {
    if size < STAMP_LEN {
        return Bytes::from(vec![b'x'; size]);
    }
    let nanos = u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
    let mut data = BytesMut::with_capacity(size);
    data.put_slice(STAMP_MAGIC);
    data.put_u64_le(nanos);
    data.put_bytes(b'x', size - STAMP_LEN);
    data.freeze()
}

/// The instant stamped by [`stamped_data`] with the same `base`, if any.
pub(crate) fn read_stamp(data: &[u8], base: Instant) -> Option<Instant> {
    let (magic, rest) = data.split_first_chunk::<8>()?;
    let (nanos, _) = rest.split_first_chunk::<8>()?;
    (magic == STAMP_MAGIC).then(|| base + Duration::from_nanos(u64::from_le_bytes(*nanos)))
}

/// Ack handles received and not yet acked; sent (with as many new credits)
/// once a quarter of the credits is pending, or on a timer.
#[derive(Debug)]
pub(crate) struct PendingAcks {
    handles: Vec<String>,
    every: usize,
}

impl PendingAcks {
    pub(crate) fn new(credits: u32) -> Self {
        let every = (credits as usize / 4).max(1);
        Self {
            handles: Vec::with_capacity(every),
            every,
        }
    }

    /// Adds a handle; true when a batch is due.
    pub(crate) fn push(&mut self, handle: String) -> bool {
        self.handles.push(handle);
        self.handles.len() >= self.every
    }

    /// The Ack and Credit messages for everything pending (none if nothing is).
    pub(crate) fn take(&mut self) -> Option<(usize, [SubscribeRequest; 2])> {
        if self.handles.is_empty() {
            return None;
        }
        let handles = std::mem::replace(&mut self.handles, Vec::with_capacity(self.every));
        let n = handles.len();
        let ack = request(ClientMessage::Ack(Ack {
            ack_handles: handles,
            cumulative: false,
        }));
        let credit = request(ClientMessage::Credit(Credit {
            credits: u32::try_from(n).unwrap_or(u32::MAX),
        }));
        Some((n, [ack, credit]))
    }
}

/// Counters shared by the consumers and the run.
struct Shared {
    /// Stamps count from here.
    base: Instant,
    /// Delivered events (ok) and errors; feeds the progress bar.
    tally: Arc<Tally>,
    acks: AtomicU64,
    live: AtomicU64,
    backlog: AtomicU64,
    /// Backlog size; drained when `backlog` reaches it.
    prefill: u64,
    drained_at: OnceLock<Instant>,
    drained: Notify,
}

impl Shared {
    fn backlog_delivered(&self, n: u64) {
        if n == 0 {
            return;
        }
        let total = self.backlog.fetch_add(n, Ordering::Relaxed) + n;
        if self.prefill > 0 && total >= self.prefill && self.drained_at.set(Instant::now()).is_ok()
        {
            self.drained.notify_one();
        }
    }
}

/// Latencies measured by one consumer, µs.
struct ConsumerLatencies {
    /// Intended send → received.
    deliver: Histogram<u64>,
    /// Broker's publish_time → received (wall clock).
    stored: Histogram<u64>,
}

/// Opens a Subscribe stream on its own connection and waits for Attached.
async fn attach(
    endpoint: &str,
    first: SubscribeRequest,
) -> anyhow::Result<(mpsc::Sender<SubscribeRequest>, Streaming<SubscribeReply>)> {
    let channel: Channel = load::connect(endpoint).await?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(first).await?;
    let mut inbound =
        load::open_stream::<_, SubscribeReply>(channel, SUBSCRIBE_PATH, ReceiverStream::new(rx))
            .await?;
    loop {
        match inbound.message().await?.and_then(|m| m.response) {
            Some(ServerMessage::Attached(_)) => return Ok((tx, inbound)),
            Some(ServerMessage::Error(e)) => anyhow::bail!("attach failed: {}", e.message),
            Some(_) => continue,
            None => anyhow::bail!("stream ended before Attached"),
        }
    }
}

/// Receives, times and (with `ack`) acks deliveries until `stop`; then sends
/// the last acks, half-closes and waits for the server to end the stream.
async fn consume(
    tx: mpsc::Sender<SubscribeRequest>,
    mut inbound: Streaming<SubscribeReply>,
    mut pending: Option<PendingAcks>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> ConsumerLatencies {
    let mut latencies = ConsumerLatencies {
        deliver: summary::new_histogram(),
        stored: summary::new_histogram(),
    };
    let mut flush = tokio::time::interval(ACK_FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tally = &shared.tally;
    let send_acks = |pending: &mut Option<PendingAcks>| {
        let batch = pending.as_mut().and_then(PendingAcks::take);
        let (tx, shared) = (&tx, &shared);
        async move {
            let Some((n, messages)) = batch else {
                return true;
            };
            for message in messages {
                if tx.send(message).await.is_err() {
                    return false;
                }
            }
            shared.acks.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = flush.tick(), if pending.is_some() => {
                if !send_acks(&mut pending).await {
                    break;
                }
            }
            message = inbound.message() => match message.map(|m| m.and_then(|m| m.response)) {
                Ok(Some(ServerMessage::Events(batch))) => {
                    let due = received(&batch.events, &shared, &mut latencies, pending.as_mut());
                    if due && !send_acks(&mut pending).await {
                        break;
                    }
                }
                Ok(Some(ServerMessage::AckResult(result))) => {
                    let n = result.invalid_handles.len() + result.stale_handles.len();
                    tally.errors(n as u64, format_args!("{result:?}"));
                }
                Ok(Some(ServerMessage::Error(e))) => tally.errors(1, e.message),
                Ok(Some(_)) => {}
                Ok(None) => {
                    tally.errors(1, "the server ended a Subscribe stream");
                    break;
                }
                Err(status) => {
                    tally.errors(1, format_args!("Subscribe stream failed: {status}"));
                    break;
                }
            }
        }
    }
    send_acks(&mut pending).await;
    drop(tx);
    let close = async { while let Ok(Some(_)) = inbound.message().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    latencies
}

/// Counts and times one delivered batch, queueing its handles in `pending`;
/// true when acks are due.
fn received(
    events: &[WireDelivered],
    shared: &Shared,
    latencies: &mut ConsumerLatencies,
    mut pending: Option<&mut PendingAcks>,
) -> bool {
    let now = Instant::now();
    let wall = SystemTime::now();
    let (mut live, mut due) = (0u64, false);
    for delivered in events {
        let event = EncodedEvent::parse(delivered.event.clone()).ok();
        if event
            .as_ref()
            .is_some_and(|e| e.event_type() != PREFILL_TYPE)
        {
            live += 1;
            if let Some(sent) = event.and_then(|e| read_stamp(e.data(), shared.base)) {
                summary::record(&mut latencies.deliver, now.saturating_duration_since(sent));
            }
            if let Some(stored) = delivered
                .publish_time
                .and_then(|t| SystemTime::try_from(t).ok())
            {
                summary::record(
                    &mut latencies.stored,
                    wall.duration_since(stored).unwrap_or_default(),
                );
            }
        }
        if let Some(pending) = pending.as_deref_mut() {
            due |= pending.push(delivered.ack_handle.clone());
        }
    }
    shared.live.fetch_add(live, Ordering::Relaxed);
    shared.backlog_delivered(events.len() as u64 - live);
    shared.tally.oks(events.len() as u64);
    due
}

/// The backlog as published.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct PrefillReport {
    pub events: u64,
    pub publish_secs: f64,
    pub publish_events_per_sec: f64,
    /// First attach to the last backlog event received; `None` if not drained.
    pub catch_up_secs: Option<f64>,
    pub catch_up_events_per_sec: Option<f64>,
}

/// Publishes `batches` full batches of backlog events as fast as the
/// stream window allows.
async fn prefill(opts: &SubscribeOptions, batches: u64) -> anyhow::Result<LoadOutcome> {
    let events: Vec<Bytes> = (0..opts.batch_size)
        .map(|_| {
            publish::encode_event(&Event {
                r#type: PREFILL_TYPE.into(),
                ..publish::bench_event(opts.event_size)
            })
        })
        .collect();
    let left = AtomicU64::new(batches);
    let source: Batches = Arc::new(move |_| {
        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()
            .map(|_| events.clone())
    });
    let load = opts.publisher_load(PREFILL_TIMEOUT, None);
    let channels = load::connect_all(&load).await?;
    publish::drive_streams(&load, channels, &opts.topic, source, opts.batch_size).await
}

/// Live events stamped with their batch's intended send time.
fn live_batches(opts: &SubscribeOptions, base: Instant) -> Batches {
    let (size, count) = (opts.event_size, opts.batch_size);
    let template = publish::bench_event(0);
    Arc::new(move |origin| {
        let event = publish::encode_event(&Event {
            data: stamped_data(size, base, origin),
            ..template.clone()
        });
        Some(vec![event; count])
    })
}

/// The result of `bench subscribe`, as printed and as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SubscribeReport {
    /// The run's settings (`rate`: the open-loop target, events/s).
    #[serde(flatten)]
    pub options: SubscribeOptions,
    /// The measured window: publisher start to its end (or to the backlog
    /// drained, without a publisher).
    pub window_secs: f64,
    /// Live events the broker accepted.
    pub published: u64,
    pub published_per_sec: f64,
    /// Events received within the window (backlog and live).
    pub delivered: u64,
    pub delivered_per_sec: f64,
    /// Handles acked within the window.
    pub acks: u64,
    pub acks_per_sec: f64,
    /// Events received in all, including after the window.
    pub delivered_total: u64,
    /// Backlog and live events published but not received by the end.
    pub undelivered: u64,
    pub prefill: Option<PrefillReport>,
    /// Live events: intended send → received (no coordinated omission).
    pub latency: LatencySummary,
    /// Live events: the broker's publish_time → received (wall clock).
    pub stored_latency: LatencySummary,
    /// Live batches: intended send → the broker's publish answer.
    pub publish_latency: LatencySummary,
    /// Failed publishes, stream failures, invalid or stale acks.
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_rss: Option<RssSummary>,
}

/// First attach to drained, and the rate over it.
fn catch_up(
    events: u64,
    first_attach: Instant,
    drained: Option<Instant>,
) -> (Option<f64>, Option<f64>) {
    let Some(drained) = drained else {
        return (None, None);
    };
    let took = drained.saturating_duration_since(first_attach);
    (
        Some(took.as_secs_f64()),
        Some(summary::per_sec(events as f64, took)),
    )
}

/// Runs the benchmark.
pub(crate) async fn run(opts: SubscribeOptions) -> anyhow::Result<SubscribeReport> {
    opts.validate()?;
    if let Some(fsync) = opts.create_topic_fsync {
        let channel = load::connect(&opts.endpoint).await?;
        publish::create_topic(channel, &opts.topic, fsync, None).await?;
    }
    let rss = opts
        .server_pid
        .map(|pid| RssSampler::start(pid, RSS_EVERY))
        .transpose()?;
    let tally = Arc::new(Tally::default());

    let prefill_batches = opts.prefill.div_ceil(opts.batch_size as u64);
    let prefilled = if prefill_batches > 0 {
        let outcome = prefill(&opts, prefill_batches).await?;
        tally.errors(outcome.errors, outcome.first_error.as_deref().unwrap_or(""));
        let events = outcome.ok * opts.batch_size as u64;
        if !opts.quiet {
            eprintln!(
                "prefilled {events} events in {:.1}s ({:.0} events/s)",
                outcome.elapsed.as_secs_f64(),
                summary::per_sec(events as f64, outcome.elapsed)
            );
        }
        Some((events, outcome.elapsed))
    } else {
        None
    };

    let base = Instant::now();
    let shared = Arc::new(Shared {
        base,
        tally: tally.clone(),
        acks: AtomicU64::new(0),
        live: AtomicU64::new(0),
        backlog: AtomicU64::new(0),
        prefill: prefilled.map_or(0, |(events, _)| events),
        drained_at: OnceLock::new(),
        drained: Notify::new(),
    });
    let first_attach = Instant::now();
    let streams = futures::future::try_join_all(
        (0..opts.consumers).map(|i| attach(&opts.endpoint, opts.attach(i))),
    )
    .await?;
    let progress = Progress::start(opts.duration, opts.quiet, tally.clone(), 1, "delivered");
    let stop = CancellationToken::new();
    let consumers: Vec<_> = streams
        .into_iter()
        .map(|(tx, inbound)| {
            let pending = opts.ack.then(|| PendingAcks::new(opts.credits));
            tokio::spawn(consume(tx, inbound, pending, shared.clone(), stop.clone()))
        })
        .collect();

    let window_start = Instant::now();
    let counts = || (tally.ok_count(), shared.acks.load(Ordering::Relaxed));
    let at_start = counts();
    let live_rate = match opts.rate {
        PublishRate::Off => None,
        PublishRate::Max => Some(None),
        PublishRate::PerSec(rate) => Some(Some(rate)),
    };
    let publisher = live_rate.map(|rate| {
        let load = opts.publisher_load(opts.duration, rate);
        let (topic, batches, batch_size) = (
            opts.topic.clone(),
            live_batches(&opts, base),
            opts.batch_size,
        );
        tokio::spawn(async move {
            let channels = load::connect_all(&load).await?;
            publish::drive_streams(&load, channels, &topic, batches, batch_size).await
        })
    });
    let window_end = tokio::time::Instant::from_std(window_start + opts.duration);
    if publisher.is_none() && shared.prefill > 0 {
        let drained = shared.drained.notified();
        if shared.drained_at.get().is_none() {
            let _ = tokio::time::timeout_at(window_end, drained).await;
        }
    } else {
        tokio::time::sleep_until(window_end).await;
    }
    let window = window_start.elapsed();
    let at_end = counts();

    let published = match publisher {
        Some(task) => {
            let outcome = task.await??;
            tally.errors(outcome.errors, outcome.first_error.as_deref().unwrap_or(""));
            Some(outcome)
        }
        None => None,
    };
    let published_events = published
        .as_ref()
        .map_or(0, |o| o.ok * opts.batch_size as u64);
    if opts.ack {
        // Let the consumers receive what is still in flight, so late events
        // count in the latency tail.
        let expected_live = published_events;
        let all_in = tokio::time::Instant::now() + DRAIN_GRACE;
        while shared.live.load(Ordering::Relaxed) < expected_live
            && tokio::time::Instant::now() < all_in
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.cancel();
    let mut deliver = summary::new_histogram();
    let mut stored = summary::new_histogram();
    for consumer in consumers {
        let latencies = consumer.await?;
        deliver.add(&latencies.deliver)?;
        stored.add(&latencies.stored)?;
    }
    drop(progress);
    let server_rss = match rss {
        Some(sampler) => Some(sampler.finish().await?),
        None => None,
    };

    let delivered = at_end.0 - at_start.0;
    let acks = at_end.1 - at_start.1;
    let delivered_total = tally.ok_count();
    let prefill = prefilled.map(|(events, took)| {
        let (catch_up_secs, catch_up_events_per_sec) =
            catch_up(events, first_attach, shared.drained_at.get().copied());
        PrefillReport {
            events,
            publish_secs: took.as_secs_f64(),
            publish_events_per_sec: summary::per_sec(events as f64, took),
            catch_up_secs,
            catch_up_events_per_sec,
        }
    });
    Ok(SubscribeReport {
        window_secs: window.as_secs_f64(),
        published: published_events,
        published_per_sec: summary::per_sec(published_events as f64, window),
        delivered,
        delivered_per_sec: summary::per_sec(delivered as f64, window),
        acks,
        acks_per_sec: summary::per_sec(acks as f64, window),
        delivered_total,
        undelivered: (shared.prefill + published_events).saturating_sub(delivered_total),
        prefill,
        latency: LatencySummary::from_histogram(&deliver),
        stored_latency: LatencySummary::from_histogram(&stored),
        publish_latency: published
            .as_ref()
            .map(|o| LatencySummary::from_histogram(&o.latencies))
            .unwrap_or_default(),
        errors: tally.error_count(),
        first_error: tally.first_error(),
        server_rss,
        options: opts,
    })
}

impl std::fmt::Display for SubscribeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        let publisher = match o.rate {
            PublishRate::Off => "no publisher".to_owned(),
            PublishRate::Max => format!(
                "closed-loop publisher ({} x {} batches of {} in flight)",
                o.producers, o.publish_in_flight, o.batch_size
            ),
            PublishRate::PerSec(rate) => format!(
                "open-loop publisher at {rate:.0} events/s in batches of {}",
                o.batch_size
            ),
        };
        writeln!(
            f,
            "subscribe: {} {}/{} ({:?}), {} consumer(s) x {} credits, {}, {} B events, {}, {:.1}s window",
            o.endpoint,
            o.topic,
            o.subscription,
            o.kind,
            o.consumers,
            o.credits,
            if o.ack { "acking" } else { "never acking" },
            o.event_size,
            publisher,
            self.window_secs
        )?;
        writeln!(f, "{:<10} {:>12} {:>14}", "", "events", "events/s")?;
        for (label, n, rate) in [
            ("published", self.published, self.published_per_sec),
            ("delivered", self.delivered, self.delivered_per_sec),
            ("acked", self.acks, self.acks_per_sec),
        ] {
            writeln!(f, "{label:<10} {n:>12} {rate:>14.0}")?;
        }
        writeln!(
            f,
            "received in all {}, never received {}, errors {}",
            self.delivered_total, self.undelivered, self.errors
        )?;
        if let Some(p) = &self.prefill {
            write!(
                f,
                "backlog: {} events published in {:.1}s ({:.0}/s); ",
                p.events, p.publish_secs, p.publish_events_per_sec
            )?;
            match (p.catch_up_secs, p.catch_up_events_per_sec) {
                (Some(secs), Some(rate)) => {
                    writeln!(f, "caught up in {secs:.2}s: {rate:.0} events/s")?
                }
                _ => writeln!(f, "not drained")?,
            }
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "first error: {error}")?;
        }
        if let Some(rss) = &self.server_rss {
            writeln!(f, "{rss}")?;
        }
        for (title, latency) in [
            ("intended send -> received", &self.latency),
            (
                "publish_time -> received (wall clock)",
                &self.stored_latency,
            ),
            ("intended send -> publish answer", &self.publish_latency),
        ] {
            if latency.count > 0 {
                writeln!(f, "{title}:\n{latency}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::TestServer;

    #[test]
    fn stamps_round_trip_and_plain_data_has_none() {
        let base = Instant::now();
        let at = base + Duration::from_micros(1_234_567);
        let data = stamped_data(100, base, at);
        assert_eq!(data.len(), 100);
        assert_eq!(read_stamp(&data, base), Some(at));
        assert_eq!(&data[STAMP_LEN..], &[b'x'; 100 - STAMP_LEN][..]);
        assert_eq!(stamped_data(8, base, at).len(), 8);
        assert_eq!(read_stamp(&stamped_data(8, base, at), base), None);
        assert_eq!(read_stamp(&[b'x'; 100], base), None);
        assert_eq!(read_stamp(b"", base), None);
    }

    #[test]
    fn acks_go_out_in_quarters_of_the_credits_with_as_many_credits() {
        let mut pending = PendingAcks::new(8);
        assert!(pending.take().is_none());
        assert!(!pending.push("a".into()));
        assert!(pending.push("b".into()));
        let (n, [ack, credit]) = pending.take().unwrap();
        assert_eq!(n, 2);
        match (ack.request, credit.request) {
            (Some(ClientMessage::Ack(ack)), Some(ClientMessage::Credit(credit))) => {
                assert_eq!(ack.ack_handles, ["a", "b"]);
                assert!(!ack.cumulative);
                assert_eq!(credit.credits, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(pending.take().is_none());
        // One credit: ack every event.
        assert!(PendingAcks::new(1).push("x".into()));
    }

    #[test]
    fn catch_up_rate_from_first_attach() {
        let t = Instant::now();
        assert_eq!(catch_up(10, t, None), (None, None));
        let (secs, rate) = catch_up(1_000, t, Some(t + Duration::from_millis(500)));
        assert_eq!(secs, Some(0.5));
        assert_eq!(rate, Some(2_000.0));
    }

    fn options(endpoint: &str, topic: &str) -> SubscribeOptions {
        SubscribeOptions {
            endpoint: endpoint.to_owned(),
            topic: topic.into(),
            subscription: "bench".into(),
            kind: SubscriptionKind::Shared,
            consumers: 2,
            credits: 100,
            event_size: 50,
            batch_size: 10,
            rate: PublishRate::PerSec(5_000.0),
            producers: 2,
            publish_in_flight: 8,
            duration: Duration::from_millis(800),
            prefill: 2_000,
            ack: true,
            create_topic_fsync: Some(Fsync::None),
            server_pid: Some(std::process::id()),
            quiet: true,
        }
    }

    #[test]
    fn parses_rates() {
        assert_eq!("max".parse(), Ok(PublishRate::Max));
        assert_eq!("MAX".parse(), Ok(PublishRate::Max));
        assert_eq!("0".parse(), Ok(PublishRate::Off));
        assert_eq!("10000".parse(), Ok(PublishRate::PerSec(10_000.0)));
        assert_eq!("2.5e3".parse(), Ok(PublishRate::PerSec(2_500.0)));
        for bad in ["-5", "fast", "inf", "NaN", ""] {
            let err = bad.parse::<PublishRate>().unwrap_err();
            assert!(err.contains("`max`"), "{bad}: {err}");
        }
        assert_eq!(serde_json::to_string(&PublishRate::Max).unwrap(), "\"max\"");
        assert_eq!(
            serde_json::to_string(&PublishRate::PerSec(10.0)).unwrap(),
            "10.0"
        );
    }

    #[test]
    fn rejects_bad_options() {
        let ok = options("http://x", "t");
        assert!(ok.validate().is_ok());
        for bad in [
            SubscribeOptions {
                consumers: 0,
                ..ok.clone()
            },
            SubscribeOptions {
                credits: 0,
                ..ok.clone()
            },
            SubscribeOptions {
                rate: PublishRate::PerSec(-1.0),
                ..ok.clone()
            },
            SubscribeOptions {
                producers: 0,
                ..ok.clone()
            },
            SubscribeOptions {
                kind: SubscriptionKind::Exclusive,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    /// End to end against an in-process server: a backlog and a live
    /// publisher are delivered to two acking consumers; a consumer that
    /// never acks gets exactly its credits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribe_bench_against_in_process_server() {
        let server = TestServer::start().await;
        let endpoint = server.endpoint.clone();

        let report = run(options(&endpoint, "sub-smoke")).await.unwrap();
        assert_eq!(report.errors, 0, "{report}");
        assert!(report.published > 0, "{report}");
        assert_eq!(report.undelivered, 0, "{report}");
        assert_eq!(report.delivered_total, 2_000 + report.published, "{report}");
        assert!(report.acks > 0 && report.delivered > 0, "{report}");
        let prefill = report.prefill.unwrap();
        assert_eq!(prefill.events, 2_000);
        assert!(prefill.catch_up_events_per_sec.unwrap() > 0.0, "{report}");
        assert_eq!(report.latency.count, report.published, "{report}");
        assert_eq!(report.stored_latency.count, report.published, "{report}");
        assert!(report.server_rss.unwrap().max_bytes > 0);
        assert!(report.to_string().contains("caught up"), "{report}");

        let stalled = run(SubscribeOptions {
            consumers: 1,
            credits: 50,
            ack: false,
            prefill: 0,
            rate: PublishRate::PerSec(2_000.0),
            duration: Duration::from_millis(400),
            server_pid: None,
            ..options(&endpoint, "sub-stalled")
        })
        .await
        .unwrap();
        assert_eq!(stalled.errors, 0, "{stalled}");
        assert_eq!(stalled.acks, 0, "{stalled}");
        assert_eq!(stalled.delivered_total, 50, "{stalled}");
        assert!(stalled.published > 50, "{stalled}");

        let closed = run(SubscribeOptions {
            consumers: 1,
            prefill: 0,
            rate: PublishRate::Max,
            duration: Duration::from_millis(400),
            ..options(&endpoint, "sub-max")
        })
        .await
        .unwrap();
        assert_eq!(closed.errors, 0, "{closed}");
        assert!(closed.published > 0, "{closed}");
        assert_eq!(closed.undelivered, 0, "{closed}");
        assert_eq!(
            closed.publish_latency.count * 10,
            closed.published,
            "{closed}"
        );
        assert!(
            closed.to_string().contains("closed-loop publisher"),
            "{closed}"
        );
        let rss = closed.server_rss.unwrap();
        assert!(rss.cpu_secs > 0.0, "{closed}");

        server.stop().await;
    }
}
