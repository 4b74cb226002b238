//! Topic settings: the defaults, a partial update ("patch") as requests carry
//! it, validation, and the metadata persisted beside a topic's logs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::broker::error::{BrokerError, Result};
use crate::storage::{FsyncPolicy, LogConfig, Retention, system_clock};

/// Longest topic (and subscription) name.
pub(crate) const MAX_NAME_LEN: usize = 249;
/// Most partitions a topic may have.
pub(crate) const MAX_PARTITIONS: u32 = 1024;
/// Smallest segment size a topic may use.
pub(crate) const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;

/// What is wrong with a topic or subscription name, if anything: names are
/// 1-249 characters of `[A-Za-z0-9._-]`, not `.`/`..` (they become file
/// and directory names).
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character other than letters, digits, '.', '_' or '-'")
    } else {
        None
    }
}

/// Checks a topic name (see [`name_problem`]).
pub fn validate_topic_name(name: &str) -> Result<()> {
    match name_problem(name) {
        Some(reason) => Err(BrokerError::InvalidTopicName {
            name: name.chars().take(300).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a subscription name (same rule as topics).
pub(crate) fn validate_subscription_name(name: &str) -> Result<()> {
    match name_problem(name) {
        Some(reason) => Err(BrokerError::InvalidSubscriptionName {
            name: name.chars().take(300).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// When a publish counts as durable (the broker's view of [`FsyncPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// fsync before acknowledging, shared by concurrent publishes.
    Batch,
    /// fsync every `fsync_interval`.
    Interval,
    /// leave it to the OS.
    None,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "batch" => Ok(Fsync::Batch),
            "interval" => Ok(Fsync::Interval),
            "none" => Ok(Fsync::None),
            other => Err(format!(
                "unknown fsync policy {other:?}; use batch, interval or none"
            )),
        }
    }
}

/// A topic's effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Fixed at creation.
    pub partitions: u32,
    /// Delete segments whose newest event is older than this.
    #[serde(with = "humantime_serde_opt")]
    pub retention_age: Option<Duration>,
    /// Delete oldest segments while a partition holds more than this.
    pub retention_bytes: Option<u64>,
    /// When a publish counts as durable; fixed at creation.
    pub fsync: Fsync,
    /// For `Fsync::Interval`; fixed at creation.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// How long event ids are remembered for dedup; fixed at creation.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Largest accepted encoded event.
    pub max_event_bytes: u32,
    /// Segment roll size; fixed at creation.
    pub segment_bytes: u64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_age: None,
            retention_bytes: None,
            fsync: Fsync::Batch,
            fsync_interval: Duration::from_secs(1),
            dedup_window: Duration::from_secs(120),
            max_event_bytes: 1024 * 1024,
            segment_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Settings as a request carries them: `None` means "default" on create
/// and "unchanged" on update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettingsPatch {
    /// Number of partitions; fixed at creation.
    pub partitions: Option<u32>,
    /// Delete segments whose newest event is older than this.
    pub retention_age: Option<Duration>,
    /// Delete oldest segments while a partition holds more than this.
    pub retention_bytes: Option<u64>,
    /// When a publish counts as durable; fixed at creation.
    pub fsync: Option<Fsync>,
    /// For `Fsync::Interval`; fixed at creation.
    pub fsync_interval: Option<Duration>,
    /// How long event ids are remembered for dedup; fixed at creation.
    pub dedup_window: Option<Duration>,
    /// Largest accepted encoded event.
    pub max_event_bytes: Option<u32>,
    /// Segment roll size; fixed at creation.
    pub segment_bytes: Option<u64>,
}

impl TopicSettings {
    /// Settings for a new topic: `patch` over these defaults, validated.
    /// `max_request_bytes` bounds `max_event_bytes`.
    pub fn create(&self, patch: &TopicSettingsPatch, max_request_bytes: usize) -> Result<Self> {
        let mut s = self.clone();
        if let Some(p) = patch.partitions {
            s.partitions = p;
        }
        s.apply_mutable(patch);
        if let Some(f) = patch.fsync {
            s.fsync = f;
        }
        if let Some(d) = patch.fsync_interval {
            s.fsync_interval = d;
        }
        if let Some(d) = patch.dedup_window {
            s.dedup_window = d;
        }
        if let Some(b) = patch.segment_bytes {
            s.segment_bytes = b;
        }
        s.validate(max_request_bytes)?;
        Ok(s)
    }

    /// These settings with `patch` applied as an update: only retention and
    /// max_event_bytes may change.
    pub fn update(
        &self,
        topic: &str,
        patch: &TopicSettingsPatch,
        max_request_bytes: usize,
    ) -> Result<Self> {
        if let Some(requested) = patch.partitions
            && requested != self.partitions
        {
            return Err(BrokerError::PartitionCountChange {
                topic: topic.to_owned(),
                current: self.partitions,
                requested,
            });
        }
        let immutable = [
            ("fsync_policy", patch.fsync.is_some_and(|f| f != self.fsync)),
            (
                "fsync_interval",
                patch
                    .fsync_interval
                    .is_some_and(|d| d != self.fsync_interval),
            ),
            (
                "dedup_window",
                patch.dedup_window.is_some_and(|d| d != self.dedup_window),
            ),
            (
                "segment_bytes",
                patch.segment_bytes.is_some_and(|b| b != self.segment_bytes),
            ),
        ];
        if let Some((setting, _)) = immutable.iter().find(|(_, changed)| *changed) {
            return Err(BrokerError::ImmutableSetting {
                topic: topic.to_owned(),
                setting,
            });
        }
        let mut s = self.clone();
        s.apply_mutable(patch);
        s.validate(max_request_bytes)?;
        Ok(s)
    }

    fn apply_mutable(&mut self, patch: &TopicSettingsPatch) {
        if let Some(age) = patch.retention_age {
            self.retention_age = Some(age);
        }
        if let Some(bytes) = patch.retention_bytes {
            self.retention_bytes = Some(bytes);
        }
        if let Some(max) = patch.max_event_bytes {
            self.max_event_bytes = max;
        }
    }

    /// Checks ranges; the error names the setting and the allowed range.
    pub fn validate(&self, max_request_bytes: usize) -> Result<()> {
        let invalid = |reason: String| Err(BrokerError::InvalidConfig { reason });
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return invalid(format!(
                "partitions is {}; use 1 to {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.max_event_bytes == 0 || self.max_event_bytes as usize > max_request_bytes {
            return invalid(format!(
                "max_event_bytes is {}; use 1 to the server's max request size of {max_request_bytes}",
                self.max_event_bytes
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return invalid(format!(
                "segment_bytes is {}; use at least {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.fsync == Fsync::Interval && self.fsync_interval.is_zero() {
            return invalid("fsync_interval must be above zero for the interval policy".into());
        }
        if self.retention_age.is_some_and(|d| d.is_zero()) {
            return invalid(
                "retention_age must be above zero; leave it unset to keep events forever".into(),
            );
        }
        Ok(())
    }

    /// The storage settings of each of this topic's partition logs.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            fsync: match self.fsync {
                Fsync::Batch => FsyncPolicy::Batch,
                Fsync::Interval => FsyncPolicy::Interval(self.fsync_interval),
                Fsync::None => FsyncPolicy::Never,
            },
            dedup_window: self.dedup_window,
            clock: system_clock(),
            ..LogConfig::default()
        }
    }

    /// Retention limits as storage takes them.
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: self.retention_age,
            max_bytes: self.retention_bytes,
        }
    }
}

/// Durations in metadata as human-readable strings ("2m", "1s").
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_rule() {
        for ok in ["orders", "user.signup", "a-b_c.D9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "sp ace", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_refuses_partition_count_change() {
        let s = TopicSettings::default();
        let patch = TopicSettingsPatch {
            partitions: Some(3),
            ..Default::default()
        };
        assert!(matches!(
            s.update("t", &patch, 16 << 20),
            Err(BrokerError::PartitionCountChange {
                current: 1,
                requested: 3,
                ..
            })
        ));
    }

    #[test]
    fn update_refuses_fsync_change_but_takes_retention() {
        let s = TopicSettings::default();
        let fsync = TopicSettingsPatch {
            fsync: Some(Fsync::None),
            ..Default::default()
        };
        assert!(matches!(
            s.update("t", &fsync, 16 << 20),
            Err(BrokerError::ImmutableSetting {
                setting: "fsync_policy",
                ..
            })
        ));
        let retention = TopicSettingsPatch {
            retention_age: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let updated = s.update("t", &retention, 16 << 20).unwrap();
        assert_eq!(updated.retention_age, Some(Duration::from_secs(60)));
    }

    #[test]
    fn create_validates_ranges() {
        let d = TopicSettings::default();
        for patch in [
            TopicSettingsPatch {
                partitions: Some(0),
                ..Default::default()
            },
            TopicSettingsPatch {
                partitions: Some(5000),
                ..Default::default()
            },
            TopicSettingsPatch {
                max_event_bytes: Some(u32::MAX),
                ..Default::default()
            },
            TopicSettingsPatch {
                segment_bytes: Some(10),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    d.create(&patch, 16 << 20),
                    Err(BrokerError::InvalidConfig { .. })
                ),
                "{patch:?}"
            );
        }
    }
}
