//! `herald.v1.Publisher`: unary and pipelined publishing.

use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use herald::v1::{PublishRequest, PublishResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::publish_results;
use super::publisher_service::publisher_server::Publisher;
use super::status::to_detail;
use super::wire::{PublishStreamFrame, PublishStreamReply};
use super::{ApiContext, limits};
use crate::broker::{BrokerError, EncodedEvent};
use crate::metrics::connections::StreamKind;

/// Most batches of one PublishStream being stored at once; the server stops
/// reading the stream while this many are in flight (backpressure).
pub(crate) const MAX_IN_FLIGHT_PER_STREAM: usize = 1024;

/// The Publisher service.
pub(crate) struct PublisherService {
    ctx: ApiContext,
}

impl PublisherService {
    pub(crate) fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

type ResponseStream =
    Pin<Box<dyn futures::Stream<Item = Result<PublishStreamReply, Status>> + Send>>;

#[tonic::async_trait]
impl Publisher for PublisherService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let PublishRequest { topic, events } = request.into_inner();
        let receipts = self.ctx.broker.publish(&topic, events).await?;
        Ok(Response::new(PublishResponse {
            results: publish_results(receipts),
        }))
    }

    type PublishStreamStream = ResponseStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamFrame>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
        let ctx = self.ctx.clone();
        let open = self.ctx.open.stream(StreamKind::Publish);
        self.ctx.tasks.spawn(async move {
            let _open = open;
            drive_publish_stream(ctx, inbound, tx).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads requests in order, submits each to the broker in that order (so
/// batches to one partition are stored as sent), and answers each as soon as
/// it is stored. On shutdown it stops reading, answers what is in flight and
/// ends the stream with UNAVAILABLE.
async fn drive_publish_stream(
    ctx: ApiContext,
    mut inbound: Streaming<PublishStreamFrame>,
    tx: mpsc::Sender<Result<PublishStreamReply, Status>>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            biased;
            Some((sequence, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                if tx.send(Ok(stream_response(sequence, outcome))).await.is_err() {
                    return;
                }
            }
            _ = ctx.shutdown.cancelled(), if reading => {
                reading = false;
                shutting_down = true;
            }
            message = inbound.message(), if reading && in_flight.len() < MAX_IN_FLIGHT_PER_STREAM => {
                match message {
                    Ok(Some(request)) => {
                        let sequence = request.sequence;
                        let submitted = match parse_events(request.events) {
                            Ok(events) => ctx.broker.submit(&request.topic, events).await,
                            Err(error) => Err(error),
                        };
                        match submitted {
                            Ok(pending) => in_flight.push(async move { (sequence, pending.wait().await) }),
                            Err(error) => {
                                if tx.send(Ok(stream_response(sequence, Err(error)))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Ok(None) => reading = false,
                    Err(status) => {
                        // The client's side broke (reset, oversize message);
                        // finish what was accepted, then report it.
                        while let Some((sequence, outcome)) = in_flight.next().await {
                            let _ = tx.send(Ok(stream_response(sequence, outcome))).await;
                        }
                        let status = limits::inbound_refusal(status, ctx.broker.config().max_request_bytes);
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
            else => break,
        }
    }
    if shutting_down {
        let _ = tx
            .send(Err(Status::from(crate::broker::BrokerError::ShuttingDown)))
            .await;
    }
}

/// Checks each event of a request as sent; the first malformed one refuses
/// the whole request.
fn parse_events(events: Vec<bytes::Bytes>) -> Result<Vec<EncodedEvent>, BrokerError> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            EncodedEvent::parse(bytes).map_err(|e| BrokerError::InvalidEvent {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The answer to one PublishStream request.
fn stream_response(
    sequence: u64,
    outcome: Result<Vec<crate::broker::PublishReceipt>, BrokerError>,
) -> PublishStreamReply {
    match outcome {
        Ok(receipts) => PublishStreamReply {
            sequence,
            results: receipts,
            error: None,
        },
        Err(error) => PublishStreamReply {
            sequence,
            results: Vec::new(),
            error: Some(to_detail(&error)),
        },
    }
}
