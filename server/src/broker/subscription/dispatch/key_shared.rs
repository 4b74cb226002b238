//! Key_shared subscriptions: a consistent-hash ring gives every key one
//! consumer, so each key stays in order while keys spread over consumers.
//! When the ring changes, a key waits until its old consumer has nothing
//! of it outstanding, so its order holds across joins and leaves too.

// aHash, as in the core: the holders are touched on every delivery.
use ahash::AHashMap as HashMap;

use super::routing::{Consumers, Order, Route};
use super::shared::Shared;
use super::{ConsumerId, EventRef, Output, hash64};

/// Virtual nodes per consumer on the hash ring.
const RING_POINTS: usize = 64;

/// Routing of a key_shared subscription.
#[derive(Debug, Default)]
pub(super) struct KeyShared {
    /// The hash ring: (point, consumer), sorted.
    ring: Vec<(u64, ConsumerId)>,
    /// key hash -> (consumer holding its outstanding events, how many).
    holders: HashMap<u64, (ConsumerId, u32)>,
    /// Events without a key have no order to keep: they are shared.
    keyless: Shared,
}

impl KeyShared {
    fn owner(&self, key: u64) -> Option<ConsumerId> {
        if self.ring.is_empty() {
            return None;
        }
        let i = self.ring.partition_point(|&(point, _)| point < key);
        Some(self.ring[i % self.ring.len()].1)
    }
}

impl Route for KeyShared {
    fn order(&self) -> Order {
        Order::Key
    }

    fn route(
        &mut self,
        event: EventRef,
        key: Option<u64>,
        consumers: &Consumers,
        max_unacked: u64,
    ) -> Option<ConsumerId> {
        let Some(key) = key else {
            return self.keyless.route(event, None, consumers, max_unacked);
        };
        let owner = self.owner(key)?;
        // A key moves to its new owner only once nothing of it is
        // outstanding elsewhere: per-key order across joins.
        if self
            .holders
            .get(&key)
            .is_some_and(|&(holder, _)| holder != owner)
        {
            return None;
        }
        Some(owner)
    }

    /// Rebuilds the ring: points hash consumer names, so a consumer that
    /// comes back under its name gets its keys back.
    fn regroup(
        &mut self,
        consumers: &Consumers,
        _joined: Option<ConsumerId>,
        _out: &mut Vec<Output>,
    ) -> Vec<u32> {
        self.ring = consumers
            .iter()
            .flat_map(|(&id, c)| {
                (0..RING_POINTS).map(move |i| (hash64(&format!("{}#{i}", c.name)), id))
            })
            .collect();
        self.ring.sort_unstable();
        Vec::new()
    }

    fn delivered(&mut self, key: Option<u64>, consumer: ConsumerId) {
        if let Some(key) = key {
            self.holders.entry(key).or_insert((consumer, 0)).1 += 1;
        }
    }

    fn settled(&mut self, key: Option<u64>) {
        if let Some(key) = key
            && let Some(holder) = self.holders.get_mut(&key)
        {
            holder.1 -= 1;
            if holder.1 == 0 {
                self.holders.remove(&key);
            }
        }
    }

    fn forget_deliveries(&mut self) {
        self.holders.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::routing::test_consumers;
    use super::*;

    fn ring_over(list: &[(ConsumerId, &str, i32)]) -> KeyShared {
        let mut routing = KeyShared::default();
        routing.regroup(&test_consumers(list), None, &mut Vec::new());
        routing
    }

    fn owners(routing: &KeyShared) -> Vec<Option<ConsumerId>> {
        (0..500)
            .map(|k| routing.owner(hash64(&format!("key-{k}"))))
            .collect()
    }

    #[test]
    fn a_key_past_the_last_point_belongs_to_the_first() {
        let routing = ring_over(&[(1, "a", 0), (2, "b", 0)]);
        assert_eq!(routing.ring.len(), 2 * RING_POINTS);
        let (last, _) = *routing.ring.last().unwrap();
        assert_eq!(routing.owner(last.wrapping_add(1)), Some(routing.ring[0].1));
        assert_eq!(ring_over(&[]).owner(7), None);
    }

    #[test]
    fn only_a_leaving_consumers_keys_move_and_they_come_back_with_its_name() {
        let all = ring_over(&[(1, "a", 0), (2, "b", 0), (3, "c", 0)]);
        let without_b = ring_over(&[(1, "a", 0), (3, "c", 0)]);
        for (before, after) in owners(&all).into_iter().zip(owners(&without_b)) {
            if before != Some(2) {
                assert_eq!(before, after, "a key of a or c moved");
            }
        }
        // Back under another id but the same name: the same keys.
        let back = ring_over(&[(1, "a", 0), (3, "c", 0), (9, "b", 0)]);
        let renumbered: Vec<Option<ConsumerId>> = owners(&all)
            .into_iter()
            .map(|o| o.map(|id| if id == 2 { 9 } else { id }))
            .collect();
        assert_eq!(owners(&back), renumbered);
    }

    #[test]
    fn a_key_waits_for_its_previous_holder_to_settle() {
        let consumers = test_consumers(&[(1, "a", 0), (2, "b", 0)]);
        let mut routing = KeyShared::default();
        routing.regroup(&consumers, None, &mut Vec::new());
        let key = hash64("k");
        let owner = routing.owner(key).unwrap();
        let other = if owner == 1 { 2 } else { 1 };
        // Delivered to `other` under an earlier ring, twice.
        routing.delivered(Some(key), other);
        routing.delivered(Some(key), other);
        assert_eq!(routing.route((0, 0), Some(key), &consumers, 10), None);
        routing.settled(Some(key));
        assert_eq!(routing.route((0, 0), Some(key), &consumers, 10), None);
        routing.settled(Some(key));
        assert_eq!(
            routing.route((0, 0), Some(key), &consumers, 10),
            Some(owner)
        );
    }
}
