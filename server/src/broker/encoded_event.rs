//! Events as the producer encoded them: the broker checks a
//! `herald.v1.Event` message in place and stores the bytes it received.
//!
//! Decoding a publish into `v1::Event`s costs an allocation per string field,
//! and storing it a second encoding; the broker needs only the id, the key,
//! the type (for logs) and, when traces are exported, the attributes. So it
//! walks the message once, checking it exactly as a decoder would (wire
//! types, lengths, UTF-8 of every string, the nested timestamp and map
//! entries) so that nothing stored can fail to decode later, and remembers
//! where those fields are. An id the broker assigns is appended as one more
//! `id` field: in Protobuf the last occurrence of a field wins, so the stored
//! bytes decode to the event with that id.

use std::collections::HashMap;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use herald::v1::Event;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use herald::event_field as tag;

/// Bytes of an appended broker id field: key, length, 36-character UUID.
pub(crate) const ASSIGNED_ID_FIELD_LEN: usize = 2 + UUID_LEN;
const UUID_LEN: usize = 36;

/// One event's encoding, checked, with the positions of the fields the
/// broker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    bytes: Bytes,
    id: Range<usize>,
    key: Range<usize>,
    event_type: Range<usize>,
    data: Range<usize>,
    /// Attributes carry `traceparent`.
    traced: bool,
}

/// Why an event's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEvent(String);

impl EncodedEvent {
    /// Checks `bytes` as a `herald.v1.Event` message.
    pub fn parse(bytes: Bytes) -> Result<Self, MalformedEvent> {
        let mut event = EncodedEvent {
            id: 0..0,
            key: 0..0,
            event_type: 0..0,
            data: 0..0,
            traced: false,
            bytes,
        };
        let total = event.bytes.len();
        let mut buf: &[u8] = &event.bytes;
        while !buf.is_empty() {
            let (field, wire_type) =
                decode_key(&mut buf).map_err(|e| malformed(format_args!("bad field key: {e}")))?;
            let known = (tag::ID..=tag::DATA).contains(&field);
            if !known {
                skip_field(wire_type, field, &mut buf, DecodeContext::default())
                    .map_err(|e| malformed(format_args!("unknown field {field}: {e}")))?;
                continue;
            }
            if wire_type != WireType::LengthDelimited {
                return Err(malformed(format_args!(
                    "field {} ({}) has wire type {wire_type:?}; it is length-delimited",
                    field,
                    field_name(field)
                )));
            }
            let value = length_delimited(&mut buf, field)?;
            let start = total - buf.len() - value.len();
            let range = start..start + value.len();
            match field {
                tag::TIME => {
                    prost_types::Timestamp::decode(value)
                        .map_err(|e| malformed(format_args!("field 5 (time): {e}")))?;
                }
                tag::ATTRIBUTES => event.traced |= attribute_entry(value)?,
                tag::DATA => event.data = range,
                _ => {
                    utf8(value, field)?;
                    match field {
                        tag::ID => event.id = range,
                        tag::TYPE => event.event_type = range,
                        tag::KEY => event.key = range,
                        _ => {}
                    }
                }
            }
        }
        Ok(event)
    }

    /// Encodes `event` (for callers holding decoded events: the unary
    /// Publish, dead letters, tests).
    pub fn from_event(event: &Event) -> Self {
        Self::parse(event.encode_to_vec().into()).expect("prost encodes well-formed events")
    }

    /// The whole encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The producer's id; empty when it left the id to the broker.
    pub fn id(&self) -> &str {
        self.str_at(&self.id)
    }

    /// [`id`](Self::id) as bytes, not checked again.
    pub fn id_bytes(&self) -> &[u8] {
        &self.bytes[self.id.clone()]
    }

    /// The ordering key, empty for none.
    pub fn key(&self) -> &str {
        self.str_at(&self.key)
    }

    /// [`key`](Self::key) as bytes, not checked again.
    pub fn key_bytes(&self) -> &[u8] {
        &self.bytes[self.key.clone()]
    }

    /// The CloudEvents type.
    pub fn event_type(&self) -> &str {
        self.str_at(&self.event_type)
    }

    /// The payload.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data.clone()]
    }

    /// Whether the attributes carry a W3C `traceparent`.
    pub fn traced(&self) -> bool {
        self.traced
    }

    /// The attributes, decoded (only when traces are exported).
    pub fn attributes(&self) -> HashMap<String, String> {
        if !self.traced {
            return HashMap::new();
        }
        self.decode().attributes
    }

    /// The full event, decoded.
    pub fn decode(&self) -> Event {
        Event::decode(self.bytes.clone()).expect("checked by parse")
    }

    /// The stored size with a broker-assigned id appended when it has none.
    pub fn stored_len(&self) -> usize {
        self.bytes.len()
            + if self.id.is_empty() {
                ASSIGNED_ID_FIELD_LEN
            } else {
                0
            }
    }

    fn str_at(&self, range: &Range<usize>) -> &str {
        std::str::from_utf8(&self.bytes[range.clone()]).expect("checked by parse")
    }
}

/// Makes the UUIDv7 ids the broker assigns in one publish: one clock read
/// and one random draw per batch, then a counter in the random bits (which
/// UUIDv7 allows for ordering within a millisecond), instead of a clock read
/// and a random draw per event. Ids stay unique and increasing within the
/// batch; across batches they differ by 74 fresh random bits.
pub(crate) struct IdMinter {
    millis: u64,
    /// `rand_a` and `rand_b` as `Builder::from_unix_timestamp_millis` takes them.
    random: [u8; 10],
    next: u64,
}

impl IdMinter {
    pub(crate) fn new() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut random = [0u8; 10];
        random.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..10]);
        Self {
            millis,
            random,
            next: 0,
        }
    }

    /// The next id, as its 36-character hyphenated form.
    fn mint(&mut self) -> [u8; UUID_LEN] {
        let mut bits = self.random;
        // The counter goes into the low bits of rand_b (the last 8 bytes, of
        // which the builder keeps 62 bits).
        let low = u64::from_be_bytes(bits[2..].try_into().expect("8 bytes"));
        bits[2..].copy_from_slice(&low.wrapping_add(self.next).to_be_bytes());
        self.next += 1;
        let id = uuid::Builder::from_unix_timestamp_millis(self.millis, &bits).into_uuid();
        let mut text = [0u8; UUID_LEN];
        id.hyphenated().encode_lower(&mut text);
        text
    }
}

impl Default for IdMinter {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `bytes` followed by an `id` field holding a new UUIDv7 from
/// `ids` into `out`, returning the stored bytes and the id within them.
pub(crate) fn append_assigned_id(
    bytes: &[u8],
    ids: &mut IdMinter,
    out: &mut BytesMut,
) -> (Bytes, Bytes) {
    out.reserve(bytes.len() + ASSIGNED_ID_FIELD_LEN);
    out.put_slice(bytes);
    out.put_u8((tag::ID << 3) as u8 | WireType::LengthDelimited as u8);
    out.put_u8(UUID_LEN as u8);
    out.put_slice(&ids.mint());
    let stored = out.split().freeze();
    let id = stored.slice(stored.len() - UUID_LEN..);
    (stored, id)
}

fn malformed(reason: std::fmt::Arguments<'_>) -> MalformedEvent {
    MalformedEvent(format!("not a valid herald.v1.Event: {reason}"))
}

fn field_name(field: u32) -> &'static str {
    match field {
        tag::ID => "id",
        tag::SOURCE => "source",
        tag::TYPE => "type",
        tag::SUBJECT => "subject",
        tag::TIME => "time",
        tag::DATA_CONTENT_TYPE => "data_content_type",
        tag::DATA_SCHEMA => "data_schema",
        tag::ATTRIBUTES => "attributes",
        tag::KEY => "key",
        tag::DATA => "data",
        _ => "unknown",
    }
}

/// Reads a length prefix and returns that many bytes, advancing past them.
fn length_delimited<'a>(buf: &mut &'a [u8], field: u32) -> Result<&'a [u8], MalformedEvent> {
    let len =
        decode_varint(buf).map_err(|e| malformed(format_args!("field {field} length: {e}")))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= buf.len())
        .ok_or_else(|| {
            malformed(format_args!(
                "field {field} ({}) claims {len} bytes; {} are left",
                field_name(field),
                buf.len()
            ))
        })?;
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

fn utf8(value: &[u8], field: u32) -> Result<(), MalformedEvent> {
    std::str::from_utf8(value).map(|_| ()).map_err(|e| {
        malformed(format_args!(
            "field {field} ({}) is not UTF-8: {e}",
            field_name(field)
        ))
    })
}

/// Checks one `map<string, string>` entry; true when its key is `traceparent`.
fn attribute_entry(mut entry: &[u8]) -> Result<bool, MalformedEvent> {
    let mut traceparent = false;
    while !entry.is_empty() {
        let (field, wire_type) = decode_key(&mut entry)
            .map_err(|e| malformed(format_args!("field 8 (attributes): {e}")))?;
        match (field, wire_type) {
            (1 | 2, WireType::LengthDelimited) => {
                let value = length_delimited(&mut entry, tag::ATTRIBUTES)?;
                utf8(value, tag::ATTRIBUTES)?;
                if field == 1 {
                    traceparent = value == b"traceparent";
                }
            }
            (1 | 2, _) => {
                return Err(malformed(format_args!(
                    "field 8 (attributes) entry field {field} has wire type {wire_type:?}"
                )));
            }
            _ => skip_field(wire_type, field, &mut entry, DecodeContext::default())
                .map_err(|e| malformed(format_args!("field 8 (attributes): {e}")))?,
        }
    }
    Ok(traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full_event() -> Event {
        Event {
            id: "evt-1".into(),
            source: "/svc".into(),
            r#type: "acme.thing.happened".into(),
            subject: "user-7".into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            data_content_type: "application/json".into(),
            data_schema: "schema".into(),
            attributes: [
                ("traceparent".to_owned(), "00-abc-def-01".to_owned()),
                ("team".to_owned(), "ops".to_owned()),
            ]
            .into(),
            key: "k-1".into(),
            data: Bytes::from_static(b"{\"x\":1}"),
        }
    }

    #[test]
    fn reads_the_fields_the_broker_needs() {
        let event = EncodedEvent::from_event(&full_event());
        assert_eq!(event.id(), "evt-1");
        assert_eq!(event.key(), "k-1");
        assert_eq!(event.event_type(), "acme.thing.happened");
        assert_eq!(event.data(), b"{\"x\":1}");
        assert!(event.traced());
        assert_eq!(event.attributes()["team"], "ops");
        assert_eq!(event.decode(), full_event());
        assert_eq!(event.stored_len(), event.bytes().len());

        let bare = EncodedEvent::from_event(&Event::default());
        assert_eq!((bare.id(), bare.key(), bare.traced()), ("", "", false));
        assert_eq!(bare.stored_len(), ASSIGNED_ID_FIELD_LEN);
    }

    #[test]
    fn an_appended_id_is_the_one_decoded() {
        let mut event = full_event();
        event.id.clear();
        let encoded = EncodedEvent::from_event(&event);
        let mut out = BytesMut::new();
        let (stored, id) = append_assigned_id(encoded.bytes(), &mut IdMinter::new(), &mut out);
        assert_eq!(stored.len(), encoded.stored_len());
        let decoded = Event::decode(stored.clone()).unwrap();
        assert_eq!(decoded.id.as_bytes(), &id[..]);
        assert_eq!(
            uuid::Uuid::parse_str(&decoded.id)
                .unwrap()
                .get_version_num(),
            7
        );
        event.id = decoded.id.clone();
        assert_eq!(decoded, event);
        // A later occurrence wins even over an earlier non-empty one.
        let reparsed = EncodedEvent::parse(stored).unwrap();
        assert_eq!(reparsed.id(), event.id);
    }

    #[test]
    fn minted_ids_are_distinct_increasing_v7_uuids() {
        let mut ids = IdMinter::new();
        let minted: Vec<uuid::Uuid> = (0..1000)
            .map(|_| uuid::Uuid::parse_str(std::str::from_utf8(&ids.mint()).unwrap()).unwrap())
            .collect();
        assert!(
            minted.windows(2).all(|w| w[0] < w[1]),
            "increasing and distinct"
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for id in [minted[0], minted[999]] {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
            assert!(ms <= now_ms && now_ms - ms < 10_000, "{ms} vs {now_ms}");
        }
        // Another batch draws fresh random bits.
        let other = IdMinter::new().mint();
        assert!(
            !minted
                .iter()
                .any(|id| id.hyphenated().to_string().as_bytes() == other)
        );
    }

    #[test]
    fn refuses_what_a_decoder_would_refuse() {
        let cases: [(&[u8], &str); 7] = [
            (&[0x0a, 0x05, b'a'], "claims 5 bytes"),
            (&[0x1a, 0x02, 0xff, 0xfe], "field 3 (type) is not UTF-8"),
            (&[0x08, 0x01], "field 1 (id) has wire type Varint"),
            (&[0x2a, 0x02, 0x08], "field 5 (time)"),
            (
                &[0x42, 0x03, 0x0a, 0x01, 0xff],
                "field 8 (attributes) is not UTF-8",
            ),
            (
                &[0x42, 0x02, 0x08, 0x01],
                "entry field 1 has wire type Varint",
            ),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "bad field key"),
        ];
        for (bytes, expected) in cases {
            let err = EncodedEvent::parse(Bytes::copy_from_slice(bytes)).unwrap_err();
            assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
            assert!(
                Event::decode(bytes).is_err(),
                "prost accepts {bytes:?}, so the broker must too"
            );
        }
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut bytes = full_event().encode_to_vec();
        // field 99, varint 7
        bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
        let event = EncodedEvent::parse(bytes.clone().into()).unwrap();
        assert_eq!(event.bytes()[..], bytes[..]);
        assert_eq!(event.decode(), full_event());
    }

    proptest! {
        /// Whatever prost accepts as an Event, the broker accepts and reads
        /// the same id, key and type; whatever it refuses, the broker refuses.
        #[test]
        fn agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ours = EncodedEvent::parse(Bytes::from(bytes.clone()));
            match Event::decode(&bytes[..]) {
                Ok(event) => {
                    let ours = ours.expect("prost accepted it");
                    prop_assert_eq!(ours.id(), event.id.as_str());
                    prop_assert_eq!(ours.key(), event.key.as_str());
                    prop_assert_eq!(ours.event_type(), event.r#type.as_str());
                    prop_assert_eq!(ours.data(), &event.data[..]);
                    prop_assert_eq!(ours.traced(), event.attributes.contains_key("traceparent"));
                }
                Err(_) => prop_assert!(ours.is_err()),
            }
        }

        #[test]
        fn round_trips_generated_events(
            id in "[a-z0-9-]{0,20}",
            key in "\\PC{0,8}",
            kind in "\\PC{0,12}",
            data in proptest::collection::vec(any::<u8>(), 0..40),
            attrs in proptest::collection::hash_map("\\PC{0,6}", "\\PC{0,6}", 0..4),
        ) {
            let event = Event { id, key, r#type: kind, data: data.into(), attributes: attrs, ..Event::default() };
            let ours = EncodedEvent::from_event(&event);
            prop_assert_eq!(ours.id(), event.id.as_str());
            prop_assert_eq!(ours.key(), event.key.as_str());
            prop_assert_eq!(ours.decode(), event);
        }
    }
}
