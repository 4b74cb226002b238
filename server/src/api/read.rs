//! `Subscriber.Read`: a stream of stored events from a position, without a
//! subscription, in batches that respect the message limit and with
//! backpressure from the client.

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use super::ApiContext;
use super::convert::delivered_event;
use super::wire::{ReadReply as ReadResponse, chunks};
use crate::broker::reader::Reader;
use crate::broker::{BrokerError, StoredEvent};

/// Responses of one Read stream buffered ahead of the client; when full, the
/// reader stops reading storage until the client catches up (backpressure).
pub(crate) const READ_BUFFER: usize = 8;

/// Sends the reader's batches until it ends, fails, the client goes away or
/// the server shuts down (then the stream ends with UNAVAILABLE).
pub(super) async fn drive_read(
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
    records: &[StoredEvent],
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

#[cfg(test)]
mod tests {
    use herald::v1::Event;
    use prost::Message;

    use super::*;

    fn record(offset: u64, data: usize) -> StoredEvent {
        let event = Event {
            id: format!("e{offset}"),
            data: vec![b'x'; data].into(),
            ..Default::default()
        };
        StoredEvent {
            offset,
            publish_time_ms: 1_000,
            bytes: event.encode_to_vec().into(),
        }
    }

    #[test]
    fn responses_split_to_stay_under_the_message_limit() {
        let records: Vec<StoredEvent> = (0..10).map(|i| record(i, 1000)).collect();
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
                Some(Event::decode(record.bytes.clone()).unwrap())
            );
            assert_eq!((got.topic.as_str(), got.partition), ("orders", 2));
            assert_eq!(got.offset, record.offset);
            assert_eq!(got.publish_time.unwrap().seconds, 1);
        }
    }
}
