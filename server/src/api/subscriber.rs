//! `herald.v1.Subscriber`: reads without a subscription (and, later,
//! subscriptions with acks).

use std::pin::Pin;

use bytes::Bytes;
use herald::v1::{ReadRequest, SubscribeRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ApiContext;
use super::convert::{delivered_event, position};
use super::subscriber_service::subscriber_server::Subscriber;
use super::wire::{ReadReply as ReadResponse, SubscribeReply as SubscribeResponse, WireDelivered};
use crate::broker::reader::{ReadOptions, Reader};
use crate::broker::{BrokerError, Position};
use crate::metrics::connections::StreamKind;
use crate::storage::StoredRecord;

/// Responses of one Read stream buffered ahead of the client; when full, the
/// reader stops reading storage until the client catches up (backpressure).
pub const READ_BUFFER: usize = 8;

/// Bytes kept free in each response for its framing, so a response of
/// events that each fit the message limit never exceeds it.
const RESPONSE_OVERHEAD: usize = 1024;

/// The Subscriber service.
pub struct SubscriberService {
    ctx: ApiContext,
}

impl SubscriberService {
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Subscriber for SubscriberService {
    type ReadStream = Stream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let options = ReadOptions {
            position: position(request.position.as_ref(), Position::Earliest),
            partitions: request.partitions,
            follow: request.follow,
            max_events: request.max_events,
        };
        let reader = self.ctx.broker.read(&request.topic, options)?;
        let (tx, rx) = mpsc::channel(READ_BUFFER);
        let ctx = self.ctx.clone();
        let open = self.ctx.open.stream(StreamKind::Read);
        self.ctx.tasks.spawn(async move {
            let _open = open;
            drive_read(ctx, request.topic, reader, tx).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = Stream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let ctx = self.ctx.clone();
        let open = self.ctx.open.stream(StreamKind::Subscribe);
        let inbound = request.into_inner();
        self.ctx.tasks.spawn(async move {
            let _open = open;
            super::subscribe::drive_subscribe(ctx, inbound, tx).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the reader's batches until it ends, fails, the client goes away or
/// the server shuts down (then the stream ends with UNAVAILABLE).
async fn drive_read(
    ctx: ApiContext,
    topic: String,
    mut reader: Reader,
    tx: mpsc::Sender<Result<ReadResponse, Status>>,
) {
    let max_response_bytes = ctx.broker.config().max_request_bytes;
    let topic_bytes = Bytes::from(topic);
    let end = loop {
        let batch = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break Some(Status::from(BrokerError::ShuttingDown)),
            // A follower may wait a long time for events; stop as soon as
            // nobody is listening.
            _ = tx.closed() => return,
            batch = reader.next_batch() => batch,
        };
        let (partition, records) = match batch {
            None => break None,
            Some(Err(error)) => break Some(error.into()),
            Some(Ok(batch)) => batch,
        };
        for response in responses(&topic_bytes, partition, &records, max_response_bytes) {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::from(BrokerError::ShuttingDown))).await;
                    return;
                }
                sent = tx.send(Ok(response)) => if sent.is_err() {
                    return;
                },
            }
        }
    };
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
}

/// One partition's records as read responses, split so none exceeds the
/// server's message limit.
fn responses(
    topic: &Bytes,
    partition: u32,
    records: &[StoredRecord],
    max_bytes: usize,
) -> Vec<ReadResponse> {
    let events = records
        .iter()
        .map(|record| delivered_event(topic, partition, record, 0, String::new(), 0))
        .collect();
    chunks(events, max_bytes)
        .into_iter()
        .map(|events| ReadResponse { events })
        .collect()
}

/// Splits events into groups whose encoding stays under `max_bytes` (a
/// single event larger than that goes alone).
pub(super) fn chunks(events: Vec<WireDelivered>, max_bytes: usize) -> Vec<Vec<WireDelivered>> {
    let budget = max_bytes.saturating_sub(RESPONSE_OVERHEAD);
    let mut groups = Vec::new();
    let mut group: Vec<WireDelivered> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.encoded_len() + 8;
        if !group.is_empty() && bytes + size > budget {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
        bytes += size;
        group.push(event);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use herald::v1::Event;

    use super::*;

    fn record(offset: u64, data: usize) -> StoredRecord {
        let event = Event {
            id: format!("e{offset}"),
            data: vec![b'x'; data].into(),
            ..Default::default()
        };
        StoredRecord {
            offset,
            timestamp_ms: 1_000,
            id: Bytes::new(),
            payload: event.encode_to_vec().into(),
        }
    }

    #[test]
    fn responses_split_to_stay_under_the_message_limit() {
        let records: Vec<StoredRecord> = (0..10).map(|i| record(i, 1000)).collect();
        let responses = responses(&Bytes::from_static(b"t"), 0, &records, 4096);
        assert!(responses.len() > 1);
        for response in &responses {
            assert!(response.encoded_len() <= 4096, "{}", response.encoded_len());
        }
        let offsets: Vec<u64> = responses
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.offset))
            .collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        let first = &responses[0].events[0];
        assert_eq!((first.delivery_attempt, first.ack_handle.as_str()), (0, ""));
    }

    /// The stored bytes go out as they are, and a client decoding the
    /// generated `ReadResponse` gets the event that was stored.
    #[test]
    fn stored_events_are_delivered_as_the_generated_type_decodes_them() {
        let records = [record(5, 3), record(6, 0)];
        let [response] = &responses(&Bytes::from_static(b"orders"), 2, &records, 1 << 20)[..]
        else {
            panic!("one response")
        };
        let decoded = herald::v1::ReadResponse::decode(&response.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.events.len(), 2);
        for (got, record) in decoded.events.iter().zip(&records) {
            assert_eq!(
                got.event,
                Some(Event::decode(record.payload.clone()).unwrap())
            );
            assert_eq!((got.topic.as_str(), got.partition), ("orders", 2));
            assert_eq!(got.offset, record.offset);
            assert_eq!(got.publish_time.unwrap().seconds, 1);
        }
    }
}
