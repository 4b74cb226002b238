//! [`Consumer<T>`]: typed consuming over one `Subscriber.Subscribe` stream.
//!
//! The consumer attaches (the first message), then reads `EventBatch`es into
//! a queue and hands them out one by one as decoded [`Envelope`]s. Every
//! ack or nack returns the delivery's credit; returned credits are granted
//! back to the server in batches (a quarter of the window at a time), so no
//! more than `credits` deliveries are ever outstanding. Closing half-closes
//! the stream and waits for the server to end it, so the last acks are
//! applied. A stream that fails with `UNAVAILABLE` or a transport error is
//! re-attached with the client's [`ReconnectPolicy`](crate::ReconnectPolicy)
//! unless reconnecting is turned off.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use futures::{FutureExt, Stream, StreamExt};
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::{self, DeliveredEvent, SubscribeRequest, SubscribeResponse};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event::{to_proto_duration, to_timestamp};
use crate::reader::Recorded;
use crate::{Client, ClientError, Event};

/// How long closing waits for the server to end the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How events are shared among a subscription's consumers (fixed when the
/// subscription is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionType {
    /// One consumer; a second attach is refused.
    Exclusive,
    /// Round-robin over consumers with free credits; no ordering.
    Shared,
    /// One active consumer per partition; the rest stand by.
    Failover,
    /// One key's events always go to the same consumer, in order.
    KeyShared,
}

impl SubscriptionType {
    fn to_proto(self) -> v1::SubscriptionType {
        match self {
            SubscriptionType::Exclusive => v1::SubscriptionType::Exclusive,
            SubscriptionType::Shared => v1::SubscriptionType::Shared,
            SubscriptionType::Failover => v1::SubscriptionType::Failover,
            SubscriptionType::KeyShared => v1::SubscriptionType::KeyShared,
        }
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest retained event.
    Earliest,
    /// Only events published from now on (the server's default).
    Latest,
    /// Explicit offsets per partition; unlisted partitions start at earliest.
    Offsets(HashMap<u32, u64>),
    /// The first event published at or after this time.
    Timestamp(SystemTime),
}

impl Position {
    pub(crate) fn to_proto(&self) -> v1::Position {
        use v1::position::Kind;
        let kind = match self {
            Position::Earliest => Kind::Earliest(()),
            Position::Latest => Kind::Latest(()),
            Position::Offsets(offsets) => Kind::Offsets(v1::PartitionOffsets {
                offsets: offsets.clone(),
            }),
            Position::Timestamp(t) => Kind::Timestamp(to_timestamp(*t)),
        };
        v1::Position { kind: Some(kind) }
    }
}

/// Redelivery with exponential backoff and dead-lettering, for a new
/// subscription. Unset fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redelivery {
    /// First redelivery delay (server default 1 s).
    pub min_backoff: Option<Duration>,
    /// Longest redelivery delay (server default 60 s).
    pub max_backoff: Option<Duration>,
    /// Delay multiplier per attempt (server default 2.0).
    pub multiplier: Option<f64>,
    /// Past this many deliveries the event goes to the dead-letter topic;
    /// 0 never dead-letters.
    pub max_delivery_attempts: u32,
    /// Default `<topic>.<subscription>.dlq`.
    pub dead_letter_topic: Option<String>,
}

impl Redelivery {
    fn to_proto(&self) -> v1::RedeliveryPolicy {
        v1::RedeliveryPolicy {
            min_backoff: self.min_backoff.map(to_proto_duration),
            max_backoff: self.max_backoff.map(to_proto_duration),
            multiplier: self.multiplier.unwrap_or(0.0),
            max_delivery_attempts: self.max_delivery_attempts,
            dead_letter_topic: self.dead_letter_topic.clone().unwrap_or_default(),
        }
    }
}

/// Failover: whether this consumer holds the active role, as last told by
/// the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveState {
    /// This consumer is active (for `partitions`).
    pub active: bool,
    /// The active consumer's name (of partition 0 when standing by).
    pub active_consumer: String,
    /// Increases on every handover.
    pub epoch: u64,
    /// Partitions this consumer is active for.
    pub partitions: Vec<u32>,
}

/// Consumer settings every consumer of a [`Client`] starts from (set with
/// [`ClientBuilder::consumer_defaults`](crate::ClientBuilder::consumer_defaults));
/// each [`ConsumerBuilder`] can override them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSettings {
    /// Most deliveries outstanding at once. Default 100.
    pub credits: u32,
    /// Ack deadline for new subscriptions; `None`: the server's (30 s).
    pub ack_deadline: Option<Duration>,
    /// Redelivery policy for new subscriptions; `None`: the server's.
    pub redelivery: Option<Redelivery>,
    /// Handlers [`Consumer::run`] runs at once. Default 1 (in order).
    pub concurrency: usize,
    /// Re-attach after transport failures. Default true.
    pub reconnect: bool,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            credits: 100,
            ack_deadline: None,
            redelivery: None,
            concurrency: 1,
            reconnect: true,
        }
    }
}

/// Builds a [`Consumer`]: subscription type, consumer name, priority,
/// initial position, credits, ack deadline and redelivery policy.
pub struct ConsumerBuilder<T> {
    /// The connection.
    client: Client,
    /// The attach message being built.
    attach: v1::Attach,
    /// Re-attach after transport failures.
    reconnect: bool,
    /// Handlers run at once by `run`.
    concurrency: usize,
    /// The event type consumed.
    _event: PhantomData<fn() -> T>,
}

impl<T: Event> ConsumerBuilder<T> {
    pub(crate) fn new(client: Client, subscription: String) -> Self {
        let defaults = client.consumer_defaults().clone();
        ConsumerBuilder {
            client,
            attach: v1::Attach {
                topic: T::TOPIC.to_owned(),
                subscription,
                r#type: v1::SubscriptionType::Shared as i32,
                initial_credits: defaults.credits.clamp(1, 10_000),
                ack_deadline: defaults.ack_deadline.map(to_proto_duration),
                redelivery: defaults.redelivery.as_ref().map(Redelivery::to_proto),
                ..v1::Attach::default()
            },
            reconnect: defaults.reconnect,
            concurrency: defaults.concurrency.max(1),
            _event: PhantomData,
        }
    }

    /// Consumes `topic` instead of `T::TOPIC`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.attach.topic = topic.into();
        self
    }

    /// How many handlers [`Consumer::run`] runs at once. Default 1, which
    /// keeps the delivery order; above 1, events (even of one key) may
    /// finish out of order.
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// The subscription type. Default [`SubscriptionType::Shared`].
    pub fn subscription_type(mut self, kind: SubscriptionType) -> Self {
        self.attach.r#type = kind.to_proto() as i32;
        self
    }

    /// This consumer's name, unique in the subscription. Default: chosen by
    /// the server.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.attach.consumer_name = name.into();
        self
    }

    /// Failover: lower values are preferred for the active role. Default 0.
    pub fn priority(mut self, priority: i32) -> Self {
        self.attach.priority = priority;
        self
    }

    /// Where a new subscription starts. Default [`Position::Latest`].
    pub fn initial_position(mut self, position: Position) -> Self {
        self.attach.initial_position = Some(position.to_proto());
        self
    }

    /// Most deliveries outstanding at once (the credit window). Default 100.
    pub fn credits(mut self, credits: u32) -> Self {
        self.attach.initial_credits = credits.clamp(1, 10_000);
        self
    }

    /// Redeliver an event not acked within this time (for a new
    /// subscription). Server default 30 s.
    pub fn ack_deadline(mut self, deadline: Duration) -> Self {
        self.attach.ack_deadline = Some(to_proto_duration(deadline));
        self
    }

    /// Redelivery and dead-letter policy (for a new subscription).
    pub fn redelivery(mut self, policy: Redelivery) -> Self {
        self.attach.redelivery = Some(policy.to_proto());
        self
    }

    /// Re-attach with the client's reconnect policy when the stream fails
    /// with `UNAVAILABLE` or a transport error. Default true.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Attaches; fails with the server's error (e.g.
    /// [`v1::ErrorCode::ExclusiveConsumerAttached`]) or
    /// [`ClientError::Timeout`] after the request timeout.
    pub async fn subscribe(self) -> Result<Consumer<T>, ClientError> {
        let (active_tx, _) = watch::channel(None);
        let mut consumer = Consumer {
            client: self.client,
            attach: self.attach,
            reconnect: self.reconnect,
            concurrency: self.concurrency,
            session: None,
            attached: v1::Attached::default(),
            active: active_tx,
            _event: PhantomData,
        };
        consumer.attach().await?;
        Ok(consumer)
    }
}

/// Consumes `T` events from a subscription of `T::TOPIC`.
///
/// [`run`](Consumer::run) calls a handler per event: `Ok` acks it, `Err`
/// nacks it with the error text as the reason (it is redelivered with
/// backoff, and dead-lettered after the policy's max attempts), a panic is
/// caught, logged and nacked. An event whose payload does not decode as `T`
/// is nacked with the decode error as the reason. [`stream`](Consumer::stream)
/// gives the same envelopes as a `Stream` to drive yourself.
///
/// ```no_run
/// # use herald_client::prelude::*;
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct UserSignedUp { #[prost(string, tag = "1")] pub user_id: String }
/// # impl prost::Name for UserSignedUp { const NAME: &'static str = "UserSignedUp"; const PACKAGE: &'static str = "acme"; }
/// # impl Event for UserSignedUp { const TOPIC: &'static str = "user.signup"; const TYPE: &'static str = "signed_up"; const SOURCE: &'static str = "/signup"; }
/// # async fn demo(client: Client) -> Result<(), ClientError> {
/// let shutdown = CancellationToken::new();
/// let consumer = client
///     .consumer::<UserSignedUp>("welcome-email")
///     .initial_position(Position::Earliest)
///     .subscribe()
///     .await?;
/// consumer
///     .run_until(shutdown, |event: Envelope<UserSignedUp>| async move {
///         println!("welcome {} (attempt {})", event.value.user_id, event.delivery_attempt);
///         Ok::<(), std::io::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct Consumer<T> {
    /// The connection.
    client: Client,
    /// Sent first on every (re-)attach.
    attach: v1::Attach,
    /// Re-attach after transport failures.
    reconnect: bool,
    /// Handlers run at once by `run`.
    concurrency: usize,
    /// The current stream; `None` once closed or failed.
    session: Option<Session>,
    /// What the server said on the last attach.
    attached: v1::Attached,
    /// Failover role, as last told by the server.
    active: watch::Sender<Option<ActiveState>>,
    /// The event type consumed.
    _event: PhantomData<fn() -> T>,
}

/// One attached Subscribe stream.
struct Session {
    /// Requests to the server. The only strong sender: dropping it
    /// half-closes the stream even while envelopes are still held.
    tx: mpsc::UnboundedSender<SubscribeRequest>,
    /// Hands ack handles a weak sender.
    acker: Acker,
    /// Server messages.
    rx: tonic::Streaming<SubscribeResponse>,
    /// Deliveries received and not yet handed out.
    queue: VecDeque<DeliveredEvent>,
}

impl<T: Event> Consumer<T> {
    /// What the server answered to the attach (consumer name, type,
    /// partitions).
    pub fn attached(&self) -> &v1::Attached {
        &self.attached
    }

    /// Failover: the active/standby role, updated as the server announces
    /// handovers while the consumer is being run or streamed.
    pub fn active_state(&self) -> watch::Receiver<Option<ActiveState>> {
        self.active.subscribe()
    }

    /// Runs `handler` on every event until the server ends the stream (or it
    /// fails and cannot be re-attached); see [`Consumer::run_until`].
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<(), ClientError>
    where
        F: FnMut(Envelope<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        self.run_until(CancellationToken::new(), handler).await
    }

    /// Runs `handler` on every event until `shutdown` is cancelled or the
    /// server ends the stream: one at a time unless the builder's
    /// [`concurrency`](ConsumerBuilder::concurrency) says more. `Ok` acks,
    /// `Err` nacks with the error text as the reason, a panic is logged and
    /// nacked. Each handler runs inside a `herald.process` span (OpenTelemetry
    /// messaging attributes) whose parent is the producer's trace context
    /// from the event's `traceparent`, when `tracing-opentelemetry` is
    /// installed. On the way out the handlers running are finished, the
    /// stream is half-closed and drained, so every ack sent is applied.
    /// Returns the error that ended the stream, if it failed.
    pub async fn run_until<F, Fut, E>(
        mut self,
        shutdown: CancellationToken,
        mut handler: F,
    ) -> Result<(), ClientError>
    where
        F: FnMut(Envelope<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        let mut running = futures::stream::FuturesUnordered::new();
        let result = loop {
            if running.len() >= self.concurrency {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = running.next() => {}
                }
                continue;
            }
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(()) = running.next(), if !running.is_empty() => continue,
                next = self.next_delivery() => next,
            };
            let (delivery, acker) = match next {
                None => break Ok(()),
                Some(Err(error)) => break Err(error),
                Some(Ok(next)) => next,
            };
            let envelope = match Envelope::<T>::decode(delivery, acker, false) {
                Ok(envelope) => envelope,
                Err(failed) => {
                    let (handle, error) = *failed;
                    tracing::warn!(%error, "nacking an event that does not decode");
                    handle.nack(None, &error.to_string());
                    continue;
                }
            };
            let handle = envelope.handle.runner_copy();
            let id = envelope.id.clone();
            let span = process_span(&envelope, &self.attach.subscription);
            let work = span.in_scope(|| handler(envelope));
            running.push(finish(handle, id, work.instrument(span)));
        };
        while running.next().await.is_some() {}
        self.close().await;
        result
    }

    /// The events as a `Stream` of [`Envelope`]s, for driving consumption
    /// yourself. Call [`Envelope::ack`] or [`Envelope::nack`] on each; one
    /// dropped without either is nacked. A payload that does not decode is
    /// nacked and yielded as [`ClientError::Decode`]; the stream goes on. It
    /// ends after the server ends the subscription or after a terminal error.
    ///
    /// Dropping the stream drops the connection without waiting for the
    /// last acks to be applied; unapplied acks mean redeliveries (at least
    /// once).
    pub fn stream(self) -> impl Stream<Item = Result<Envelope<T>, ClientError>> + Send {
        futures::stream::unfold(Some(self), |consumer| async move {
            let mut consumer = consumer?;
            match consumer.next_delivery().await {
                None => {
                    consumer.close().await;
                    None
                }
                Some(Err(error)) => Some((Err(error), None)),
                Some(Ok((delivery, acker))) => match Envelope::decode(delivery, acker, true) {
                    Ok(envelope) => Some((Ok(envelope), Some(consumer))),
                    Err(failed) => {
                        let (handle, error) = *failed;
                        handle.nack(None, &error.to_string());
                        Some((Err(error), Some(consumer)))
                    }
                },
            }
        })
    }

    /// Half-closes the stream and waits (up to 5 s) for the server to end
    /// it, so acks already sent are applied.
    pub async fn close(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let Session { tx, mut rx, .. } = session;
        drop(tx);
        let drain = async { while let Ok(Some(_)) = rx.message().await {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, drain).await.is_err() {
            tracing::warn!("the server did not end the subscription stream within 5 s");
        }
    }

    /// Opens a stream and waits for `Attached`.
    async fn attach(&mut self) -> Result<(), ClientError> {
        let timeout = self.client.request_timeout();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(request(ClientMessage::Attach(self.attach.clone())))
            .map_err(|_| ClientError::Closed("subscription"))?;
        let open = async {
            let mut stream = self
                .client
                .subscriber()
                .subscribe(Coalesced::new(rx))
                .await?
                .into_inner();
            let mut queue = VecDeque::new();
            loop {
                match stream.message().await? {
                    Some(SubscribeResponse {
                        response: Some(ServerMessage::Attached(attached)),
                    }) => return Ok((stream, queue, attached)),
                    Some(SubscribeResponse {
                        response: Some(ServerMessage::Events(batch)),
                    }) => queue.extend(batch.events),
                    Some(_) => continue,
                    None => {
                        return Err(ClientError::Status(tonic::Status::unavailable(
                            "the server ended the stream before attaching",
                        )));
                    }
                }
            }
        };
        let (rx, queue, attached) = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        self.attached = attached;
        let window = self.attach.initial_credits.max(1);
        self.session = Some(Session {
            acker: Acker {
                tx: tx.downgrade(),
                returned: Arc::new(AtomicU32::new(0)),
                grant_at: (window / 4).max(1),
            },
            tx,
            rx,
            queue,
        });
        Ok(())
    }

    /// The next delivery and the ack handle source for it; `None` when the
    /// server ended the stream.
    async fn next_delivery(&mut self) -> Option<Result<(DeliveredEvent, Acker), ClientError>> {
        let mut failures = 0u32;
        loop {
            let Some(session) = self.session.as_mut() else {
                // Re-attaching after a failure.
                let delay = self.client.reconnect_policy().delay(failures);
                tokio::time::sleep(delay).await;
                match self.attach().await {
                    Ok(()) => {
                        tracing::info!(
                            subscription = %self.attach.subscription,
                            "re-attached"
                        );
                        failures = 0;
                    }
                    Err(error) if error.is_transient() => {
                        tracing::debug!(%error, "re-attach failed; retrying");
                        failures = failures.saturating_add(1);
                    }
                    Err(error) => return Some(Err(error)),
                }
                continue;
            };
            if let Some(delivery) = session.queue.pop_front() {
                return Some(Ok((delivery, session.acker.clone())));
            }
            let message = match session.rx.message().await {
                Ok(Some(SubscribeResponse {
                    response: Some(message),
                })) => message,
                Ok(Some(SubscribeResponse { response: None })) => continue,
                Ok(None) => {
                    self.session = None;
                    return None;
                }
                Err(status) => {
                    let error = ClientError::Status(status);
                    self.session = None;
                    if self.reconnect && error.is_transient() {
                        tracing::warn!(%error, "subscription stream failed; re-attaching");
                        continue;
                    }
                    return Some(Err(error));
                }
            };
            match message {
                ServerMessage::Events(batch) => session.queue.extend(batch.events),
                ServerMessage::ActiveStatus(status) => {
                    self.active.send_replace(Some(ActiveState {
                        active: status.active,
                        active_consumer: status.active_consumer,
                        epoch: status.epoch,
                        partitions: status.partitions,
                    }));
                }
                ServerMessage::Error(detail) => {
                    tracing::warn!(code = detail.code, message = %detail.message, "subscription request refused");
                }
                ServerMessage::AckResult(result) => {
                    tracing::debug!(
                        invalid = result.invalid_handles.len(),
                        stale = result.stale_handles.len(),
                        "acks not applied"
                    );
                }
                ServerMessage::Attached(_) | ServerMessage::FlowStatus(_) => {}
            }
        }
    }
}

/// The span a handler runs in: a child of the producer's trace context
/// (from the event's `traceparent`), with the OpenTelemetry messaging
/// attributes. Disabled spans (no subscriber interested) cost no parsing.
fn process_span<T>(envelope: &Envelope<T>, subscription: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "herald.process",
        otel.name = %format_args!("process {}", envelope.topic),
        otel.kind = "consumer",
        messaging.system = "herald",
        messaging.operation = "process",
        messaging.destination.name = %envelope.topic,
        messaging.destination.partition.id = envelope.partition,
        messaging.message.id = %envelope.id,
        messaging.consumer.group.name = %subscription,
        messaging.herald.delivery_attempt = envelope.delivery_attempt,
    );
    if !span.is_disabled() && envelope.attributes.contains_key("traceparent") {
        let _ = span.set_parent(herald::trace_context::extract(&envelope.attributes));
    }
    span
}

/// Acks or nacks one delivery by its handler's outcome.
async fn finish<E: Display>(
    handle: AckHandle,
    id: String,
    work: impl Future<Output = Result<(), E>>,
) {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(())) => handle.ack(),
        Ok(Err(error)) => handle.nack(None, &error.to_string()),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(event = %id, panic = %message, "event handler panicked");
            handle.nack(None, &format!("handler panicked: {message}"));
        }
    }
}

/// Sends acks, nacks, deadline extensions and credit grants on a stream.
#[derive(Clone)]
struct Acker {
    /// To the server; unbounded, so acks never wait (the credit window
    /// bounds how many there can be). Weak: once the consumer closes, acks
    /// are dropped (the events are redelivered).
    tx: mpsc::WeakUnboundedSender<SubscribeRequest>,
    /// Credits freed by finished deliveries and not yet granted back.
    returned: Arc<AtomicU32>,
    /// Grant once this many are freed.
    grant_at: u32,
}

impl Acker {
    /// Sends `message`, which finishes one delivery, and grants credits
    /// back when enough have been freed.
    fn finish(&self, message: ClientMessage) {
        // A closed stream loses the message; the event is redelivered.
        let Some(tx) = self.tx.upgrade() else {
            return;
        };
        let _ = tx.send(request(message));
        if self.returned.fetch_add(1, Ordering::AcqRel) + 1 >= self.grant_at {
            let credits = self.returned.swap(0, Ordering::AcqRel);
            if credits > 0 {
                let _ = tx.send(request(ClientMessage::Credit(v1::Credit { credits })));
            }
        }
    }
}

/// One delivery's ack handle, finished at most once.
struct AckHandle {
    /// Names the delivery.
    ack_handle: String,
    /// Where acks go.
    acker: Acker,
    /// Set by the first ack or nack.
    finished: Arc<AtomicBool>,
    /// Stream mode: nack a delivery dropped unfinished.
    nack_on_drop: bool,
}

impl AckHandle {
    /// A copy sharing the finished flag, that never nacks on drop.
    fn runner_copy(&self) -> AckHandle {
        AckHandle {
            ack_handle: self.ack_handle.clone(),
            acker: self.acker.clone(),
            finished: self.finished.clone(),
            nack_on_drop: false,
        }
    }

    fn ack(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.acker.finish(ClientMessage::Ack(v1::Ack {
                ack_handles: vec![self.ack_handle.clone()],
                cumulative: false,
            }));
        }
    }

    fn nack(&self, delay: Option<Duration>, reason: &str) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.acker.finish(ClientMessage::Nack(v1::Nack {
                ack_handles: vec![self.ack_handle.clone()],
                delay: delay.map(to_proto_duration),
                reason: reason.to_owned(),
            }));
        }
    }

    fn extend(&self, extension: Duration) {
        if !self.finished.load(Ordering::Acquire)
            && let Some(tx) = self.acker.tx.upgrade()
        {
            let message = ClientMessage::ExtendDeadline(v1::ExtendDeadline {
                ack_handles: vec![self.ack_handle.clone()],
                extension: Some(to_proto_duration(extension)),
            });
            let _ = tx.send(request(message));
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if self.nack_on_drop {
            self.nack(None, "dropped without ack");
        }
    }
}

/// A delivered event: the decoded value, its CloudEvents attributes, where
/// it was stored, and how to ack it.
///
/// Under [`Consumer::run`] the handler's result acks or nacks it; calling
/// [`ack`](Envelope::ack) or [`nack`](Envelope::nack) inside the handler
/// decides first (the first call wins). Under [`Consumer::stream`], call one
/// of them; an envelope dropped unfinished is nacked.
pub struct Envelope<T> {
    /// The decoded payload.
    pub value: T,
    /// CloudEvents `id`: stable across redeliveries.
    pub id: String,
    /// CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject` (empty when unset).
    pub subject: String,
    /// CloudEvents `time`: when the producer says it happened.
    pub time: Option<SystemTime>,
    /// CloudEvents `dataschema`.
    pub data_schema: String,
    /// The ordering key (empty when keyless).
    pub key: String,
    /// Extension attributes (e.g. `traceparent`).
    pub attributes: HashMap<String, String>,
    /// The topic it came from.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// 1 on first delivery, one higher on each redelivery.
    pub delivery_attempt: u32,
    /// When the broker stored it.
    pub publish_time: Option<SystemTime>,
    /// How to ack it.
    handle: AckHandle,
}

impl<T: Event> Envelope<T> {
    /// Decodes `delivery`; on failure returns its handle to nack.
    fn decode(
        delivery: DeliveredEvent,
        acker: Acker,
        nack_on_drop: bool,
    ) -> Result<Self, Box<(AckHandle, ClientError)>> {
        let ack_handle = delivery.ack_handle.clone();
        let delivery_attempt = delivery.delivery_attempt;
        let decoded = Recorded::<T>::decode(delivery);
        let handle = AckHandle {
            ack_handle,
            acker,
            finished: Arc::new(AtomicBool::new(false)),
            nack_on_drop: nack_on_drop && decoded.is_ok(),
        };
        let r = match decoded {
            Ok(r) => r,
            Err(error) => return Err(Box::new((handle, error))),
        };
        Ok(Envelope {
            value: r.value,
            id: r.id,
            event_type: r.event_type,
            source: r.source,
            subject: r.subject,
            time: r.time,
            data_schema: r.data_schema,
            key: r.key,
            attributes: r.attributes,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            delivery_attempt,
            publish_time: r.publish_time,
            handle,
        })
    }
}

impl<T> Envelope<T> {
    /// Acknowledges the event: it will not be delivered again.
    pub fn ack(&self) {
        self.handle.ack();
    }

    /// Refuses the event: it is redelivered after `delay` (the
    /// subscription's backoff when `None`), and dead-lettered with `reason`
    /// after the policy's max attempts.
    pub fn nack(&self, delay: Option<Duration>, reason: &str) {
        self.handle.nack(delay, reason);
    }

    /// Buys `extension` more time before the ack deadline redelivers it.
    pub fn extend(&self, extension: Duration) {
        self.handle.extend(extension);
    }

    /// The producer's OpenTelemetry context, from the `traceparent` and
    /// `tracestate` attributes (empty when the event carries none): the
    /// parent for a processing span when driving [`Consumer::stream`].
    pub fn trace_context(&self) -> opentelemetry::Context {
        herald::trace_context::extract(&self.attributes)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("value", &self.value)
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("delivery_attempt", &self.delivery_attempt)
            .finish_non_exhaustive()
    }
}

/// Most ack handles merged into one `Ack` message.
const MAX_MERGED_HANDLES: usize = 1000;

/// The consumer's requests as a stream, with runs of acks that are already
/// queued when the transport asks for the next message merged into one
/// `Ack` (and runs of credit grants into one `Credit`). Nothing waits to be
/// merged: a lone ack goes at once; only acks that piled up behind a busy
/// stream share a message. Order is kept (only neighbours merge), so every
/// ack still reaches the server, before the half-close.
struct Coalesced {
    /// From the consumer and its ack handles.
    rx: mpsc::UnboundedReceiver<SubscribeRequest>,
    /// Taken off `rx` but not mergeable with the message before it.
    stash: Option<SubscribeRequest>,
}

impl Coalesced {
    fn new(rx: mpsc::UnboundedReceiver<SubscribeRequest>) -> Self {
        Coalesced { rx, stash: None }
    }
}

impl Stream for Coalesced {
    type Item = SubscribeRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut first = match this.stash.take() {
            Some(first) => first,
            None => match this.rx.poll_recv(cx) {
                Poll::Ready(Some(first)) => first,
                other => return other,
            },
        };
        loop {
            let merged = match &first.request {
                Some(ClientMessage::Ack(ack)) => {
                    !ack.cumulative && ack.ack_handles.len() < MAX_MERGED_HANDLES
                }
                Some(ClientMessage::Credit(_)) => true,
                _ => false,
            };
            if !merged {
                break;
            }
            let next = match this.rx.poll_recv(cx) {
                Poll::Ready(Some(next)) => next,
                // Pending (the waker is registered) or closed: send what we
                // have; the next poll sees the rest.
                _ => break,
            };
            match (&mut first.request, next.request) {
                (Some(ClientMessage::Ack(into)), Some(ClientMessage::Ack(more)))
                    if !more.cumulative =>
                {
                    into.ack_handles.extend(more.ack_handles);
                }
                (Some(ClientMessage::Credit(into)), Some(ClientMessage::Credit(more))) => {
                    into.credits = into.credits.saturating_add(more.credits);
                }
                (_, other) => {
                    this.stash = Some(SubscribeRequest { request: other });
                    break;
                }
            }
        }
        Poll::Ready(Some(first))
    }
}

fn request(message: ClientMessage) -> SubscribeRequest {
    SubscribeRequest {
        request: Some(message),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
