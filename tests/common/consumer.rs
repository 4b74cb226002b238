//! A test consumer over a real Subscribe stream: attach, then read
//! deliveries and status, and send acks, nacks and credits.
#![allow(dead_code)]

use std::time::Duration;

use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::subscribe_response::Response as ServerMessage;
use herald::v1::subscriber_client::SubscriberClient;
use herald::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How an attach is asked for.
#[derive(Clone)]
pub struct AttachSpec {
    pub topic: String,
    pub subscription: String,
    pub kind: SubscriptionType,
    pub name: String,
    pub priority: i32,
    pub credits: u32,
    pub ack_deadline: Option<Duration>,
    pub redelivery: Option<RedeliveryPolicy>,
    pub position: Option<Position>,
}

impl AttachSpec {
    pub fn new(topic: &str, subscription: &str, kind: SubscriptionType, name: &str) -> Self {
        Self {
            topic: topic.into(),
            subscription: subscription.into(),
            kind,
            name: name.into(),
            priority: 0,
            credits: 1000,
            ack_deadline: None,
            redelivery: None,
            position: Some(earliest()),
        }
    }

    pub fn credits(mut self, credits: u32) -> Self {
        self.credits = credits;
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn ack_deadline(mut self, d: Duration) -> Self {
        self.ack_deadline = Some(d);
        self
    }

    pub fn redelivery(mut self, r: RedeliveryPolicy) -> Self {
        self.redelivery = Some(r);
        self
    }

    fn message(&self) -> SubscribeRequest {
        request(ClientMessage::Attach(Attach {
            topic: self.topic.clone(),
            subscription: self.subscription.clone(),
            r#type: self.kind as i32,
            consumer_name: self.name.clone(),
            priority: self.priority,
            initial_position: self.position.clone(),
            initial_credits: self.credits,
            ack_deadline: self.ack_deadline.map(proto_duration),
            redelivery: self.redelivery.clone(),
        }))
    }
}

pub fn earliest() -> Position {
    Position {
        kind: Some(position::Kind::Earliest(())),
    }
}

pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn request(message: ClientMessage) -> SubscribeRequest {
    SubscribeRequest {
        request: Some(message),
    }
}

/// An attached consumer.
pub struct TestConsumer {
    pub tx: Option<mpsc::Sender<SubscribeRequest>>,
    pub rx: tonic::Streaming<SubscribeResponse>,
    pub attached: herald::v1::Attached,
}

/// Opens a Subscribe stream and sends `first`; returns the stream.
pub async fn open(
    endpoint: &str,
    first: SubscribeRequest,
) -> Result<
    (
        mpsc::Sender<SubscribeRequest>,
        tonic::Streaming<SubscribeResponse>,
    ),
    tonic::Status,
> {
    let mut client = SubscriberClient::connect(endpoint.to_owned())
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(1024);
    tx.send(first).await.unwrap();
    let stream = client
        .subscribe(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

impl TestConsumer {
    /// Attaches, or returns the status the server ended the stream with.
    pub async fn try_attach(endpoint: &str, spec: &AttachSpec) -> Result<Self, tonic::Status> {
        let (tx, mut rx) = open(endpoint, spec.message()).await?;
        loop {
            match rx.message().await? {
                Some(SubscribeResponse {
                    response: Some(ServerMessage::Attached(attached)),
                }) => {
                    return Ok(Self {
                        tx: Some(tx),
                        rx,
                        attached,
                    });
                }
                Some(_) => continue,
                None => return Err(tonic::Status::unknown("stream ended before Attached")),
            }
        }
    }

    pub async fn attach(endpoint: &str, spec: &AttachSpec) -> Self {
        Self::try_attach(endpoint, spec).await.expect("attach")
    }

    pub async fn send(&self, message: ClientMessage) {
        self.tx
            .as_ref()
            .expect("open")
            .send(request(message))
            .await
            .expect("send");
    }

    pub async fn ack(&self, handles: Vec<String>) {
        self.send(ClientMessage::Ack(Ack {
            ack_handles: handles,
            cumulative: false,
        }))
        .await;
    }

    pub async fn nack(&self, handles: Vec<String>, delay: Option<Duration>, reason: &str) {
        self.send(ClientMessage::Nack(Nack {
            ack_handles: handles,
            delay: delay.map(proto_duration),
            reason: reason.into(),
        }))
        .await;
    }

    pub async fn credit(&self, credits: u32) {
        self.send(ClientMessage::Credit(Credit { credits })).await;
    }

    /// The next message, or None after `timeout`.
    pub async fn next(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<ServerMessage, tonic::Status>> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => None,
            Ok(Ok(Some(r))) => r.response.map(Ok),
            Ok(Ok(None)) => Some(Err(tonic::Status::cancelled("stream ended"))),
            Ok(Err(status)) => Some(Err(status)),
        }
    }

    /// Events until `count` arrived or nothing came for `quiet`.
    pub async fn events(&mut self, count: usize, quiet: Duration) -> Vec<DeliveredEvent> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next(quiet).await {
                Some(Ok(ServerMessage::Events(batch))) => out.extend(batch.events),
                Some(Ok(_)) => {}
                Some(Err(status)) => panic!("stream failed: {status:?}"),
                None => break,
            }
        }
        out
    }

    /// The next non-event message within `timeout`.
    pub async fn status(&mut self, timeout: Duration) -> Option<ServerMessage> {
        loop {
            match self.next(timeout).await? {
                Ok(ServerMessage::Events(_)) => continue,
                Ok(other) => return Some(other),
                Err(status) => panic!("stream failed: {status:?}"),
            }
        }
    }

    /// Half-closes and waits for the server to end the stream, so every
    /// ack sent is applied.
    pub async fn close(mut self) {
        self.tx.take();
        while let Ok(Some(_)) = self.rx.message().await {}
    }
}

pub fn handles(events: &[DeliveredEvent]) -> Vec<String> {
    events.iter().map(|e| e.ack_handle.clone()).collect()
}

/// A subscription's stats from the Admin API.
pub async fn stats(client: &herald_client::Client, topic: &str, name: &str) -> SubscriptionStats {
    client
        .admin()
        .get_subscription_stats(GetSubscriptionStatsRequest {
            topic: topic.into(),
            name: name.into(),
        })
        .await
        .expect("subscription stats")
        .into_inner()
}

/// Polls a subscription's stats until `done` holds (acks are applied
/// asynchronously to the stream that carried them); fails after 10 s.
pub async fn wait_stats(
    client: &herald_client::Client,
    topic: &str,
    name: &str,
    what: &str,
    done: impl Fn(&SubscriptionStats) -> bool,
) -> SubscriptionStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(client, topic, name).await;
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
