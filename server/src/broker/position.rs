//! Where in a topic a reader or a new subscription starts, and how that
//! becomes an offset in each partition.

use std::collections::BTreeMap;

use crate::storage::{PartitionLog, Result};

/// A starting point in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest retained event of each partition.
    Earliest,
    /// The end of each partition: only events published from now on.
    Latest,
    /// Explicit offsets per partition; partitions not listed start at earliest.
    Offsets(BTreeMap<u32, u64>),
    /// The first event published at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl Position {
    /// The offset in `partition` this position names, clamped into the
    /// partition's stored range `[first_offset, next_offset]`.
    pub fn resolve(&self, log: &dyn PartitionLog, partition: u32) -> Result<u64> {
        let stats = log.stats();
        let offset = match self {
            Position::Earliest => stats.first_offset,
            Position::Latest => stats.next_offset,
            Position::Offsets(offsets) => offsets
                .get(&partition)
                .copied()
                .unwrap_or(stats.first_offset),
            Position::Timestamp(ms) => log.offset_for_timestamp(*ms)?,
        };
        Ok(offset.clamp(stats.first_offset, stats.next_offset))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::memory::MemoryLog;
    use crate::storage::{LogConfig, NewRecord};

    #[tokio::test]
    async fn positions_resolve_within_the_stored_range() {
        let log = MemoryLog::new(LogConfig::default());
        let records = (0..5)
            .map(|_| NewRecord {
                id: Bytes::new(),
                payload: Bytes::from_static(b"x"),
            })
            .collect();
        log.append(records).await.unwrap();
        assert_eq!(Position::Earliest.resolve(&log, 0).unwrap(), 0);
        assert_eq!(Position::Latest.resolve(&log, 0).unwrap(), 5);
        let offsets = Position::Offsets(BTreeMap::from([(0, 3), (1, 99)]));
        assert_eq!(offsets.resolve(&log, 0).unwrap(), 3);
        let past_end = Position::Offsets(BTreeMap::from([(0, 99)]));
        assert_eq!(past_end.resolve(&log, 0).unwrap(), 5);
        assert_eq!(Position::Timestamp(0).resolve(&log, 0).unwrap(), 0);
        assert_eq!(Position::Timestamp(i64::MAX).resolve(&log, 0).unwrap(), 5);
    }
}
