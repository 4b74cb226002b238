//! The producer's wire path: events encoded once, by the caller, straight
//! into the bytes of `PublishStreamRequest.events`, and a tonic codec that
//! writes those bytes as they are.
//!
//! Building a `v1::Event` per publish costs six owned strings and a second
//! pass when tonic encodes the request; writing the fields directly costs
//! neither, and the encoded bytes double as the copy kept for resending
//! after a broken stream. The layout is `herald.v1.Event` field for field
//! (`proto/herald/v1/event.proto`); the tests decode it with prost to prove
//! it.

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use herald::v1::PublishStreamResponse;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::event::{CONTENT_TYPE_PROTOBUF, to_timestamp};

/// `PublishStreamRequest.events`.
const REQUEST_EVENTS: u32 = 3;

use herald::event_field as tag;

/// The envelope fields of one event (the payload is passed separately).
pub(crate) struct EventFields<'a> {
    /// Caller-chosen id; `None`: a new UUIDv7.
    pub id: Option<&'a str>,
    pub source: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    pub time: SystemTime,
    pub data_schema: &'a str,
    /// `traceparent`/`tracestate`.
    pub trace: &'a [(&'static str, String)],
    /// Other extension attributes.
    pub attributes: &'a [(String, String)],
    pub key: Option<String>,
}

/// Events encoded as repeated field 3 of `PublishStreamRequest`.
pub(crate) struct EncodedEvents {
    /// The encoding, growing while events are pushed.
    buf: BytesMut,
    /// Frozen once, when first sent.
    frozen: Option<Bytes>,
    /// How many events.
    count: usize,
}

impl EncodedEvents {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        EncodedEvents {
            buf: BytesMut::with_capacity(bytes),
            frozen: None,
            count: 0,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Appends one event with `data` = the encoding of `payload`.
    pub(crate) fn push(&mut self, fields: &EventFields<'_>, payload: &impl Message) {
        let mut id_buf = uuid::Uuid::encode_buffer();
        let id = match fields.id {
            Some(id) => id,
            None => uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id_buf),
        };
        let time = to_timestamp(fields.time);
        let key = fields.key.as_deref().unwrap_or("");
        let attributes = fields.trace.iter().map(|(k, v)| (*k, v.as_str())).chain(
            fields
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );

        let body_len = str_len(tag::ID, id)
            + str_len(tag::SOURCE, fields.source)
            + str_len(tag::TYPE, fields.event_type)
            + str_len(tag::SUBJECT, fields.subject)
            + prost::encoding::message::encoded_len(tag::TIME, &time)
            + str_len(tag::DATA_CONTENT_TYPE, CONTENT_TYPE_PROTOBUF)
            + str_len(tag::DATA_SCHEMA, fields.data_schema)
            + attributes
                .clone()
                .map(|(k, v)| nested_len(tag::ATTRIBUTES, entry_len(k, v)))
                .sum::<usize>()
            + str_len(tag::KEY, key)
            + nested_len(tag::DATA, payload.encoded_len());

        let buf = &mut self.buf;
        buf.reserve(nested_len(REQUEST_EVENTS, body_len));
        encode_key(REQUEST_EVENTS, WireType::LengthDelimited, buf);
        encode_varint(body_len as u64, buf);
        put_str(tag::ID, id, buf);
        put_str(tag::SOURCE, fields.source, buf);
        put_str(tag::TYPE, fields.event_type, buf);
        put_str(tag::SUBJECT, fields.subject, buf);
        prost::encoding::message::encode(tag::TIME, &time, buf);
        put_str(tag::DATA_CONTENT_TYPE, CONTENT_TYPE_PROTOBUF, buf);
        put_str(tag::DATA_SCHEMA, fields.data_schema, buf);
        for (k, v) in attributes {
            encode_key(tag::ATTRIBUTES, WireType::LengthDelimited, buf);
            encode_varint(entry_len(k, v) as u64, buf);
            put_str(1, k, buf);
            put_str(2, v, buf);
        }
        put_str(tag::KEY, key, buf);
        // `bytes data` holding an encoded message is, on the wire, the same
        // as the message embedded at that field number.
        prost::encoding::message::encode(tag::DATA, payload, buf);
        self.count += 1;
    }

    /// The encoding, cheap to clone.
    pub(crate) fn bytes(&mut self) -> Bytes {
        if let Some(bytes) = &self.frozen {
            return bytes.clone();
        }
        let bytes = std::mem::take(&mut self.buf).freeze();
        self.frozen = Some(bytes.clone());
        bytes
    }
}

/// Length of a non-empty string field (proto3 omits empty ones).
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        nested_len(tag, s.len())
    }
}

/// Length of a length-delimited field whose content is `len` bytes.
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a `map<string, string>` entry's content.
fn entry_len(k: &str, v: &str) -> usize {
    str_len(1, k) + str_len(2, v)
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if s.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.put_slice(s.as_bytes());
}

/// A `PublishStreamRequest` whose events are already encoded.
pub(crate) struct WireRequest {
    /// Fields 1 and 2 (sequence, topic), encoded.
    head: Bytes,
    /// Field 3, one chunk per call.
    chunks: Vec<Bytes>,
}

impl WireRequest {
    pub(crate) fn new(sequence: u64, topic: &str, chunks: Vec<Bytes>) -> Self {
        let mut head = BytesMut::with_capacity(16 + topic.len());
        if sequence != 0 {
            encode_key(1, WireType::Varint, &mut head);
            encode_varint(sequence, &mut head);
        }
        put_str(2, topic, &mut head);
        WireRequest {
            head: head.freeze(),
            chunks,
        }
    }

    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = self.head.to_vec();
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// `Publisher/PublishStream` with pre-encoded requests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PublishStreamCodec;

impl PublishStreamCodec {
    /// Opens the stream on the client's channel.
    pub(crate) async fn open(
        client: &crate::Client,
        requests: impl tokio_stream::Stream<Item = WireRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<PublishStreamResponse>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(client.channel())
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the server is not reachable: {e}")))?;
        let mut request = tonic::Request::new(requests);
        request.extensions_mut().insert(tonic::GrpcMethod::new(
            "herald.v1.Publisher",
            "PublishStream",
        ));
        let path = PathAndQuery::from_static("/herald.v1.Publisher/PublishStream");
        Ok(grpc
            .streaming(request, path, PublishStreamCodec)
            .await?
            .into_inner())
    }
}

impl Codec for PublishStreamCodec {
    type Encode = WireRequest;
    type Decode = PublishStreamResponse;
    type Encoder = WireEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

/// Writes a [`WireRequest`]'s bytes.
#[derive(Debug)]
pub(crate) struct WireEncoder;

impl Encoder for WireEncoder {
    type Item = WireRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: WireRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item.head);
        for chunk in &item.chunks {
            dst.put_slice(chunk);
        }
        Ok(())
    }
}

/// Decodes `PublishStreamResponse` with prost.
#[derive(Debug)]
pub(crate) struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = PublishStreamResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        PublishStreamResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable publish response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use herald::v1::{Event, PublishStreamRequest};
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Payload {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(uint64, tag = "2")]
        n: u64,
    }

    fn encode_one(fields: &EventFields<'_>, payload: &Payload) -> Vec<u8> {
        let mut encoded = EncodedEvents::with_capacity(0);
        encoded.push(fields, payload);
        WireRequest::new(7, "orders", vec![encoded.bytes()]).to_vec()
    }

    proptest! {
        /// Whatever the field values, prost decodes exactly the event the
        /// fields describe.
        #[test]
        fn hand_encoding_decodes_as_the_event(
            id in proptest::option::of("[a-z0-9-]{0,40}"),
            source in ".{0,20}",
            subject in ".{0,10}",
            key in proptest::option::of(".{0,10}"),
            secs in 0u64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            attributes in proptest::collection::vec(("[a-z]{1,8}", ".{0,12}"), 0..4),
            text in ".{0,300}",
            n in any::<u64>(),
            sequence in any::<u64>(),
        ) {
            let trace = vec![("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())];
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            let fields = EventFields {
                id: id.as_deref(),
                source: &source,
                event_type: "com.example.t",
                subject: &subject,
                time,
                data_schema: "acme.Payload",
                trace: &trace,
                attributes: &attributes,
                key: key.clone(),
            };
            let payload = Payload { text, n };
            let mut encoded = EncodedEvents::with_capacity(0);
            encoded.push(&fields, &payload);
            encoded.push(&fields, &payload);
            prop_assert_eq!(encoded.count(), 2);
            let bytes = WireRequest::new(sequence, "orders", vec![encoded.bytes()]).to_vec();
            let request = PublishStreamRequest::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(request.sequence, sequence);
            prop_assert_eq!(&request.topic, "orders");
            prop_assert_eq!(request.events.len(), 2);
            let event: &Event = &request.events[0];
            match &id {
                Some(id) => prop_assert_eq!(&event.id, id),
                None => prop_assert_eq!(uuid::Uuid::parse_str(&event.id).unwrap().get_version_num(), 7),
            }
            prop_assert_eq!(&event.source, &source);
            prop_assert_eq!(&event.r#type, "com.example.t");
            prop_assert_eq!(&event.subject, &subject);
            prop_assert_eq!(event.time, Some(to_timestamp(time)));
            prop_assert_eq!(&event.data_content_type, CONTENT_TYPE_PROTOBUF);
            prop_assert_eq!(&event.data_schema, "acme.Payload");
            prop_assert_eq!(&event.key, &key.unwrap_or_default());
            let mut expected: std::collections::HashMap<String, String> = attributes.into_iter().collect();
            expected.insert("traceparent".into(), trace[0].1.clone());
            prop_assert_eq!(&event.attributes, &expected);
            prop_assert_eq!(Payload::decode(event.data.as_ref()).unwrap(), payload);
        }
    }

    #[test]
    fn chunks_of_several_calls_make_one_request() {
        let with_id = |id| EventFields {
            id: Some(id),
            ..fields_ref()
        };
        let one = encode_one(
            &with_id("a"),
            &Payload {
                text: "x".into(),
                n: 1,
            },
        );
        let request = PublishStreamRequest::decode(one.as_slice()).unwrap();
        assert_eq!(request.sequence, 7);
        assert_eq!(request.events.len(), 1);
        assert_eq!(request.events[0].id, "a");

        let mut first = EncodedEvents::with_capacity(0);
        first.push(&with_id("a"), &Payload::default());
        let mut second = EncodedEvents::with_capacity(0);
        second.push(&with_id("b"), &Payload::default());
        second.push(&with_id("c"), &Payload::default());
        let bytes = WireRequest::new(0, "t", vec![first.bytes(), second.bytes()]).to_vec();
        let ids: Vec<String> = PublishStreamRequest::decode(bytes.as_slice())
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    fn fields_ref() -> EventFields<'static> {
        EventFields {
            id: None,
            source: "/s",
            event_type: "t",
            subject: "",
            time: UNIX_EPOCH,
            data_schema: "acme.Payload",
            trace: &[],
            attributes: &[],
            key: None,
        }
    }
}
