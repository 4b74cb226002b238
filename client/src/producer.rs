//! [`Producer<T>`]: typed publishing, batched in a background task over one
//! `PublishStream`.
//!
//! Callers hand events to the task through a channel with a oneshot for the
//! answer. The task gathers concurrent calls into one request (until
//! `max_batch` events or `linger` after the first), numbers it, keeps at most
//! `max_in_flight` requests unanswered, and splits each response's results
//! back to the calls that made up the request. When the broker refuses one
//! event of a shared request (too large, malformed), only the call that gave
//! it fails; the other calls are sent again. A broken stream fails the
//! requests in flight and is reopened for the next batch.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use herald::v1::{self, PublishStreamRequest, PublishStreamResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::event::{CONTENT_TYPE_PROTOBUF, to_timestamp};
use crate::{Client, ClientError, Event, Receipt};

/// The answer to one `publish` or `publish_batch` call.
type Reply = oneshot::Sender<Result<Vec<Receipt>, ClientError>>;

/// What callers send the background task.
enum Command {
    /// Publish these events and answer on the oneshot.
    Publish(Vec<v1::Event>, Reply),
    /// Flush everything, wait for the answers, then answer and stop.
    Close(oneshot::Sender<()>),
}

/// Builds a [`Producer`]: batching and in-flight limits.
pub struct ProducerBuilder<T> {
    /// The connection.
    client: Client,
    /// How long the first event of a batch waits for company.
    linger: Duration,
    /// Most events in one request.
    max_batch: usize,
    /// Most requests sent and not yet answered.
    max_in_flight: usize,
    /// The CloudEvents source, if not `T::SOURCE`.
    source: Option<String>,
    /// The event type produced.
    _event: PhantomData<fn(T)>,
}

impl<T: Event> ProducerBuilder<T> {
    pub(crate) fn new(client: Client) -> Self {
        ProducerBuilder {
            client,
            linger: Duration::from_millis(1),
            max_batch: 1000,
            max_in_flight: 8,
            source: None,
            _event: PhantomData,
        }
    }

    /// How long the first event of a batch waits for more. Default 1 ms;
    /// zero sends whatever has queued up at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most events in one request (a single `publish_batch` larger than this
    /// still goes whole). Default 1000.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Most requests sent and not yet answered. Default 8.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// The CloudEvents `source` to set instead of `T::SOURCE`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Starts the background task (needs a tokio runtime) and returns the
    /// producer.
    pub fn build(self) -> Producer<T> {
        let (tx, rx) = mpsc::channel((self.max_batch * 2).max(64));
        let stats = Arc::new(Counters::default());
        let task = Batcher {
            publisher: self.client.publisher(),
            topic: T::TOPIC.to_owned(),
            linger: self.linger,
            max_batch: self.max_batch,
            max_in_flight: self.max_in_flight,
            stats: stats.clone(),
        };
        tokio::spawn(task.run(rx));
        Producer {
            tx,
            stats,
            source: self.source.unwrap_or_else(|| T::SOURCE.to_owned()),
            schema: T::schema(),
            request_timeout: self.client.request_timeout(),
            _event: PhantomData,
        }
    }
}

/// Publishes `T` events to `T::TOPIC`.
///
/// Each event gets a UUIDv7 `id`, `time` = now, `type` and `source` from
/// [`Event`], `data_content_type = "application/protobuf"`, `data_schema` =
/// the message's full name and `key` from [`Event::key`]. Concurrent
/// `publish` calls are batched into one request. Cheap to clone; clones share
/// the batching task. Dropping every clone flushes what is queued;
/// [`Producer::close`] also waits for the answers.
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
    /// CloudEvents source set on every event.
    source: String,
    /// `T::schema()`, computed once.
    schema: String,
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
            source: self.source.clone(),
            schema: self.schema.clone(),
            request_timeout: self.request_timeout,
            _event: PhantomData,
        }
    }
}

/// What a producer has sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerStats {
    /// `PublishStream` requests sent.
    pub requests: u64,
    /// Events sent in them.
    pub events: u64,
}

/// The task's counters behind [`ProducerStats`].
#[derive(Default)]
struct Counters {
    /// Requests sent.
    requests: AtomicU64,
    /// Events sent.
    events: AtomicU64,
}

impl<T: Event> Producer<T> {
    /// Publishes one event; returns where it was stored once it is durable.
    ///
    /// Fails with [`ClientError::Rejected`] when the broker refuses the
    /// batch it went in (e.g. [`v1::ErrorCode::EventTooLarge`]).
    pub async fn publish(&self, event: &T) -> Result<Receipt, ClientError> {
        let mut receipts = self.send(vec![self.envelope(event)]).await?;
        receipts.pop().ok_or_else(|| ClientError::Rejected {
            code: v1::ErrorCode::Unspecified,
            message: "the broker returned no result for the event".into(),
        })
    }

    /// Publishes `events` in one request (stored whole or not at all per
    /// partition); returns their receipts in order.
    pub async fn publish_batch(&self, events: &[T]) -> Result<Vec<Receipt>, ClientError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.send(events.iter().map(|e| self.envelope(e)).collect())
            .await
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

    /// Requests and events sent so far (shared by clones).
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            requests: self.stats.requests.load(Ordering::Relaxed),
            events: self.stats.events.load(Ordering::Relaxed),
        }
    }

    /// The wire envelope of `event`.
    fn envelope(&self, event: &T) -> v1::Event {
        v1::Event {
            id: {
                let mut buf = uuid::Uuid::encode_buffer();
                uuid::Uuid::now_v7()
                    .hyphenated()
                    .encode_lower(&mut buf)
                    .to_owned()
            },
            source: self.source.clone(),
            r#type: T::TYPE.to_owned(),
            subject: String::new(),
            time: Some(to_timestamp(SystemTime::now())),
            data_content_type: CONTENT_TYPE_PROTOBUF.to_owned(),
            data_schema: self.schema.clone(),
            attributes: Default::default(),
            key: event.key().unwrap_or_default(),
            data: prost::Message::encode_to_vec(event).into(),
        }
    }

    async fn send(&self, events: Vec<v1::Event>) -> Result<Vec<Receipt>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Publish(events, reply))
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
    /// Stub on the client's channel.
    publisher: v1::publisher_client::PublisherClient<tonic::transport::Channel>,
    /// Where every request goes.
    topic: String,
    /// Wait after the first queued event.
    linger: Duration,
    /// Most events per request.
    max_batch: usize,
    /// Most unanswered requests.
    max_in_flight: usize,
    /// Shared with the producers.
    stats: Arc<Counters>,
}

/// An open `PublishStream`.
struct OpenStream {
    /// Requests to the server; dropping it half-closes.
    tx: mpsc::Sender<PublishStreamRequest>,
    /// Responses.
    rx: tonic::Streaming<PublishStreamResponse>,
}

/// One call's share of a request.
struct Caller {
    /// How many of the request's events are this call's.
    count: usize,
    /// Where to answer.
    reply: Reply,
    /// A copy of the events when the request is shared with other calls, so
    /// they can be sent again without the one the broker refused: this
    /// call's byte range in the request's [`Backup`] (length-delimited
    /// encodings; one buffer per request instead of a deep clone per event).
    backup: Option<(Arc<Vec<u8>>, std::ops::Range<usize>)>,
}

impl Caller {
    /// The events to send again, decoded from the backup.
    fn events_again(&self) -> Option<Vec<v1::Event>> {
        let (buf, range) = self.backup.as_ref()?;
        let mut bytes = &buf[range.clone()];
        let mut events = Vec::with_capacity(self.count);
        while !bytes.is_empty() {
            events.push(prost::Message::decode_length_delimited(&mut bytes).ok()?);
        }
        Some(events)
    }
}

/// The calls making up one request, in order.
type Callers = Vec<Caller>;

/// Calls waiting to be sent, in order.
type Queue = VecDeque<(Vec<v1::Event>, Reply)>;

impl Batcher {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut stream: Option<OpenStream> = None;
        let mut in_flight: HashMap<u64, Callers> = HashMap::new();
        let mut queue: Queue = VecDeque::new();
        let mut queued_events = 0usize;
        let mut deadline: Option<Instant> = None;
        let mut next_sequence = 0u64;
        let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
        let mut input_open = true;

        loop {
            if !input_open && queue.is_empty() && in_flight.is_empty() {
                break;
            }
            let can_send = in_flight.len() < self.max_in_flight && !queue.is_empty();
            let due = can_send
                && (queued_events >= self.max_batch
                    || !input_open
                    || deadline.is_some_and(|d| d <= Instant::now()));
            if due {
                let (sequence, request, callers) =
                    self.take_batch(&mut queue, &mut queued_events, &mut next_sequence);
                deadline = (!queue.is_empty()).then(|| Instant::now() + self.linger);
                match self.send(&mut stream, request).await {
                    Ok(()) => {
                        in_flight.insert(sequence, callers);
                    }
                    Err(error) => fail(callers, &error),
                }
                continue;
            }
            let wait_until = deadline.filter(|_| can_send);
            tokio::select! {
                response = next_response(&mut stream) => {
                    match response {
                        Ok(Some(response)) => {
                            let retry = answer(&mut in_flight, response);
                            if !retry.is_empty() {
                                if queue.is_empty() {
                                    deadline = Some(Instant::now());
                                }
                                for (events, reply) in retry.into_iter().rev() {
                                    queued_events += events.len();
                                    queue.push_front((events, reply));
                                }
                            }
                        }
                        Ok(None) => {
                            stream = None;
                            let error = ClientError::Status(tonic::Status::unavailable(
                                "the server ended the publish stream",
                            ));
                            for (_, callers) in in_flight.drain() {
                                fail(callers, &error);
                            }
                        }
                        Err(status) => {
                            stream = None;
                            let error = ClientError::Status(status);
                            for (_, callers) in in_flight.drain() {
                                fail(callers, &error);
                            }
                        }
                    }
                }
                _ = sleep_until(wait_until) => {}
                command = rx.recv(), if input_open && queued_events < self.max_batch => {
                    match command {
                        Some(Command::Publish(events, reply)) => {
                            if queue.is_empty() {
                                deadline = Some(Instant::now() + self.linger);
                            }
                            queued_events += events.len();
                            queue.push_back((events, reply));
                            // Take whatever else is already waiting, without
                            // a select round per call.
                            while queued_events < self.max_batch {
                                match rx.try_recv() {
                                    Ok(Command::Publish(events, reply)) => {
                                        queued_events += events.len();
                                        queue.push_back((events, reply));
                                    }
                                    Ok(Command::Close(done)) => {
                                        closing.push(done);
                                        rx.close();
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                        Some(Command::Close(done)) => {
                            closing.push(done);
                            rx.close();
                        }
                        None => input_open = false,
                    }
                }
            }
        }
        // Half-close and let the server end the stream.
        drop(stream);
        for done in closing {
            let _ = done.send(());
        }
    }

    /// Takes up to `max_batch` events (at least one call) off the queue.
    fn take_batch(
        &self,
        queue: &mut Queue,
        queued_events: &mut usize,
        next_sequence: &mut u64,
    ) -> (u64, PublishStreamRequest, Callers) {
        let mut events: Vec<v1::Event> = Vec::new();
        let mut callers = Vec::new();
        while let Some((batch, _)) = queue.front() {
            if !events.is_empty() && events.len() + batch.len() > self.max_batch {
                break;
            }
            let (batch, reply) = queue.pop_front().expect("front exists");
            *queued_events -= batch.len();
            callers.push(Caller {
                count: batch.len(),
                reply,
                backup: None,
            });
            if events.is_empty() {
                events = batch;
                if let Some((next, _)) = queue.front()
                    && events.len() + next.len() <= self.max_batch
                {
                    events.reserve((*queued_events).min(self.max_batch - events.len()));
                }
            } else {
                events.extend(batch);
            }
        }
        if callers.len() > 1 {
            let size: usize = events
                .iter()
                .map(|e| {
                    let len = prost::Message::encoded_len(e);
                    len + prost::encoding::length_delimiter_len(len)
                })
                .sum();
            let mut buf = Vec::with_capacity(size);
            let mut ranges = Vec::with_capacity(callers.len());
            let mut start = 0;
            for caller in &callers {
                let from = buf.len();
                for event in &events[start..start + caller.count] {
                    prost::Message::encode_length_delimited(event, &mut buf).expect("buffer grows");
                }
                ranges.push(from..buf.len());
                start += caller.count;
            }
            let buf = Arc::new(buf);
            for (caller, range) in callers.iter_mut().zip(ranges) {
                caller.backup = Some((buf.clone(), range));
            }
        }
        let sequence = *next_sequence;
        *next_sequence += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let request = PublishStreamRequest {
            sequence,
            topic: self.topic.clone(),
            events,
        };
        (sequence, request, callers)
    }

    /// Sends `request`, opening the stream first if there is none.
    async fn send(
        &self,
        stream: &mut Option<OpenStream>,
        request: PublishStreamRequest,
    ) -> Result<(), ClientError> {
        if let Some(open) = stream {
            return match open.tx.send(request).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    *stream = None;
                    Err(ClientError::Status(tonic::Status::unavailable(
                        "the publish stream closed",
                    )))
                }
            };
        }
        let (tx, rx) = mpsc::channel(self.max_in_flight + 1);
        tx.send(request)
            .await
            .map_err(|_| ClientError::Closed("publish stream"))?;
        let response = self
            .publisher
            .clone()
            .publish_stream(ReceiverStream::new(rx))
            .await?;
        *stream = Some(OpenStream {
            tx,
            rx: response.into_inner(),
        });
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
fn answer(
    in_flight: &mut HashMap<u64, Callers>,
    response: PublishStreamResponse,
) -> Vec<(Vec<v1::Event>, Reply)> {
    let Some(callers) = in_flight.remove(&response.sequence) else {
        tracing::warn!(
            sequence = response.sequence,
            "publish response for an unknown request"
        );
        return Vec::new();
    };
    if let Some(detail) = response.error {
        let culprit = culprit(&detail, &callers);
        let error = ClientError::rejected(detail);
        let Some(culprit) = culprit else {
            fail(callers, &error);
            return Vec::new();
        };
        let mut retry = Vec::new();
        for (i, caller) in callers.into_iter().enumerate() {
            match caller.events_again() {
                Some(events) if i != culprit => retry.push((events, caller.reply)),
                _ => {
                    let _ = caller.reply.send(Err(error.duplicate()));
                }
            }
        }
        return retry;
    }
    let mut results = response.results.into_iter();
    for caller in callers {
        let receipts: Vec<Receipt> = results
            .by_ref()
            .take(caller.count)
            .map(Receipt::from)
            .collect();
        let _ = caller.reply.send(Ok(receipts));
    }
    Vec::new()
}

/// Which call of a shared request gave the one event the broker refused
/// (named by the `index` in the error's metadata), if that is known.
fn culprit(detail: &v1::ErrorDetail, callers: &Callers) -> Option<usize> {
    if callers.len() < 2 {
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
    callers.iter().position(|caller| {
        end += caller.count;
        index < end
    })
}

fn fail(callers: Callers, error: &ClientError) {
    for caller in callers {
        let _ = caller.reply.send(Err(error.duplicate()));
    }
}
