//! [`Producer<T>`]: typed publishing, batched in a background task over one
//! `PublishStream`.
//!
//! Each call encodes its events once, on the caller's task, straight into
//! the wire form of `PublishStreamRequest.events` (see [`crate::wire`]); the
//! background task only concatenates those buffers. It gathers concurrent
//! calls into one request (until `max_batch` events or `linger` after the
//! first), numbers it, keeps at most `max_in_flight` requests unanswered and
//! splits each response's results back to the calls that made it up.
//!
//! The encoded buffers are kept until a call is answered, which buys two
//! things cheaply: when the broker refuses one event of a shared request
//! (too large, malformed) only the call that gave it fails and the others go
//! again; and when the stream breaks (server restart, network) every
//! unanswered request is sent again, in order, on a new stream once the
//! server is back — safe because every event carries its id and the broker
//! deduplicates ids, so an event stored before the break comes back as a
//! duplicate with its original offset instead of being stored twice.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use herald::v1::{self, PublishStreamResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::wire::{EncodedEvents, EventFields, PublishStreamCodec, WireRequest};
use crate::{Client, ClientError, Event, Receipt, ReconnectPolicy};

/// The answer to one `publish` or `publish_batch` call.
type Reply = oneshot::Sender<Result<Vec<Receipt>, ClientError>>;

/// What callers send the background task.
enum Command {
    /// Publish these events and answer on the oneshot.
    Publish(Call),
    /// Flush everything, wait for the answers, then answer and stop.
    Close(oneshot::Sender<()>),
}

/// One `publish`/`publish_batch` call, kept until it is answered.
struct Call {
    /// Its events, encoded.
    events: EncodedEvents,
    /// Where to answer.
    reply: Reply,
}

/// Producer settings: batching, in-flight limit and source. The
/// [`Client`] builder holds the defaults every producer starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSettings {
    /// How long the first event of a batch waits for company. Default 1 ms.
    pub linger: Duration,
    /// Most events in one request. Default 1000.
    pub max_batch: usize,
    /// Most requests sent and not yet answered. Default 8.
    pub max_in_flight: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            linger: Duration::from_millis(1),
            max_batch: 1000,
            max_in_flight: 8,
        }
    }
}

/// Builds a [`Producer`]: batching and in-flight limits, source, topic.
pub struct ProducerBuilder<T> {
    /// The connection.
    client: Client,
    /// Batching settings, from the client's defaults.
    settings: ProducerSettings,
    /// The CloudEvents source, if not `T::SOURCE`.
    source: Option<String>,
    /// The topic, if not `T::TOPIC`.
    topic: Option<String>,
    /// The event type produced.
    _event: PhantomData<fn(T)>,
}

impl<T: Event> ProducerBuilder<T> {
    pub(crate) fn new(client: Client) -> Self {
        ProducerBuilder {
            settings: client.producer_defaults().clone(),
            client,
            source: None,
            topic: None,
            _event: PhantomData,
        }
    }

    /// How long the first event of a batch waits for more. Default 1 ms;
    /// zero sends whatever has queued up at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.settings.linger = linger;
        self
    }

    /// Most events in one request (a single `publish_batch` larger than this
    /// still goes whole). Default 1000.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.settings.max_batch = max_batch.max(1);
        self
    }

    /// Most requests sent and not yet answered. Default 8.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.settings.max_in_flight = max_in_flight.max(1);
        self
    }

    /// The CloudEvents `source` to set instead of `T::SOURCE`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Publishes to `topic` instead of `T::TOPIC` (e.g. one topic per
    /// tenant or per test).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Starts the background task (needs a tokio runtime) and returns the
    /// producer.
    pub fn build(self) -> Producer<T> {
        let settings = self.settings;
        let (tx, rx) = mpsc::channel((settings.max_batch * 2).max(64));
        let stats = Arc::new(Counters::default());
        let topic = self.topic.unwrap_or_else(|| T::TOPIC.to_owned());
        let task = Batcher {
            client: self.client.clone(),
            topic: topic.clone(),
            settings,
            reconnect: self.client.reconnect_policy(),
            stats: stats.clone(),
        };
        tokio::spawn(task.run(rx));
        Producer {
            tx,
            stats,
            fixed: Arc::new(FixedFields {
                source: self.source.unwrap_or_else(|| T::SOURCE.to_owned()),
                schema: T::schema(),
                topic,
            }),
            request_timeout: self.client.request_timeout(),
            _event: PhantomData,
        }
    }
}

/// What is the same for every event of a producer.
struct FixedFields {
    /// CloudEvents source.
    source: String,
    /// `T::schema()`.
    schema: String,
    /// Where the events go.
    topic: String,
}

/// Per-publish additions to an event: extension attributes, subject, or an
/// id of the caller's choosing (for idempotent retries across restarts of
/// the producing program).
///
/// ```
/// use herald_client::PublishOptions;
/// let options = PublishOptions::default()
///     .attribute("tenant", "acme")
///     .subject("user/42");
/// assert_eq!(options.attributes.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Extension attributes, besides the trace context the producer adds.
    pub attributes: Vec<(String, String)>,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// The event id; default a new UUIDv7.
    pub id: Option<String>,
}

impl PublishOptions {
    /// Adds an extension attribute.
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets the CloudEvents `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the event id instead of a fresh UUIDv7.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// Publishes `T` events to `T::TOPIC` (or the builder's topic).
///
/// Each event gets a UUIDv7 `id`, `time` = now, `type` and `source` from
/// [`Event`], `data_content_type = "application/protobuf"`, `data_schema` =
/// the message's full name, `key` from [`Event::key`], and the current
/// OpenTelemetry trace context as W3C `traceparent`/`tracestate` attributes
/// (from the current `tracing` span when it is exported through
/// `tracing-opentelemetry`, else from the current OpenTelemetry context).
/// Concurrent `publish` calls are batched into one request. If the
/// connection breaks, unanswered events are sent again once the server is
/// back (within the request timeout); an event the broker had already
/// stored then comes back with [`Receipt::duplicate`] set and its original
/// offset. Cheap to clone; clones share the batching task. Dropping every
/// clone flushes what is queued; [`Producer::close`] also waits for the
/// answers.
///
/// ```no_run
/// # use herald_client::prelude::*;
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct UserSignedUp { #[prost(string, tag = "1")] pub user_id: String }
/// # impl prost::Name for UserSignedUp { const NAME: &'static str = "UserSignedUp"; const PACKAGE: &'static str = "acme"; }
/// # impl Event for UserSignedUp { const TOPIC: &'static str = "user.signup"; const TYPE: &'static str = "signed_up"; const SOURCE: &'static str = "/signup"; }
/// # async fn demo(client: Client) -> Result<(), ClientError> {
/// let producer = client
///     .producer::<UserSignedUp>()
///     .linger(std::time::Duration::from_millis(2))
///     .build();
/// let receipt = producer.publish(&UserSignedUp { user_id: "u1".into() }).await?;
/// println!("stored at {}:{}", receipt.partition, receipt.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
pub struct Producer<T> {
    /// To the batching task.
    tx: mpsc::Sender<Command>,
    /// Shared with the task.
    stats: Arc<Counters>,
    /// Fields every event shares.
    fixed: Arc<FixedFields>,
    /// Bound on each call.
    request_timeout: Duration,
    /// The event type produced.
    _event: PhantomData<fn(T)>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            fixed: self.fixed.clone(),
            request_timeout: self.request_timeout,
            _event: PhantomData,
        }
    }
}

/// What a producer has sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerStats {
    /// `PublishStream` requests sent (resends included).
    pub requests: u64,
    /// Events sent in them (resends included).
    pub events: u64,
    /// Times the stream broke and unanswered requests were sent again.
    pub resends: u64,
}

/// The task's counters behind [`ProducerStats`].
#[derive(Default)]
struct Counters {
    /// Requests sent.
    requests: AtomicU64,
    /// Events sent.
    events: AtomicU64,
    /// Stream breaks with requests to send again.
    resends: AtomicU64,
}

impl<T: Event> Producer<T> {
    /// Publishes one event; returns where it was stored once it is durable.
    ///
    /// Fails with [`ClientError::Rejected`] when the broker refuses the
    /// event (e.g. [`v1::ErrorCode::EventTooLarge`]), with
    /// [`ClientError::Timeout`] when no answer came within the client's
    /// request timeout (the server may be down; the event may or may not
    /// have been stored — publishing it again with the same id is safe).
    pub async fn publish(&self, event: &T) -> Result<Receipt, ClientError> {
        self.publish_with(event, &PublishOptions::default()).await
    }

    /// Publishes one event with extra attributes, a subject or an id.
    pub async fn publish_with(
        &self,
        event: &T,
        options: &PublishOptions,
    ) -> Result<Receipt, ClientError> {
        let mut encoded = EncodedEvents::with_capacity(event.encoded_len() + 160);
        let trace = herald::trace_context::current_trace_context();
        encoded.push(&self.fields(event, options, &trace), event);
        let mut receipts = self.send(encoded).await?;
        receipts.pop().ok_or_else(|| ClientError::Rejected {
            code: v1::ErrorCode::Unspecified,
            grpc_code: tonic::Code::Internal,
            message: "the broker returned no result for the event".into(),
        })
    }

    /// Publishes `events` in one request (stored whole or not at all per
    /// partition); returns their receipts in order.
    pub async fn publish_batch(&self, events: &[T]) -> Result<Vec<Receipt>, ClientError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let size: usize = events.iter().map(|e| e.encoded_len() + 160).sum();
        let mut encoded = EncodedEvents::with_capacity(size);
        let trace = herald::trace_context::current_trace_context();
        let options = PublishOptions::default();
        for event in events {
            encoded.push(&self.fields(event, &options, &trace), event);
        }
        self.send(encoded).await
    }

    /// Flushes everything queued, waits for the answers, and stops the
    /// background task. Later publishes (from clones) fail with
    /// [`ClientError::Closed`].
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The topic this producer publishes to.
    pub fn topic(&self) -> &str {
        &self.fixed.topic
    }

    /// Requests and events sent so far (shared by clones).
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            requests: self.stats.requests.load(Ordering::Relaxed),
            events: self.stats.events.load(Ordering::Relaxed),
            resends: self.stats.resends.load(Ordering::Relaxed),
        }
    }

    /// The envelope fields of `event`.
    fn fields<'a>(
        &'a self,
        event: &T,
        options: &'a PublishOptions,
        trace: &'a [(&'static str, String)],
    ) -> EventFields<'a> {
        EventFields {
            id: options.id.as_deref(),
            source: &self.fixed.source,
            event_type: T::TYPE,
            subject: options.subject.as_deref().unwrap_or(""),
            time: SystemTime::now(),
            data_schema: &self.fixed.schema,
            trace,
            attributes: &options.attributes,
            key: event.key(),
        }
    }

    async fn send(&self, events: EncodedEvents) -> Result<Vec<Receipt>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Publish(Call { events, reply }))
            .await
            .map_err(|_| ClientError::Closed("producer"))?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Err(_) => Err(ClientError::Timeout(self.request_timeout)),
            Ok(Err(_)) => Err(ClientError::Closed("producer task ended")),
            Ok(Ok(result)) => result,
        }
    }
}

/// The background task's settings.
struct Batcher {
    /// The connection.
    client: Client,
    /// Where every request goes.
    topic: String,
    /// Batching limits.
    settings: ProducerSettings,
    /// How long to wait before reopening a broken stream.
    reconnect: ReconnectPolicy,
    /// Shared with the producers.
    stats: Arc<Counters>,
}

/// An open `PublishStream`.
struct OpenStream {
    /// Requests to the server; dropping it half-closes.
    tx: mpsc::Sender<WireRequest>,
    /// Responses.
    rx: tonic::Streaming<PublishStreamResponse>,
}

/// The batching task's mutable state.
struct State {
    /// The open stream, if any.
    stream: Option<OpenStream>,
    /// Requests sent and not answered, by sequence (so resends keep order).
    in_flight: BTreeMap<u64, Vec<Call>>,
    /// Calls waiting to be sent, in order.
    queue: VecDeque<Call>,
    /// Events in `queue`.
    queued_events: usize,
    /// When the first queued call stops waiting for company.
    deadline: Option<Instant>,
    /// Sequence number of the next request.
    next_sequence: u64,
    /// Failed attempts to (re)open the stream in a row.
    reconnect_attempt: u32,
    /// No sending before this (the stream broke; backing off).
    retry_at: Option<Instant>,
}

impl State {
    fn push_back(&mut self, call: Call) {
        if self.queue.is_empty() {
            self.deadline = None;
        }
        self.queued_events += call.events.count();
        self.queue.push_back(call);
    }

    /// Puts `calls` (in order) ahead of everything queued.
    fn push_front(&mut self, calls: Vec<Call>) {
        for call in calls.into_iter().rev() {
            self.queued_events += call.events.count();
            self.queue.push_front(call);
        }
        self.deadline = Some(Instant::now());
    }

    /// The stream broke: every unanswered request goes back to the queue, in
    /// order, and sending waits for the reconnect delay.
    fn requeue_in_flight(&mut self, reconnect: &ReconnectPolicy, stats: &Counters) {
        self.stream = None;
        let calls: Vec<Call> = std::mem::take(&mut self.in_flight)
            .into_values()
            .flatten()
            .collect();
        if !calls.is_empty() {
            stats.resends.fetch_add(1, Ordering::Relaxed);
            self.push_front(calls);
        }
        self.back_off(reconnect);
    }

    fn back_off(&mut self, reconnect: &ReconnectPolicy) {
        self.retry_at = Some(Instant::now() + reconnect.delay(self.reconnect_attempt));
        self.reconnect_attempt = self.reconnect_attempt.saturating_add(1);
    }
}

/// Whether a stream that ended with `status` is worth reopening.
fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

impl Batcher {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut state = State {
            stream: None,
            in_flight: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_events: 0,
            deadline: None,
            next_sequence: 0,
            reconnect_attempt: 0,
            retry_at: None,
        };
        let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
        let mut input_open = true;
        let max_batch = self.settings.max_batch;

        loop {
            if !input_open && state.queue.is_empty() && state.in_flight.is_empty() {
                break;
            }
            let now = Instant::now();
            if state.retry_at.is_some_and(|t| t <= now) {
                state.retry_at = None;
            }
            let can_send = state.retry_at.is_none()
                && state.in_flight.len() < self.settings.max_in_flight
                && !state.queue.is_empty();
            if can_send && state.deadline.is_none() {
                state.deadline = Some(now + self.settings.linger);
            }
            let due = can_send
                && (state.queued_events >= max_batch
                    || !input_open
                    || state.deadline.is_some_and(|d| d <= now));
            if due {
                self.send_batch(&mut state).await;
                continue;
            }
            let wake_at = if can_send {
                state.deadline
            } else {
                state.retry_at
            };
            tokio::select! {
                response = next_response(&mut state.stream) => {
                    match response {
                        Ok(Some(response)) => {
                            state.reconnect_attempt = 0;
                            let retry = answer(&mut state.in_flight, response);
                            if !retry.is_empty() {
                                state.push_front(retry);
                            }
                        }
                        Ok(None) => state.requeue_in_flight(&self.reconnect, &self.stats),
                        Err(status) if is_retryable(&status) => {
                            tracing::debug!(%status, "publish stream broke; sending unanswered events again");
                            state.requeue_in_flight(&self.reconnect, &self.stats);
                        }
                        Err(status) => {
                            state.stream = None;
                            let error = ClientError::Status(status);
                            for (_, calls) in std::mem::take(&mut state.in_flight) {
                                fail(calls, &error);
                            }
                        }
                    }
                }
                _ = sleep_until(wake_at) => {}
                command = rx.recv(), if input_open && state.queued_events < max_batch => {
                    let mut next = command;
                    // Take whatever else is already waiting, without a
                    // select round per call.
                    loop {
                        match next {
                            Some(Command::Publish(call)) => state.push_back(call),
                            Some(Command::Close(done)) => {
                                closing.push(done);
                                rx.close();
                            }
                            None => {
                                input_open = false;
                                break;
                            }
                        }
                        if state.queued_events >= max_batch {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(command) => next = Some(command),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                        }
                    }
                }
            }
        }
        // Half-close and let the server end the stream.
        drop(state.stream);
        for done in closing {
            let _ = done.send(());
        }
    }

    /// Takes up to `max_batch` events (at least one call) off the queue and
    /// sends them; on a failure to open the stream, backs off and requeues
    /// them (or fails them when retrying cannot help).
    async fn send_batch(&self, state: &mut State) {
        let mut calls = Vec::new();
        let mut events = 0usize;
        while let Some(call) = state.queue.front() {
            let count = call.events.count();
            if !calls.is_empty() && events + count > self.settings.max_batch {
                break;
            }
            let call = state.queue.pop_front().expect("front exists");
            state.queued_events -= count;
            // A caller that gave up (timed out, dropped) is not sent again.
            if call.reply.is_closed() {
                continue;
            }
            events += count;
            calls.push(call);
        }
        state.deadline = None;
        if calls.is_empty() {
            return;
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let request = WireRequest::new(
            sequence,
            &self.topic,
            calls.iter_mut().map(|c| c.events.bytes()).collect(),
        );
        match self.send(&mut state.stream, request).await {
            Ok(()) => {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(events as u64, Ordering::Relaxed);
                state.in_flight.insert(sequence, calls);
            }
            Err(status) if is_retryable(&status) => {
                tracing::debug!(%status, "cannot open the publish stream; retrying");
                // What was in flight on a stream that just closed goes first.
                state.push_front(calls);
                state.requeue_in_flight(&self.reconnect, &self.stats);
            }
            Err(status) => fail(calls, &ClientError::Status(status)),
        }
    }

    /// Sends `request`, opening the stream first if there is none.
    async fn send(
        &self,
        stream: &mut Option<OpenStream>,
        request: WireRequest,
    ) -> Result<(), tonic::Status> {
        if let Some(open) = stream {
            return match open.tx.send(request).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    *stream = None;
                    Err(tonic::Status::unavailable("the publish stream closed"))
                }
            };
        }
        let (tx, rx) = mpsc::channel(self.settings.max_in_flight + 1);
        tx.send(request)
            .await
            .map_err(|_| tonic::Status::unavailable("the publish stream closed"))?;
        let response = PublishStreamCodec::open(&self.client, ReceiverStream::new(rx)).await?;
        *stream = Some(OpenStream { tx, rx: response });
        Ok(())
    }
}

/// The next response of the open stream; pending forever without one.
async fn next_response(
    stream: &mut Option<OpenStream>,
) -> Result<Option<PublishStreamResponse>, tonic::Status> {
    match stream {
        Some(open) => open.rx.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Splits a response back to the calls of its request. When the broker
/// refused one event of a request shared by several calls, only the call
/// that gave it fails; the others are returned to be sent again.
fn answer(in_flight: &mut BTreeMap<u64, Vec<Call>>, response: PublishStreamResponse) -> Vec<Call> {
    let Some(calls) = in_flight.remove(&response.sequence) else {
        tracing::warn!(
            sequence = response.sequence,
            "publish response for an unknown request"
        );
        return Vec::new();
    };
    if let Some(detail) = response.error {
        let culprit = culprit(&detail, &calls);
        let error = ClientError::rejected(detail);
        let Some(culprit) = culprit else {
            fail(calls, &error);
            return Vec::new();
        };
        let mut retry = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            if i == culprit {
                let _ = call.reply.send(Err(error.duplicate()));
            } else {
                retry.push(call);
            }
        }
        return retry;
    }
    let mut results = response.results.into_iter();
    for call in calls {
        let receipts: Vec<Receipt> = results
            .by_ref()
            .take(call.events.count())
            .map(Receipt::from)
            .collect();
        let _ = call.reply.send(Ok(receipts));
    }
    Vec::new()
}

/// Which call of a shared request gave the one event the broker refused
/// (named by the `index` in the error's metadata), if that is known.
fn culprit(detail: &v1::ErrorDetail, calls: &[Call]) -> Option<usize> {
    if calls.len() < 2 {
        return None;
    }
    let code = v1::ErrorCode::try_from(detail.code).ok()?;
    if !matches!(
        code,
        v1::ErrorCode::EventTooLarge | v1::ErrorCode::InvalidEvent
    ) {
        return None;
    }
    let index: usize = detail.metadata.get("index")?.parse().ok()?;
    let mut end = 0;
    calls.iter().position(|call| {
        end += call.events.count();
        index < end
    })
}

fn fail(calls: Vec<Call>, error: &ClientError) {
    for call in calls {
        let _ = call.reply.send(Err(error.duplicate()));
    }
}
