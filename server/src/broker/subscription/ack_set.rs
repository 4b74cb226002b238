//! Which offsets of one partition a subscription has acknowledged: a
//! mark-delete position (everything below it is acked) plus the ranges acked
//! above it. This is the cursor that is persisted and survives restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Acknowledged offsets of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckSet {
    /// Every offset below this is acknowledged.
    mark_delete: u64,
    /// Acknowledged half-open ranges `start -> end` above `mark_delete`;
    /// disjoint, non-adjacent, none touching `mark_delete`.
    ranges: BTreeMap<u64, u64>,
}

impl AckSet {
    /// Nothing acked at or above `mark_delete`.
    pub fn starting_at(mark_delete: u64) -> Self {
        Self {
            mark_delete,
            ranges: BTreeMap::new(),
        }
    }

    /// Every offset below this is acknowledged.
    pub fn mark_delete(&self) -> u64 {
        self.mark_delete
    }

    /// The acked ranges above the mark-delete position.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Whether `offset` is acknowledged.
    pub fn contains(&self, offset: u64) -> bool {
        if offset < self.mark_delete {
            return true;
        }
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// Acknowledges `offset`; false if it already was.
    pub fn insert(&mut self, offset: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        let mut start = offset;
        let mut end = offset + 1;
        // Merge with a range ending exactly at `offset`.
        if let Some((&s, &e)) = self.ranges.range(..offset).next_back()
            && e == offset
        {
            start = s;
            self.ranges.remove(&s);
        }
        // Merge with a range starting right after.
        if let Some(e) = self.ranges.remove(&end) {
            end = e;
        }
        if start == self.mark_delete {
            self.mark_delete = end;
        } else {
            self.ranges.insert(start, end);
        }
        true
    }

    /// Acknowledges every offset up to and including `offset` (cumulative
    /// ack); returns how many offsets were newly acknowledged.
    pub fn insert_through(&mut self, offset: u64) -> u64 {
        let target = offset + 1;
        if target <= self.mark_delete {
            return 0;
        }
        let mut newly = target - self.mark_delete;
        let covered: Vec<(u64, u64)> = self.ranges.range(..target).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in covered {
            self.ranges.remove(&s);
            if e > target {
                // Partly above the target: it joins the mark below.
                newly -= target - s;
                self.mark_delete = e;
                return newly;
            }
            newly -= e - s;
        }
        self.mark_delete = target;
        if let Some(e) = self.ranges.remove(&target) {
            self.mark_delete = e;
        }
        newly
    }

    /// Acknowledged offsets in `[from, to)`.
    pub fn count_in(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let mut n = self.mark_delete.clamp(from, to) - from;
        for (s, e) in self.ranges() {
            let (s, e) = (s.max(from), e.min(to));
            if s < e {
                n += e - s;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn contiguous_acks_advance_the_mark() {
        let mut a = AckSet::starting_at(10);
        assert!(a.insert(11));
        assert_eq!(a.mark_delete(), 10);
        assert!(a.insert(10));
        assert_eq!(a.mark_delete(), 12);
        assert!(!a.insert(10));
        assert_eq!(a.ranges().count(), 0);
    }

    #[test]
    fn cumulative_ack_swallows_ranges_and_joins_the_next() {
        let mut a = AckSet::starting_at(0);
        a.insert(3);
        a.insert(7);
        a.insert(8);
        assert_eq!(a.insert_through(5), 5); // 0,1,2,4,5 new; 3 was acked
        assert_eq!(a.mark_delete(), 6);
        assert_eq!(a.insert_through(6), 1);
        assert_eq!(a.mark_delete(), 9);
    }

    proptest! {
        /// The set behaves exactly like a plain set of acked offsets.
        #[test]
        fn behaves_like_a_set(start in 0u64..5, ops in prop::collection::vec((any::<bool>(), 0u64..60), 0..80)) {
            let mut a = AckSet::starting_at(start);
            let mut model: BTreeSet<u64> = (0..start).collect();
            for (cumulative, offset) in ops {
                if cumulative {
                    let before = model.len();
                    model.extend(0..=offset);
                    prop_assert_eq!(a.insert_through(offset), (model.len() - before) as u64);
                } else {
                    prop_assert_eq!(a.insert(offset), model.insert(offset));
                }
                for o in 0..70 {
                    prop_assert_eq!(a.contains(o), model.contains(&o), "offset {}", o);
                }
                let expected_mark = (0..).find(|o| !model.contains(o)).unwrap();
                prop_assert_eq!(a.mark_delete(), expected_mark);
                prop_assert_eq!(a.count_in(0, 70), model.iter().filter(|&&o| o < 70).count() as u64);
                let ranges: Vec<(u64, u64)> = a.ranges().collect();
                for w in ranges.windows(2) {
                    prop_assert!(w[0].1 < w[1].0, "ranges are disjoint and not adjacent");
                }
                prop_assert!(ranges.first().is_none_or(|r| r.0 > a.mark_delete()));
            }
        }
    }
}
