//! The messages of the event paths as the server reads and writes them, on
//! the wire exactly `herald.v1.PublishStreamRequest`, `PublishStreamResponse`,
//! `SubscribeResponse` and `ReadResponse`.
//!
//! The request keeps each event as the bytes the producer sent (a
//! `repeated bytes` field has the same wire form as a repeated message, and
//! prost slices it out of tonic's buffer without copying); the broker checks
//! them in place ([`crate::broker::EncodedEvent`]). The response is encoded
//! straight from the broker's receipts instead of through a
//! `v1::PublishResult` per event with its own id `String`. Together these
//! take every per-event allocation of the generated types off the hottest
//! path. Deliveries likewise carry the stored event bytes as they are
//! (`bytes event = 1` is written exactly like `Event event = 1`) instead of
//! decoding each stored event and encoding it again. `build.rs` generates
//! the services with these types.

use bytes::{Buf, BufMut, Bytes};
use herald::v1::{AckResult, ActiveStatus, Attached, ErrorDetail, FlowStatus};
use prost::encoding::{
    self, DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};

use crate::broker::PublishReceipt;

/// `herald.v1.PublishStreamRequest`, events undecoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishStreamFrame {
    /// Chosen by the client, echoed in the response; use increasing numbers.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    /// Target topic. Created on first publish when the server allows it.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Each a `herald.v1.Event` message as sent.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub events: Vec<Bytes>,
}

/// `herald.v1.DeliveredEvent` with the event as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireDelivered {
    /// A `herald.v1.Event` message, checked when it was published. Never
    /// empty: every stored event has an id.
    #[prost(bytes = "bytes", tag = "1")]
    pub event: Bytes,
    /// UTF-8; shared by every delivery of a topic instead of a `String` each.
    #[prost(bytes = "bytes", tag = "2")]
    pub topic: Bytes,
    /// The partition the event is in.
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    /// The event's offset in its partition.
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    /// When the broker stored it.
    #[prost(message, optional, tag = "5")]
    pub publish_time: Option<prost_types::Timestamp>,
    /// 1 on first delivery; 0 for reads.
    #[prost(uint32, tag = "6")]
    pub delivery_attempt: u32,
    /// Names this delivery in Ack/Nack/ExtendDeadline; empty for reads.
    #[prost(string, tag = "7")]
    pub ack_handle: String,
    /// Failover: the epoch of the active role this delivery was made under.
    #[prost(uint64, tag = "8")]
    pub epoch: u64,
}

/// `herald.v1.EventBatch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEventBatch {
    /// The delivered events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<WireDelivered>,
}

/// `herald.v1.ReadResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadReply {
    /// The events read.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<WireDelivered>,
}

/// `herald.v1.SubscribeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeReply {
    /// What the server sends.
    #[prost(oneof = "subscribe_reply::Response", tags = "1, 2, 3, 4, 5, 6")]
    pub response: Option<subscribe_reply::Response>,
}

/// The `response` oneof of [`SubscribeReply`].
pub mod subscribe_reply {
    use super::*;

    /// `herald.v1.SubscribeResponse.response`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        /// The attach succeeded.
        #[prost(message, tag = "1")]
        Attached(Attached),
        /// Events delivered to this consumer.
        #[prost(message, tag = "2")]
        Events(WireEventBatch),
        /// Failover: whether this consumer is active, and who is.
        #[prost(message, tag = "3")]
        ActiveStatus(ActiveStatus),
        /// Delivery is held back; the consumer is not forgotten.
        #[prost(message, tag = "4")]
        FlowStatus(FlowStatus),
        /// Handles an Ack, Nack or ExtendDeadline named that could not be
        /// applied.
        #[prost(message, tag = "5")]
        AckResult(AckResult),
        /// A request failed without ending the stream.
        #[prost(message, tag = "6")]
        Error(ErrorDetail),
    }
}

/// `herald.v1.PublishStreamResponse`, encoded from receipts. Only ever
/// encoded; decoding one skips every field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishStreamReply {
    /// The request this answers.
    pub sequence: u64,
    /// Set when the batch was stored.
    pub results: Vec<PublishReceipt>,
    /// Set when the batch was refused or failed; nothing of it was stored.
    pub error: Option<ErrorDetail>,
}

/// `PublishStreamResponse` fields.
const SEQUENCE: u32 = 1;
const RESULTS: u32 = 2;
const ERROR: u32 = 3;

/// `PublishResult` fields.
mod result {
    pub(super) const ID: u32 = 1;
    pub(super) const PARTITION: u32 = 2;
    pub(super) const OFFSET: u32 = 3;
    pub(super) const DUPLICATE: u32 = 4;
    pub(super) const PUBLISH_TIME: u32 = 5;
}

/// A `publish_time` as encoded. Receipts of one batch share their
/// millisecond, so it is worked out once per run of equal times rather than
/// per result.
#[derive(Clone, Copy)]
struct PublishTime {
    ms: i64,
    seconds: i64,
    nanos: i32,
    /// Encoded length of the Timestamp message.
    len: usize,
}

impl PublishTime {
    fn of(ms: i64) -> Self {
        let (seconds, nanos) = (
            ms.div_euclid(1000),
            (ms.rem_euclid(1000) * 1_000_000) as i32,
        );
        let mut len = 0;
        if seconds != 0 {
            len += key_len(1) + encoded_len_varint(seconds as u64);
        }
        if nanos != 0 {
            len += key_len(2) + encoded_len_varint(nanos as i64 as u64);
        }
        PublishTime {
            ms,
            seconds,
            nanos,
            len,
        }
    }

    /// `self` if it is `ms`'s, else `ms`'s.
    fn at(self, ms: i64) -> Self {
        if self.ms == ms { self } else { Self::of(ms) }
    }
}

fn result_len(r: &PublishReceipt, time: &PublishTime) -> usize {
    let mut len = 0;
    if !r.id.is_empty() {
        len += key_len(result::ID) + encoded_len_varint(r.id.len() as u64) + r.id.len();
    }
    if r.partition != 0 {
        len += key_len(result::PARTITION) + encoded_len_varint(u64::from(r.partition));
    }
    if r.offset != 0 {
        len += key_len(result::OFFSET) + encoded_len_varint(r.offset);
    }
    if r.duplicate {
        len += key_len(result::DUPLICATE) + 1;
    }
    len + key_len(result::PUBLISH_TIME) + encoded_len_varint(time.len as u64) + time.len
}

fn encode_result(r: &PublishReceipt, time: &PublishTime, buf: &mut impl BufMut) {
    if !r.id.is_empty() {
        encode_key(result::ID, WireType::LengthDelimited, buf);
        encode_varint(r.id.len() as u64, buf);
        buf.put_slice(r.id.as_bytes());
    }
    if r.partition != 0 {
        encode_key(result::PARTITION, WireType::Varint, buf);
        encode_varint(u64::from(r.partition), buf);
    }
    if r.offset != 0 {
        encode_key(result::OFFSET, WireType::Varint, buf);
        encode_varint(r.offset, buf);
    }
    if r.duplicate {
        encode_key(result::DUPLICATE, WireType::Varint, buf);
        buf.put_u8(1);
    }
    encode_key(result::PUBLISH_TIME, WireType::LengthDelimited, buf);
    encode_varint(time.len as u64, buf);
    if time.seconds != 0 {
        encode_key(1, WireType::Varint, buf);
        encode_varint(time.seconds as u64, buf);
    }
    if time.nanos != 0 {
        encode_key(2, WireType::Varint, buf);
        encode_varint(time.nanos as i64 as u64, buf);
    }
}

impl prost::Message for PublishStreamReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.sequence != 0 {
            encoding::uint64::encode(SEQUENCE, &self.sequence, buf);
        }
        let mut time = PublishTime::of(0);
        for r in &self.results {
            time = time.at(r.publish_time_ms);
            encode_key(RESULTS, WireType::LengthDelimited, buf);
            encode_varint(result_len(r, &time) as u64, buf);
            encode_result(r, &time, buf);
        }
        if let Some(error) = &self.error {
            encoding::message::encode(ERROR, error, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.sequence != 0 {
            len += encoding::uint64::encoded_len(SEQUENCE, &self.sequence);
        }
        let mut time = PublishTime::of(0);
        for r in &self.results {
            time = time.at(r.publish_time_ms);
            let n = result_len(r, &time);
            len += key_len(RESULTS) + encoded_len_varint(n as u64) + n;
        }
        if let Some(error) = &self.error {
            len += encoding::message::encoded_len(ERROR, error);
        }
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Bytes kept free in each response for its framing, so a response of
/// events that each fit the message limit never exceeds it.
const RESPONSE_OVERHEAD: usize = 1024;

/// Splits events into groups whose encoding stays under `max_bytes` (a
/// single event larger than that goes alone).
pub fn chunks(events: Vec<WireDelivered>, max_bytes: usize) -> Vec<Vec<WireDelivered>> {
    let budget = max_bytes.saturating_sub(RESPONSE_OVERHEAD);
    let mut groups = Vec::new();
    let mut group: Vec<WireDelivered> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = prost::Message::encoded_len(&event) + 8;
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
    use super::*;
    use crate::api::convert::publish_results;
    use crate::broker::EncodedEvent;
    use herald::v1::{Event, PublishStreamRequest, PublishStreamResponse};
    use proptest::prelude::*;
    use prost::Message;

    fn receipts(ids: &[String], partition: u32, offset: u64, ms: i64) -> Vec<PublishReceipt> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| PublishReceipt {
                id: id.clone().into(),
                partition,
                offset: offset + i as u64,
                duplicate: i % 2 == 1,
                // runs of equal times, then a change
                publish_time_ms: ms + (i as i64 / 2) * 999,
            })
            .collect()
    }

    proptest! {
        /// The hand encoding decodes, with prost's generated type, to what
        /// the generated encoding of the same receipts would.
        #[test]
        fn reply_decodes_as_the_generated_response(
            sequence in any::<u64>(),
            ids in proptest::collection::vec("[a-z0-9-]{0,40}", 0..5),
            partition in any::<u32>(),
            offset in 0u64..u64::MAX / 2,
            ms in -10_000_000_000_000i64..10_000_000_000_000,
        ) {
            let results = receipts(&ids, partition, offset, ms);
            let reply = PublishStreamReply { sequence, results: results.clone(), error: None };
            let bytes = reply.encode_to_vec();
            prop_assert_eq!(bytes.len(), reply.encoded_len());
            let generated = PublishStreamResponse {
                sequence,
                results: publish_results(results),
                error: None,
            };
            prop_assert_eq!(PublishStreamResponse::decode(&bytes[..]).unwrap(), generated.clone());
            prop_assert_eq!(bytes, generated.encode_to_vec());
        }
    }

    #[test]
    fn reply_with_an_error_decodes() {
        let error = ErrorDetail {
            code: 3,
            message: "nope".into(),
            ..ErrorDetail::default()
        };
        let reply = PublishStreamReply {
            sequence: 7,
            results: Vec::new(),
            error: Some(error.clone()),
        };
        let decoded = PublishStreamResponse::decode(&reply.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.sequence, 7);
        assert_eq!(decoded.error, Some(error));
    }

    #[test]
    fn frame_keeps_the_events_as_sent() {
        let events = vec![
            Event {
                id: "a".into(),
                data: Bytes::from_static(b"one"),
                ..Event::default()
            },
            Event {
                r#type: "t".into(),
                ..Event::default()
            },
        ];
        let request = PublishStreamRequest {
            sequence: 3,
            topic: "orders".into(),
            events: events.clone(),
        };
        let frame = PublishStreamFrame::decode(&request.encode_to_vec()[..]).unwrap();
        assert_eq!((frame.sequence, frame.topic.as_str()), (3, "orders"));
        let parsed: Vec<Event> = frame
            .events
            .into_iter()
            .map(|b| EncodedEvent::parse(b).unwrap().decode())
            .collect();
        assert_eq!(parsed, events);
    }
}
