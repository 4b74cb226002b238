//! A minimal Rust client for Herald: one shared HTTP/2 channel and the
//! generated Publisher and Admin stubs behind a small API. The typed
//! `Producer<T>` / `Consumer<T>` come later, on top of this.

use std::time::Duration;

pub use herald::StatusExt;
pub use herald::v1;
use herald::v1::admin_client::AdminClient;
use herald::v1::publisher_client::PublisherClient;
use herald::v1::{Event, PublishRequest, PublishResult};
use tonic::transport::{Channel, Endpoint};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Could not connect.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error; [`StatusExt::herald_code`] tells which.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// A connection to a Herald server. Cheap to clone: clones share one channel.
#[derive(Clone)]
pub struct Client {
    publisher: PublisherClient<Channel>,
    admin: AdminClient<Channel>,
}

impl Client {
    /// Connects to `endpoint`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| ClientError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint, source })?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            publisher: PublisherClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            admin: AdminClient::new(channel),
        }
    }

    /// Publishes `events` to `topic`; returns once they are durable.
    pub async fn publish(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<PublishResult>, ClientError> {
        let response = self
            .publisher
            .clone()
            .publish(PublishRequest {
                topic: topic.to_owned(),
                events,
            })
            .await?;
        Ok(response.into_inner().results)
    }

    /// The generated Publisher stub, for streaming publishes.
    pub fn publisher(&self) -> PublisherClient<Channel> {
        self.publisher.clone()
    }

    /// The generated Admin stub.
    pub fn admin(&self) -> AdminClient<Channel> {
        self.admin.clone()
    }
}

/// An event with `data` and `type`, other attributes empty.
pub fn event(event_type: &str, data: impl Into<bytes::Bytes>) -> Event {
    Event {
        r#type: event_type.to_owned(),
        data: data.into(),
        ..Event::default()
    }
}
