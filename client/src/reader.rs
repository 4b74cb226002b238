//! Reading a topic without a subscription: replay from a position (event
//! sourcing, audit), optionally following new events live. Nothing is acked
//! and nothing on the server remembers the reader.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::SystemTime;

use futures::{Stream, StreamExt};
use herald::v1::{self, DeliveredEvent};

use crate::consumer::Position;
use crate::event::to_system_time;
use crate::{Client, ClientError, Event};

/// An event as stored: the decoded value, its CloudEvents attributes and
/// where it sits in the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<T> {
    /// The decoded payload.
    pub value: T,
    /// CloudEvents `id`.
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
    /// When the broker stored it.
    pub publish_time: Option<SystemTime>,
}

impl<T: Event> Recorded<T> {
    /// Decodes a delivered or read event; the error names the event and
    /// the schema it did not match.
    pub(crate) fn decode(delivery: DeliveredEvent) -> Result<Self, ClientError> {
        let event = delivery.event.unwrap_or_default();
        let value = <T as prost::Message>::decode(event.data.as_ref()).map_err(|source| {
            ClientError::Decode {
                id: event.id.clone(),
                schema: T::schema(),
                source,
            }
        })?;
        Ok(Recorded {
            value,
            id: event.id,
            event_type: event.r#type,
            source: event.source,
            subject: event.subject,
            time: event.time.map(to_system_time),
            data_schema: event.data_schema,
            key: event.key,
            attributes: event.attributes,
            topic: delivery.topic,
            partition: delivery.partition,
            offset: delivery.offset,
            publish_time: delivery.publish_time.map(to_system_time),
        })
    }
}

/// Builds a read of `T`'s topic; see [`Client::reader`].
///
/// ```no_run
/// # use herald_client::prelude::*;
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct Deposited { #[prost(int64, tag = "1")] pub cents: i64 }
/// # impl prost::Name for Deposited { const NAME: &'static str = "Deposited"; const PACKAGE: &'static str = "bank.v1"; }
/// # impl Event for Deposited { const TOPIC: &'static str = "ledger"; const TYPE: &'static str = "bank.deposited"; const SOURCE: &'static str = "/bank"; }
/// # async fn demo(client: Client) -> Result<(), ClientError> {
/// use futures::StreamExt;
/// let mut balance = 0;
/// let mut events = client.reader::<Deposited>().position(Position::Earliest).read().await?;
/// while let Some(event) = events.next().await {
///     balance += event?.value.cents;
/// }
/// # Ok(()) }
/// ```
pub struct ReaderBuilder<T> {
    client: Client,
    topic: String,
    position: Position,
    partitions: Vec<u32>,
    follow: bool,
    max_events: u64,
    _event: PhantomData<fn() -> T>,
}

impl<T: Event> ReaderBuilder<T> {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            topic: T::TOPIC.to_owned(),
            position: Position::Earliest,
            partitions: Vec::new(),
            follow: false,
            max_events: 0,
            _event: PhantomData,
        }
    }

    /// Reads another topic holding `T` events, e.g. a dead-letter topic
    /// (default: `T::TOPIC`).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Where to start (default: earliest).
    pub fn position(mut self, position: Position) -> Self {
        self.position = position;
        self
    }

    /// Only these partitions (default: all).
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.partitions = partitions.into_iter().collect();
        self
    }

    /// Keep the stream open and yield events as they are published
    /// (default: end once caught up).
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Stop after this many events (default: no limit).
    pub fn max_events(mut self, max_events: u64) -> Self {
        self.max_events = max_events;
        self
    }

    /// Starts the read: a stream of decoded events, in order per partition.
    /// An event that does not decode as `T` is yielded as an error and the
    /// stream goes on.
    pub async fn read(
        self,
    ) -> Result<impl Stream<Item = Result<Recorded<T>, ClientError>> + Send, ClientError> {
        let request = v1::ReadRequest {
            topic: self.topic,
            position: Some(self.position.to_proto()),
            partitions: self.partitions,
            follow: self.follow,
            max_events: self.max_events,
        };
        let responses = self.client.subscriber().read(request).await?.into_inner();
        Ok(responses.flat_map(|response| {
            let items: Vec<Result<Recorded<T>, ClientError>> = match response {
                Ok(batch) => batch.events.into_iter().map(Recorded::decode).collect(),
                Err(status) => vec![Err(ClientError::from(status))],
            };
            futures::stream::iter(items)
        }))
    }
}
