//! Translation between protobuf messages and the broker's domain types.

use std::time::Duration;

use herald::v1;

use super::wire::WireDelivered;
use crate::broker::subscription::{
    RedeliveryPolicy, SubscriptionInfo, SubscriptionKind, SubscriptionSpec, SubscriptionStats,
};
use crate::broker::{
    BrokerError, Fsync, Position, PublishReceipt, TopicInfo, TopicSettings, TopicSettingsPatch,
    TopicStats,
};

/// A protobuf timestamp for milliseconds since the epoch.
pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn from_proto_duration(field: &str, d: &prost_types::Duration) -> Result<Duration, BrokerError> {
    Duration::try_from(*d).map_err(|_| BrokerError::InvalidConfig {
        reason: format!("{field} must be a non-negative duration"),
    })
}

/// A request's topic config as a patch (unset fields are `None`).
pub(crate) fn settings_patch(
    config: Option<&v1::TopicConfig>,
) -> Result<TopicSettingsPatch, BrokerError> {
    let Some(c) = config else {
        return Ok(TopicSettingsPatch::default());
    };
    let fsync = match v1::FsyncPolicy::try_from(c.fsync_policy) {
        Ok(v1::FsyncPolicy::Unspecified) => None,
        Ok(v1::FsyncPolicy::Batch) => Some(Fsync::Batch),
        Ok(v1::FsyncPolicy::Interval) => Some(Fsync::Interval),
        Ok(v1::FsyncPolicy::None) => Some(Fsync::None),
        Err(_) => {
            return Err(BrokerError::InvalidConfig {
                reason: format!(
                    "unknown fsync_policy value {}; use FSYNC_POLICY_BATCH (1), FSYNC_POLICY_INTERVAL (2) or FSYNC_POLICY_NONE (3)",
                    c.fsync_policy
                ),
            });
        }
    };
    Ok(TopicSettingsPatch {
        partitions: (c.partitions != 0).then_some(c.partitions),
        retention_age: c
            .retention_age
            .as_ref()
            .map(|d| from_proto_duration("retention_age", d))
            .transpose()?,
        retention_bytes: (c.retention_bytes != 0).then_some(c.retention_bytes),
        fsync,
        fsync_interval: c
            .fsync_interval
            .as_ref()
            .map(|d| from_proto_duration("fsync_interval", d))
            .transpose()?,
        dedup_window: c
            .dedup_window
            .as_ref()
            .map(|d| from_proto_duration("dedup_window", d))
            .transpose()?,
        max_event_bytes: (c.max_event_bytes != 0).then_some(c.max_event_bytes),
        segment_bytes: (c.segment_bytes != 0).then_some(c.segment_bytes),
    })
}

/// Effective settings as a protobuf config.
pub(crate) fn topic_config(s: &TopicSettings) -> v1::TopicConfig {
    v1::TopicConfig {
        partitions: s.partitions,
        retention_age: s.retention_age.map(to_proto_duration),
        retention_bytes: s.retention_bytes.unwrap_or(0),
        fsync_policy: match s.fsync {
            Fsync::Batch => v1::FsyncPolicy::Batch,
            Fsync::Interval => v1::FsyncPolicy::Interval,
            Fsync::None => v1::FsyncPolicy::None,
        } as i32,
        fsync_interval: Some(to_proto_duration(s.fsync_interval)),
        dedup_window: Some(to_proto_duration(s.dedup_window)),
        max_event_bytes: s.max_event_bytes,
        segment_bytes: s.segment_bytes,
    }
}

/// A topic for the admin API.
pub(crate) fn topic(info: &TopicInfo) -> v1::Topic {
    v1::Topic {
        name: info.name.clone(),
        config: Some(topic_config(&info.settings)),
        create_time: Some(timestamp(info.created_at_ms)),
    }
}

/// Topic stats for the admin API.
pub(crate) fn topic_stats(stats: &TopicStats) -> v1::TopicStats {
    let partitions: Vec<v1::PartitionStats> = stats
        .partitions
        .iter()
        .enumerate()
        .map(|(partition, p)| v1::PartitionStats {
            partition: partition as u32,
            first_offset: p.first_offset,
            last_offset: p.next_offset.saturating_sub(1),
            next_offset: p.next_offset,
            event_count: p.records(),
            bytes: p.bytes,
            segments: p.segments,
            last_publish_time: p.last_timestamp_ms.map(timestamp),
        })
        .collect();
    v1::TopicStats {
        topic: stats.name.clone(),
        event_count: partitions.iter().map(|p| p.event_count).sum(),
        bytes: partitions.iter().map(|p| p.bytes).sum(),
        partitions,
    }
}

/// A stored record as a delivered (or read) event: the stored bytes are the
/// `herald.v1.Event` checked at publish, sent on as they are. `topic` is the
/// topic name's bytes, shared by every delivery.
pub(crate) fn delivered_event(
    topic: &bytes::Bytes,
    partition: u32,
    record: &crate::broker::StoredEvent,
    delivery_attempt: u32,
    ack_handle: String,
    epoch: u64,
) -> WireDelivered {
    WireDelivered {
        event: record.bytes.clone(),
        topic: topic.clone(),
        partition,
        offset: record.offset,
        publish_time: Some(timestamp(record.publish_time_ms)),
        delivery_attempt,
        ack_handle,
        epoch,
    }
}

/// A request's position; `default` when unset.
pub(crate) fn position(position: Option<&v1::Position>, default: Position) -> Position {
    match position.and_then(|p| p.kind.as_ref()) {
        None => default,
        Some(v1::position::Kind::Earliest(_)) => Position::Earliest,
        Some(v1::position::Kind::Latest(_)) => Position::Latest,
        Some(v1::position::Kind::Offsets(o)) => {
            Position::Offsets(o.offsets.clone().into_iter().collect())
        }
        Some(v1::position::Kind::Timestamp(t)) => Position::Timestamp(
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000),
        ),
    }
}

/// A proto subscription type as the broker's kind.
pub(crate) fn subscription_kind(value: i32) -> Result<SubscriptionKind, BrokerError> {
    match v1::SubscriptionType::try_from(value) {
        Ok(v1::SubscriptionType::Exclusive) => Ok(SubscriptionKind::Exclusive),
        Ok(v1::SubscriptionType::Shared) => Ok(SubscriptionKind::Shared),
        Ok(v1::SubscriptionType::Failover) => Ok(SubscriptionKind::Failover),
        Ok(v1::SubscriptionType::KeyShared) => Ok(SubscriptionKind::KeyShared),
        Ok(v1::SubscriptionType::Unspecified) => Err(BrokerError::InvalidSubscriptionConfig {
            reason: "the subscription type is required: SUBSCRIPTION_TYPE_EXCLUSIVE (1), SHARED (2), FAILOVER (3) or KEY_SHARED (4)".into(),
        }),
        Err(_) => Err(BrokerError::InvalidSubscriptionConfig {
            reason: format!(
                "unknown subscription type {value}; use SUBSCRIPTION_TYPE_EXCLUSIVE (1), SHARED (2), FAILOVER (3) or KEY_SHARED (4)"
            ),
        }),
    }
}

/// The broker's kind as a proto subscription type.
pub(crate) fn subscription_kind_to_proto(kind: SubscriptionKind) -> v1::SubscriptionType {
    match kind {
        SubscriptionKind::Exclusive => v1::SubscriptionType::Exclusive,
        SubscriptionKind::Shared => v1::SubscriptionType::Shared,
        SubscriptionKind::Failover => v1::SubscriptionType::Failover,
        SubscriptionKind::KeyShared => v1::SubscriptionType::KeyShared,
    }
}

fn subscription_duration(field: &str, d: &prost_types::Duration) -> Result<Duration, BrokerError> {
    Duration::try_from(*d).map_err(|_| BrokerError::InvalidSubscriptionConfig {
        reason: format!("{field} must be a non-negative duration"),
    })
}

/// What a CreateSubscription or Attach asks for, defaults filled in.
pub(crate) fn subscription_spec(
    kind: i32,
    initial_position: Option<&v1::Position>,
    default_position: Position,
    ack_deadline: Option<&prost_types::Duration>,
    redelivery: Option<&v1::RedeliveryPolicy>,
) -> Result<SubscriptionSpec, BrokerError> {
    let defaults = RedeliveryPolicy::default();
    let r = redelivery.cloned().unwrap_or_default();
    let policy = RedeliveryPolicy {
        min_backoff: r
            .min_backoff
            .as_ref()
            .map(|d| subscription_duration("min_backoff", d))
            .transpose()?
            .unwrap_or(defaults.min_backoff),
        max_backoff: r
            .max_backoff
            .as_ref()
            .map(|d| subscription_duration("max_backoff", d))
            .transpose()?
            .unwrap_or(defaults.max_backoff),
        multiplier: if r.multiplier == 0.0 {
            defaults.multiplier
        } else {
            r.multiplier
        },
        max_delivery_attempts: r.max_delivery_attempts,
    };
    Ok(SubscriptionSpec {
        kind: subscription_kind(kind)?,
        initial_position: position(initial_position, default_position),
        ack_deadline: ack_deadline
            .map(|d| subscription_duration("ack_deadline", d))
            .transpose()?,
        redelivery: policy,
        dead_letter_topic: (!r.dead_letter_topic.is_empty()).then_some(r.dead_letter_topic),
    })
}

/// A subscription for the admin API.
pub(crate) fn subscription(info: &SubscriptionInfo) -> v1::Subscription {
    let s = &info.settings;
    v1::Subscription {
        topic: info.topic.clone(),
        name: info.name.clone(),
        r#type: subscription_kind_to_proto(s.kind) as i32,
        ack_deadline: Some(to_proto_duration(s.ack_deadline)),
        redelivery: Some(v1::RedeliveryPolicy {
            min_backoff: Some(to_proto_duration(s.redelivery.min_backoff)),
            max_backoff: Some(to_proto_duration(s.redelivery.max_backoff)),
            multiplier: s.redelivery.multiplier,
            max_delivery_attempts: s.redelivery.max_delivery_attempts,
            dead_letter_topic: s.dead_letter_topic.clone(),
        }),
        create_time: Some(timestamp(info.created_at_ms)),
    }
}

/// Subscription stats for the admin API.
pub(crate) fn subscription_stats(
    topic: &str,
    name: &str,
    stats: &SubscriptionStats,
) -> v1::SubscriptionStats {
    v1::SubscriptionStats {
        topic: topic.to_owned(),
        name: name.to_owned(),
        backlog: stats.backlog,
        unacked: stats.unacked,
        redelivered: stats.redelivered,
        dead_lettered: stats.dead_lettered,
        delivered: stats.delivered,
        acked: stats.acked,
        nacked: stats.nacked,
        backlog_bytes: stats.backlog_bytes,
        oldest_unacked_age: stats.oldest_unacked_age.map(to_proto_duration),
        consumers: stats
            .consumers
            .iter()
            .map(|c| v1::ConsumerStats {
                name: c.name.clone(),
                outstanding: c.outstanding,
                credits: c.credits,
                active: c.active,
                attach_time: None,
            })
            .collect(),
    }
}

/// Publish receipts as results.
pub(crate) fn publish_results(receipts: Vec<PublishReceipt>) -> Vec<v1::PublishResult> {
    receipts
        .into_iter()
        .map(|r| v1::PublishResult {
            id: r.id.into(),
            partition: r.partition,
            offset: r.offset,
            duplicate: r.duplicate,
            publish_time: Some(timestamp(r.publish_time_ms)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fsync_policy_is_refused_with_the_known_values() {
        let config = v1::TopicConfig {
            fsync_policy: 7,
            ..Default::default()
        };
        let error = settings_patch(Some(&config)).unwrap_err();
        assert!(error.to_string().contains("FSYNC_POLICY_BATCH"), "{error}");
    }

    #[test]
    fn settings_round_trip_through_proto() {
        let settings = TopicSettings {
            partitions: 3,
            retention_age: Some(Duration::from_secs(3600)),
            retention_bytes: Some(1 << 30),
            fsync: Fsync::Interval,
            ..TopicSettings::default()
        };
        let patch = settings_patch(Some(&topic_config(&settings))).unwrap();
        assert_eq!(
            TopicSettings::default().create(&patch, 16 << 20).unwrap(),
            settings
        );
    }

    #[test]
    fn timestamps_handle_negative_millis() {
        assert_eq!(
            timestamp(-1),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }
}
