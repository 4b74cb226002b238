//! The [`Event`] trait binding a Protobuf message to its topic, CloudEvents
//! type and source, and [`Receipt`], where a published event went.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::v1::PublishResult;

/// A Protobuf message published as a Herald event: which topic it goes to,
/// its CloudEvents `type` and `source`, and its ordering key.
///
/// The message's full Protobuf name (from [`prost::Name`]) becomes the
/// event's `data_schema`. The `herald-build` crate implements it from the
/// `(herald.v1.event)` option in `options.proto` from a `build.rs`; it can
/// also be implemented by hand:
///
/// ```
/// use herald_client::prelude::*;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct UserSignedUp {
///     #[prost(string, tag = "1")]
///     pub user_id: String,
///     #[prost(string, tag = "2")]
///     pub email: String,
/// }
///
/// impl prost::Name for UserSignedUp {
///     const NAME: &'static str = "UserSignedUp";
///     const PACKAGE: &'static str = "acme.signup.v1";
/// }
///
/// impl Event for UserSignedUp {
///     const TOPIC: &'static str = "user.signup";
///     const TYPE: &'static str = "com.example.user.signed_up";
///     const SOURCE: &'static str = "/services/signup";
///     fn key(&self) -> Option<String> {
///         Some(self.user_id.clone())
///     }
/// }
///
/// assert_eq!(UserSignedUp::schema(), "acme.signup.v1.UserSignedUp");
/// ```
pub trait Event: prost::Name + Default + Send + Sync + 'static {
    /// The topic events of this type are published to.
    const TOPIC: &'static str;
    /// The CloudEvents `type`, e.g. `"com.example.user.signed_up"`.
    const TYPE: &'static str;
    /// The CloudEvents `source`, e.g. `"/services/signup"`.
    const SOURCE: &'static str;

    /// The ordering key: events with the same key keep their order.
    /// `None` (the default): keyless.
    fn key(&self) -> Option<String> {
        None
    }

    /// The event's `data_schema`: the message's full Protobuf name.
    fn schema() -> String {
        <Self as prost::Name>::full_name()
    }
}

/// The content type the typed producer sets on every event.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// Where a published event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The event id (the producer's UUIDv7).
    pub id: String,
    /// The partition it was stored in.
    pub partition: u32,
    /// Its offset in the partition (the original's, for a duplicate).
    pub offset: u64,
    /// The id was seen within the topic's dedup window; nothing was stored.
    pub duplicate: bool,
    /// When the broker stored it.
    pub publish_time: Option<SystemTime>,
}

impl From<PublishResult> for Receipt {
    fn from(r: PublishResult) -> Self {
        Receipt {
            id: r.id,
            partition: r.partition,
            offset: r.offset,
            duplicate: r.duplicate,
            publish_time: r.publish_time.map(to_system_time),
        }
    }
}

/// A Protobuf timestamp as a `SystemTime` (clamped at the epoch).
pub fn to_system_time(t: prost_types::Timestamp) -> SystemTime {
    if t.seconds < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.clamp(0, 999_999_999) as u32)
}

/// A `SystemTime` as a Protobuf timestamp.
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A `Duration` as a Protobuf duration.
pub fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
