//! A subscription's stats as its task computes them: backlog in events
//! and estimated bytes, the age of the oldest unacked event, counters and
//! consumers.

use std::time::Duration;

use super::task::{Running, SubscriptionTask};
use super::{ConsumerStats, SubscriptionStats};
use crate::storage::{PartitionStats, system_clock};

impl SubscriptionTask {
    pub(super) fn stats(&self, run: &Running) -> SubscriptionStats {
        let mut backlog = 0;
        let mut backlog_bytes = 0;
        let mut oldest_ms = None;
        for (partition, cursor) in self.dispatcher.cursors().iter().enumerate() {
            let end = *run.ends[partition].borrow();
            let mark = cursor.mark_delete();
            if end > mark {
                let waiting = end - mark - cursor.count_in(mark, end);
                backlog += waiting;
                let log = &self.logs[partition];
                backlog_bytes += estimated_bytes(waiting, &log.stats());
                // The mark-delete offset is the oldest unacked event of the
                // partition (everything below is acked): one indexed read.
                if let Ok(records) = log.read(mark, 1, 0)
                    && let Some(record) = records.first()
                {
                    let at = record.timestamp_ms;
                    oldest_ms = Some(oldest_ms.map_or(at, |o: i64| o.min(at)));
                }
            }
        }
        let counters = self.dispatcher.counters();
        SubscriptionStats {
            backlog,
            backlog_bytes,
            oldest_unacked_age: oldest_ms.map(|at| age(at, (system_clock())())),
            unacked: self.dispatcher.unacked(),
            delivered: counters.delivered,
            redelivered: counters.redelivered,
            acked: counters.acked,
            nacked: counters.nacked,
            dead_lettered: counters.dead_lettered,
            consumers: self
                .dispatcher
                .consumers()
                .into_iter()
                .map(|c| ConsumerStats {
                    name: c.name,
                    outstanding: c.outstanding,
                    credits: c.credits,
                    active: c.active,
                })
                .collect(),
        }
    }
}

/// `events` of a partition's backlog in bytes, at the partition's average
/// stored event size (see [`SubscriptionStats::backlog_bytes`]).
fn estimated_bytes(events: u64, log: &PartitionStats) -> u64 {
    let stored = log.records();
    if stored == 0 {
        return 0;
    }
    // u128: bytes × events overflows u64 near 4 GiB × 4 G events.
    (log.bytes as u128 * events.min(stored) as u128 / stored as u128) as u64
}

/// How long ago `appended_ms` was at `now_ms`; zero if the clock went back.
fn age(appended_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(appended_ms).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_from_append_time_and_never_goes_negative() {
        assert_eq!(age(1_000, 3_500), Duration::from_millis(2_500));
        assert_eq!(age(5_000, 4_000), Duration::ZERO);
    }

    #[test]
    fn backlog_bytes_scale_with_the_average_event_size() {
        let log = PartitionStats {
            first_offset: 10,
            next_offset: 110,
            bytes: 20_000,
            segments: 1,
            last_timestamp_ms: None,
        };
        assert_eq!(estimated_bytes(40, &log), 8_000);
        assert_eq!(estimated_bytes(0, &log), 0);
        // A backlog reaching below retention counts only what is stored.
        assert_eq!(estimated_bytes(500, &log), 20_000);
        assert_eq!(estimated_bytes(5, &PartitionStats::default()), 0);
    }
}
