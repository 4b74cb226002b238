//! `Subscriber.Subscribe`: one bidirectional stream per consumer. The first
//! message attaches; then acks, nacks, deadline extensions and credits flow
//! in while deliveries and status flow out.

use std::time::Duration;

use bytes::Bytes;
use herald::v1::subscribe_request::Request as ClientMessage;
use herald::v1::{
    AckResult, ActiveStatus, Attach, Attached, ErrorCode, FlowStatus, SubscribeRequest, flow_status,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::ApiContext;
use super::convert::{delivered_event, subscription_kind_to_proto, subscription_spec};
use super::limits;
use super::status::{inline_error, invalid_request, protocol_violation};
use super::wire::subscribe_reply::Response as ServerMessage;
use super::wire::{SubscribeReply as SubscribeResponse, WireEventBatch as EventBatch, chunks};
use crate::broker::subscription::{AttachOptions, Consumer, ConsumerEvent, HeldReason};
use crate::broker::{BrokerError, Position};

type Outbound = mpsc::Sender<Result<SubscribeResponse, Status>>;

fn response(message: ServerMessage) -> Result<SubscribeResponse, Status> {
    Ok(SubscribeResponse {
        response: Some(message),
    })
}

/// Runs one consumer's stream to its end.
pub(super) async fn drive_subscribe(
    ctx: ApiContext,
    mut inbound: Streaming<SubscribeRequest>,
    tx: Outbound,
) {
    let first = tokio::select! {
        first = inbound.message() => first,
        _ = ctx.shutdown.cancelled() => {
            let _ = tx.send(Err(Status::from(BrokerError::ShuttingDown))).await;
            return;
        }
    };
    let attach = match first {
        Ok(Some(SubscribeRequest {
            request: Some(ClientMessage::Attach(attach)),
        })) => attach,
        Ok(Some(_)) => {
            let status =
                protocol_violation("the first message of a Subscribe stream must be an Attach");
            let _ = tx.send(Err(status)).await;
            return;
        }
        Ok(None) => return,
        Err(status) => {
            refuse_inbound(&ctx, status, &tx).await;
            return;
        }
    };
    let mut consumer = match attach_consumer(&ctx, &attach).await {
        Ok(consumer) => consumer,
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let attached = Attached {
        consumer_name: consumer.attached.consumer_name.clone(),
        r#type: subscription_kind_to_proto(consumer.attached.kind) as i32,
        partitions: consumer.attached.partitions,
    };
    tracing::info!(topic = %attach.topic, subscription = %attach.subscription, consumer = %attached.consumer_name, "consumer attached");
    if tx
        .send(response(ServerMessage::Attached(attached)))
        .await
        .is_err()
    {
        return;
    }
    let max_bytes = ctx.broker.config().max_request_bytes;
    let topic = Bytes::from(attach.topic.clone());
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => {
                let _ = tx.send(Err(Status::from(BrokerError::ShuttingDown))).await;
                return;
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    if let Err(status) = handle_request(&consumer, request, &tx).await {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                // Half-closed: every ack sent so far is queued before the
                // detach (dropping the consumer), so none is lost.
                Ok(None) => return,
                Err(status) => {
                    refuse_inbound(&ctx, status, &tx).await;
                    return;
                }
            },
            event = consumer.events.recv() => {
                let Some(event) = event else { return };
                match deliver(&topic, event, max_bytes) {
                    Ok(responses) => {
                        for r in responses {
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Ends the stream after a broken inbound message: with Herald's status
/// when tonic refused the message (undecodable, oversize), quietly when the
/// client went away (the status would reach nobody).
async fn refuse_inbound(ctx: &ApiContext, status: Status, tx: &Outbound) {
    let max = ctx.broker.config().max_request_bytes;
    if limits::is_tonic_too_large(&status) || limits::is_tonic_undecodable(&status) {
        let _ = tx.send(Err(limits::inbound_refusal(status, max))).await;
    }
}

async fn attach_consumer(ctx: &ApiContext, attach: &Attach) -> Result<Consumer, Status> {
    if attach.topic.is_empty() {
        return Err(invalid_request("Attach needs a topic"));
    }
    let spec = subscription_spec(
        attach.r#type,
        attach.initial_position.as_ref(),
        Position::Latest,
        attach.ack_deadline.as_ref(),
        attach.redelivery.as_ref(),
    )?;
    let options = AttachOptions {
        consumer_name: attach.consumer_name.clone(),
        priority: attach.priority,
        credits: u64::from(attach.initial_credits),
    };
    ctx.broker
        .attach(&attach.topic, &attach.subscription, &spec, options)
        .await
        .map_err(Status::from)
}

fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

/// Applies one client message; an error status ends the stream.
async fn handle_request(
    consumer: &Consumer,
    request: SubscribeRequest,
    tx: &Outbound,
) -> Result<(), Status> {
    let closed = Status::from;
    match request.request {
        Some(ClientMessage::Ack(ack)) => consumer
            .ack(ack.ack_handles, ack.cumulative)
            .await
            .map_err(closed),
        Some(ClientMessage::Nack(nack)) => consumer
            .nack(nack.ack_handles, duration(nack.delay.as_ref()), nack.reason)
            .await
            .map_err(closed),
        Some(ClientMessage::ExtendDeadline(extend)) => match duration(extend.extension.as_ref()) {
            Some(extension) if !extension.is_zero() => consumer
                .extend(extend.ack_handles, extension)
                .await
                .map_err(closed),
            _ => {
                let message = "ExtendDeadline needs a positive extension";
                let _ = tx
                    .send(Ok(inline_error(ErrorCode::InvalidRequest, message)))
                    .await;
                Ok(())
            }
        },
        Some(ClientMessage::Credit(credit)) if credit.credits == 0 => {
            let message = "Credit must grant at least one credit";
            let _ = tx
                .send(Ok(inline_error(ErrorCode::InvalidCredits, message)))
                .await;
            Ok(())
        }
        Some(ClientMessage::Credit(credit)) => consumer
            .credit(u64::from(credit.credits))
            .await
            .map_err(closed),
        Some(ClientMessage::Attach(_)) => Err(protocol_violation(
            "this stream is already attached; open a new Subscribe stream for another consumer",
        )),
        None => {
            let message =
                "empty SubscribeRequest: set one of attach, ack, nack, extend_deadline or credit";
            let _ = tx
                .send(Ok(inline_error(ErrorCode::InvalidRequest, message)))
                .await;
            Ok(())
        }
    }
}

/// A subscription event as stream responses.
fn deliver(
    topic: &Bytes,
    event: ConsumerEvent,
    max_bytes: usize,
) -> Result<Vec<Result<SubscribeResponse, Status>>, Status> {
    Ok(match event {
        ConsumerEvent::Events(records) => {
            let events = records
                .into_iter()
                .map(|d| {
                    delivered_event(topic, d.partition, &d.record, d.attempt, d.handle, d.epoch)
                })
                .collect();
            chunks(events, max_bytes)
                .into_iter()
                .map(|events| response(ServerMessage::Events(EventBatch { events })))
                .collect()
        }
        ConsumerEvent::ActiveStatus {
            active,
            active_consumer,
            epoch,
            partitions,
        } => vec![response(ServerMessage::ActiveStatus(ActiveStatus {
            active,
            active_consumer,
            epoch,
            partitions,
        }))],
        ConsumerEvent::Held {
            reason,
            outstanding,
            credits,
        } => vec![response(ServerMessage::FlowStatus(FlowStatus {
            reason: match reason {
                HeldReason::NoCredits => flow_status::Reason::NoCredits,
                HeldReason::UnackedLimit => flow_status::Reason::UnackedLimit,
            } as i32,
            outstanding: outstanding.min(u64::from(u32::MAX)) as u32,
            credits: credits.min(u64::from(u32::MAX)) as u32,
        }))],
        ConsumerEvent::AckResult { invalid, stale } => {
            vec![response(ServerMessage::AckResult(AckResult {
                invalid_handles: invalid,
                stale_handles: stale,
            }))]
        }
        ConsumerEvent::Closed(error) => return Err(error.into()),
    })
}
