//! The Rust client for Herald: typed producers and consumers over the gRPC
//! API, on one shared HTTP/2 connection.
//!
//! - [`Client`] ([`Client::builder`]): the connection, timeouts and
//!   reconnect policy; cheap to clone.
//! - [`Event`]: binds a Protobuf message to its topic, CloudEvents type and
//!   source, and key.
//! - [`Producer<T>`](Producer) ([`Client::producer`]): `publish(&T)`, batched
//!   in the background over one `PublishStream`.
//! - [`Consumer<T>`](Consumer) ([`Client::consumer`]): `run(handler)` or a
//!   `Stream` of [`Envelope<T>`](Envelope), with acks, nacks and credits
//!   handled for you.
//!
//! ```no_run
//! use herald_client::prelude::*;
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct UserSignedUp { #[prost(string, tag = "1")] pub user_id: String }
//! # impl prost::Name for UserSignedUp { const NAME: &'static str = "UserSignedUp"; const PACKAGE: &'static str = "acme"; }
//! # impl Event for UserSignedUp { const TOPIC: &'static str = "user.signup"; const TYPE: &'static str = "signed_up"; const SOURCE: &'static str = "/signup"; }
//! # async fn demo() -> Result<(), ClientError> {
//! let client = Client::builder().endpoint("http://127.0.0.1:50051").connect().await?;
//! let producer = client.producer::<UserSignedUp>().build();
//! producer.publish(&UserSignedUp { user_id: "u1".into() }).await?;
//! # Ok(()) }
//! ```

mod consumer;
mod error;
mod event;
mod producer;
mod reader;
mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use herald::StatusExt;
pub use herald::v1;
use herald::v1::admin_client::AdminClient;
use herald::v1::publisher_client::PublisherClient;
use herald::v1::subscriber_client::SubscriberClient;
use herald::v1::{PublishRequest, PublishResult};
use tonic::transport::{Channel, Endpoint};

pub use consumer::{
    ActiveState, Consumer, ConsumerBuilder, ConsumerSettings, Envelope, Position, Redelivery,
    SubscriptionType,
};
pub use error::ClientError;
pub use event::{
    CONTENT_TYPE_PROTOBUF, Event, Receipt, to_proto_duration, to_system_time, to_timestamp,
};
pub use producer::{Producer, ProducerBuilder, ProducerSettings, ProducerStats, PublishOptions};
pub use reader::{ReaderBuilder, Recorded};

/// The types most programs need: `use herald_client::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Client, ClientError, Consumer, Envelope, Event, Position, Producer, PublishOptions,
        Receipt, ReconnectPolicy, Recorded, Redelivery, SubscriptionType,
    };
    pub use tokio_util::sync::CancellationToken;
}

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How a consumer re-attaches after the connection drops: exponential
/// backoff from `initial`, times `multiplier` per attempt, capped at `max`,
/// each delay randomised by up to `jitter` (a fraction, 0.0 to 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Random spread of each delay, as a fraction of it.
    pub jitter: f64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (0-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(attempt as i32);
        let base = base.min(self.max.as_secs_f64());
        // Jitter from the sub-second clock: good enough to spread reconnects.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let unit = (nanos % 1000) as f64 / 1000.0 * 2.0 - 1.0;
        let spread = self.jitter.clamp(0.0, 1.0) * unit;
        Duration::from_secs_f64((base * (1.0 + spread)).max(0.0))
    }
}

/// Builds a [`Client`]: endpoint, timeouts, reconnect policy, and the
/// settings producers and consumers start from.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_client::ClientError> {
/// use std::time::Duration;
/// use herald_client::{Client, ConsumerSettings, ProducerSettings, ReconnectPolicy};
/// let client = Client::builder()
///     .endpoint("http://127.0.0.1:50051")
///     .connect_timeout(Duration::from_secs(2))
///     .wait_for_server(Duration::from_secs(30))
///     .request_timeout(Duration::from_secs(10))
///     .reconnect(ReconnectPolicy::default())
///     .producer_defaults(ProducerSettings { max_batch: 500, ..Default::default() })
///     .consumer_defaults(ConsumerSettings { credits: 500, ..Default::default() })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// Where the server listens, e.g. `http://127.0.0.1:50051`.
    endpoint: String,
    /// Bound on establishing the TCP + HTTP/2 connection.
    connect_timeout: Duration,
    /// Bound on each unary call and each producer publish.
    request_timeout: Duration,
    /// How consumers re-attach after the connection drops.
    reconnect: ReconnectPolicy,
    /// How long `connect` keeps retrying a server that is not up yet.
    wait_for_server: Duration,
    /// What every producer starts from.
    producer_defaults: ProducerSettings,
    /// What every consumer starts from.
    consumer_defaults: ConsumerSettings,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoint: "http://127.0.0.1:50051".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            reconnect: ReconnectPolicy::default(),
            wait_for_server: Duration::ZERO,
            producer_defaults: ProducerSettings::default(),
            consumer_defaults: ConsumerSettings::default(),
        }
    }
}

impl ClientBuilder {
    /// The server: `host:port`, `http://host:port` or `https://host:port`.
    /// Default `http://127.0.0.1:50051`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// How long connecting may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a unary call or a publish may take. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How consumers re-attach after the connection drops.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Keep retrying (with the reconnect policy's backoff) for up to `wait`
    /// when the server is not reachable yet, e.g. while it starts beside the
    /// application. Default zero: fail after one attempt.
    pub fn wait_for_server(mut self, wait: Duration) -> Self {
        self.wait_for_server = wait;
        self
    }

    /// Batching settings every [`Producer`] of the client starts from.
    pub fn producer_defaults(mut self, settings: ProducerSettings) -> Self {
        self.producer_defaults = settings;
        self
    }

    /// Credits, deadlines, redelivery and concurrency every [`Consumer`]
    /// of the client starts from.
    pub fn consumer_defaults(mut self, settings: ConsumerSettings) -> Self {
        self.consumer_defaults = settings;
        self
    }

    /// Connects; fails with [`ClientError::Connect`] if the server cannot be
    /// reached within the connect timeout (or, with
    /// [`wait_for_server`](ClientBuilder::wait_for_server), by the end of
    /// the wait).
    pub async fn connect(self) -> Result<Client, ClientError> {
        let endpoint = Endpoint::from_shared(herald::endpoint::uri(&self.endpoint))
            .map_err(|source| ClientError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                source,
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let give_up_at = tokio::time::Instant::now() + self.wait_for_server;
        let mut attempt = 0;
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(source) => {
                    let delay = self.reconnect.delay(attempt);
                    if tokio::time::Instant::now() + delay > give_up_at {
                        return Err(ClientError::Connect {
                            endpoint: self.endpoint.clone(),
                            timeout: self.connect_timeout,
                            source,
                        });
                    }
                    tracing::debug!(endpoint = %self.endpoint, error = %source, "server not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        };
        let mut client = Client::from_channel(channel);
        client.request_timeout = self.request_timeout;
        client.reconnect = self.reconnect;
        client.defaults = Arc::new((self.producer_defaults, self.consumer_defaults));
        Ok(client)
    }
}

/// A connection to a Herald server. Cheap to clone: clones share one
/// HTTP/2 channel, which reconnects by itself when the server comes back.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_client::ClientError> {
/// use herald_client::Client;
/// let client = Client::connect("http://127.0.0.1:50051").await?;
/// let results = client
///     .publish("orders", vec![herald_client::event("order.placed", "hello")])
///     .await?;
/// println!("stored at offset {}", results[0].offset);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    /// The shared HTTP/2 channel.
    channel: Channel,
    /// Publisher stub on the shared channel.
    publisher: PublisherClient<Channel>,
    /// Subscriber stub on the shared channel.
    subscriber: SubscriberClient<Channel>,
    /// Admin stub on the shared channel.
    admin: AdminClient<Channel>,
    /// Bound on unary calls and publishes.
    request_timeout: Duration,
    /// How consumers re-attach.
    reconnect: ReconnectPolicy,
    /// Producer and consumer defaults.
    defaults: Arc<(ProducerSettings, ConsumerSettings)>,
}

impl Client {
    /// A builder with the defaults (endpoint `http://127.0.0.1:50051`,
    /// connect timeout 5 s, request timeout 30 s).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to `endpoint`, e.g. `http://127.0.0.1:50051`, with the
    /// default settings.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder().endpoint(endpoint).connect().await
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            channel: channel.clone(),
            publisher: PublisherClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            subscriber: SubscriberClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(channel),
            request_timeout: ClientBuilder::default().request_timeout,
            reconnect: ReconnectPolicy::default(),
            defaults: Arc::default(),
        }
    }

    /// Publishes raw `events` to `topic` in one call; returns once they are
    /// durable. Typed code uses [`Client::producer`] instead.
    pub async fn publish(
        &self,
        topic: &str,
        events: Vec<v1::Event>,
    ) -> Result<Vec<PublishResult>, ClientError> {
        let mut publisher = self.publisher.clone();
        let call = publisher.publish(PublishRequest {
            topic: topic.to_owned(),
            events,
        });
        let response = tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))??;
        Ok(response.into_inner().results)
    }

    /// A typed producer of `T` events (to `T::TOPIC`); see [`Producer`].
    pub fn producer<T: Event>(&self) -> ProducerBuilder<T> {
        ProducerBuilder::new(self.clone())
    }

    /// A typed consumer of `T` events on `subscription` of `T::TOPIC`; see
    /// [`Consumer`].
    pub fn consumer<T: Event>(&self, subscription: impl Into<String>) -> ConsumerBuilder<T> {
        ConsumerBuilder::new(self.clone(), subscription.into())
    }

    /// A typed read of `T::TOPIC` with no subscription (replay, audit);
    /// see [`ReaderBuilder`].
    pub fn reader<T: Event>(&self) -> ReaderBuilder<T> {
        ReaderBuilder::new(self.clone())
    }

    /// The generated Publisher stub, for streaming publishes.
    pub fn publisher(&self) -> PublisherClient<Channel> {
        self.publisher.clone()
    }

    /// The generated Subscriber stub (e.g. for `Read`).
    pub fn subscriber(&self) -> SubscriberClient<Channel> {
        self.subscriber.clone()
    }

    /// The generated Admin stub.
    pub fn admin(&self) -> AdminClient<Channel> {
        self.admin.clone()
    }

    /// The request timeout in force.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The reconnect policy in force.
    pub fn reconnect_policy(&self) -> ReconnectPolicy {
        self.reconnect
    }

    /// The settings new producers start from.
    pub fn producer_defaults(&self) -> &ProducerSettings {
        &self.defaults.0
    }

    /// The settings new consumers start from.
    pub fn consumer_defaults(&self) -> &ConsumerSettings {
        &self.defaults.1
    }

    /// The shared channel (for stubs of other services on the server).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// A raw event with `data` and `type`, other attributes empty.
pub fn event(event_type: &str, data: impl Into<bytes::Bytes>) -> v1::Event {
    v1::Event {
        r#type: event_type.to_owned(),
        data: data.into(),
        ..v1::Event::default()
    }
}
