//! The broker's own records, drawn in one place the way
//! `storage/file/format.rs` draws the log. Storage keeps them as opaque
//! bytes (framed and checksummed by the file store); this module is the
//! only code that encodes or decodes them.
//!
//! Every record is a JSON object whose first field is `version`:
//!
//! ```text
//! topic metadata, version 1 (pretty-printed):
//!   {"version": 1, "name": "orders",
//!    "settings": {"partitions": 2, "retention_age": "7days" | null,
//!                 "retention_bytes": N | null, "fsync": "batch" | "interval" | "none",
//!                 "fsync_interval": "1s", "dedup_window": "2m",
//!                 "max_event_bytes": N, "segment_bytes": N},
//!    "created_at_ms": N}
//! subscription metadata, version 1 (pretty-printed):
//!   {"version": 1, "name": "billing",
//!    "settings": {"kind": "exclusive" | "shared" | "failover" | "key_shared",
//!                 "ack_deadline": {"secs": N, "nanos": N},
//!                 "redelivery": {"min_backoff": {..}, "max_backoff": {..},
//!                                "multiplier": F, "max_delivery_attempts": N},
//!                 "dead_letter_topic": "orders.billing.dlq"},
//!    "created_at_ms": N}
//! cursor, version 1 (compact), one entry per partition:
//!   {"version":1,"partitions":[{"mark_delete":N,"ranges":{"start":end,..}},..]}
//!   where every offset below mark_delete is acked, and so is each range
//!   [start, end) above it.
//! ```
//!
//! Cursors written before the field existed carry no `version`; they read
//! as version 1. A record of a version this build does not know (written by
//! a newer Herald) is refused with [`BrokerError::CorruptMetadata`] rather
//! than guessed at.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{BrokerError, Result};
use super::subscription::{AckSet, SubscriptionSettings};
use super::topic::TopicSettings;

/// Version of topic metadata records this build writes and reads.
const TOPIC_VERSION: u32 = 1;
/// Version of subscription metadata records this build writes and reads.
const SUBSCRIPTION_VERSION: u32 = 1;
/// Version of cursor records this build writes and reads.
const CURSOR_VERSION: u32 = 1;

/// What is stored about a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TopicRecord {
    pub name: String,
    pub settings: TopicSettings,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// What is stored about a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    pub name: String,
    pub settings: SubscriptionSettings,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// A subscription's acked offsets, one [`AckSet`] per partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CursorRecord {
    pub partitions: Vec<AckSet>,
}

#[derive(Serialize)]
struct Versioned<'a, T> {
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

impl TopicRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        pretty(TOPIC_VERSION, self)
    }

    /// `topic` names the record in errors.
    pub(super) fn decode(bytes: &[u8], topic: &str) -> Result<Self> {
        decode(bytes, TOPIC_VERSION, false, || {
            format!("metadata of topic {topic:?}")
        })
    }
}

impl SubscriptionRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        pretty(SUBSCRIPTION_VERSION, self)
    }

    pub(super) fn decode(bytes: &[u8], topic: &str, subscription: &str) -> Result<Self> {
        decode(bytes, SUBSCRIPTION_VERSION, false, || {
            format!("metadata of subscription {subscription:?} on topic {topic:?}")
        })
    }
}

impl CursorRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Versioned {
            version: CURSOR_VERSION,
            body: self,
        })
        .expect("cursors always serialize")
    }

    pub(super) fn decode(bytes: &[u8], topic: &str, subscription: &str) -> Result<Self> {
        decode(bytes, CURSOR_VERSION, true, || {
            format!("cursor of subscription {subscription:?} on topic {topic:?}")
        })
    }
}

fn pretty<T: Serialize>(version: u32, body: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(&Versioned { version, body }).expect("records always serialize")
}

/// Parses a record of at most version `known`; `unversioned_ok` accepts a
/// record without a version field as version 1.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    known: u32,
    unversioned_ok: bool,
    what: impl Fn() -> String,
) -> Result<T> {
    let corrupt = |reason: String| BrokerError::CorruptMetadata {
        what: what(),
        reason,
    };
    let version = serde_json::from_slice::<VersionOnly>(bytes)
        .map_err(|e| corrupt(format!("not a JSON record: {e}")))?
        .version;
    match version {
        None if unversioned_ok => {}
        None => return Err(corrupt("the record has no version field".into())),
        Some(v) if v == 0 || v > known => {
            return Err(corrupt(format!(
                "format version {v} is unknown to this build (it reads up to {known}); was it written by a newer Herald?"
            )));
        }
        Some(_) => {}
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::broker::subscription::{RedeliveryPolicy, SubscriptionKind};

    fn topic() -> TopicRecord {
        TopicRecord {
            name: "orders".into(),
            settings: TopicSettings {
                partitions: 2,
                retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
                max_event_bytes: 4096,
                segment_bytes: 1 << 20,
                ..Default::default()
            },
            created_at_ms: 1796336237967,
        }
    }

    fn subscription() -> SubscriptionRecord {
        SubscriptionRecord {
            name: "billing".into(),
            settings: SubscriptionSettings {
                kind: SubscriptionKind::Shared,
                ack_deadline: Duration::from_secs(30),
                redelivery: RedeliveryPolicy {
                    max_delivery_attempts: 3,
                    ..Default::default()
                },
                dead_letter_topic: "orders.billing.dlq".into(),
            },
            created_at_ms: 1796336237970,
        }
    }

    // The bytes below are what the first release wrote (see the data dir
    // under tests/fixtures/): encoding must not drift from them.
    const TOPIC_V1: &str = r#"{
  "version": 1,
  "name": "orders",
  "settings": {
    "partitions": 2,
    "retention_age": "7days",
    "retention_bytes": null,
    "fsync": "batch",
    "fsync_interval": "1s",
    "dedup_window": "2m",
    "max_event_bytes": 4096,
    "segment_bytes": 1048576
  },
  "created_at_ms": 1796336237967
}"#;

    const SUBSCRIPTION_V1: &str = r#"{
  "version": 1,
  "name": "billing",
  "settings": {
    "kind": "shared",
    "ack_deadline": {
      "secs": 30,
      "nanos": 0
    },
    "redelivery": {
      "min_backoff": {
        "secs": 1,
        "nanos": 0
      },
      "max_backoff": {
        "secs": 60,
        "nanos": 0
      },
      "multiplier": 2.0,
      "max_delivery_attempts": 3
    },
    "dead_letter_topic": "orders.billing.dlq"
  },
  "created_at_ms": 1796336237970
}"#;

    const UNVERSIONED_CURSOR: &str = r#"{"partitions":[{"mark_delete":1,"ranges":{"2":3,"4":5}},{"mark_delete":0,"ranges":{"1":2}}]}"#;

    fn cursor() -> CursorRecord {
        let set = |mark: u64, ranges: &[(u64, u64)]| {
            let ranges: BTreeMap<u64, u64> = ranges.iter().copied().collect();
            serde_json::from_value::<AckSet>(serde_json::json!({
                "mark_delete": mark,
                "ranges": ranges,
            }))
            .unwrap()
        };
        CursorRecord {
            partitions: vec![set(1, &[(2, 3), (4, 5)]), set(0, &[(1, 2)])],
        }
    }

    #[test]
    fn topic_metadata_is_drawn_as_version_1() {
        assert_eq!(String::from_utf8(topic().encode()).unwrap(), TOPIC_V1);
        assert_eq!(
            TopicRecord::decode(TOPIC_V1.as_bytes(), "orders").unwrap(),
            topic()
        );
    }

    #[test]
    fn subscription_metadata_is_drawn_as_version_1() {
        assert_eq!(
            String::from_utf8(subscription().encode()).unwrap(),
            SUBSCRIPTION_V1
        );
        assert_eq!(
            SubscriptionRecord::decode(SUBSCRIPTION_V1.as_bytes(), "orders", "billing").unwrap(),
            subscription()
        );
    }

    #[test]
    fn cursors_carry_a_version_and_unversioned_ones_read_as_version_1() {
        let encoded = String::from_utf8(cursor().encode()).unwrap();
        assert_eq!(
            encoded,
            r#"{"version":1,"partitions":[{"mark_delete":1,"ranges":{"2":3,"4":5}},{"mark_delete":0,"ranges":{"1":2}}]}"#
        );
        assert_eq!(
            CursorRecord::decode(encoded.as_bytes(), "t", "s").unwrap(),
            cursor()
        );
        assert_eq!(
            CursorRecord::decode(UNVERSIONED_CURSOR.as_bytes(), "t", "s").unwrap(),
            cursor()
        );
    }

    #[test]
    fn unknown_versions_and_garbage_are_corrupt_metadata_naming_the_record() {
        let newer = TOPIC_V1.replace("\"version\": 1", "\"version\": 2");
        let error = TopicRecord::decode(newer.as_bytes(), "orders").unwrap_err();
        assert!(
            matches!(&error, BrokerError::CorruptMetadata { what, reason }
                if what == "metadata of topic \"orders\"" && reason.contains("version 2")),
            "{error}"
        );
        let error = SubscriptionRecord::decode(b"{\"name\": 3", "t", "s").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("subscription \"s\" on topic \"t\""),
            "{error}"
        );
        let unversioned = TOPIC_V1.replace("\"version\": 1,", "");
        assert!(matches!(
            TopicRecord::decode(unversioned.as_bytes(), "orders"),
            Err(BrokerError::CorruptMetadata { .. })
        ));
        let error =
            CursorRecord::decode(b"{\"version\":1,\"partitions\":7}", "t", "s").unwrap_err();
        assert!(
            matches!(error, BrokerError::CorruptMetadata { .. }),
            "{error}"
        );
    }
}
