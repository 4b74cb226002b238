//! Shared subscriptions: events go round robin to whichever consumers can
//! take them, keeping no order, so load spreads over every consumer with
//! credits. Key_shared routes its keyless events the same way.

use super::routing::{Consumers, Order, Route};
use super::{ConsumerId, EventRef};

/// Routing of a shared subscription.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Last consumer served; the next event goes to the next one after it
    /// that can take it.
    last: ConsumerId,
}

impl Route for Shared {
    fn order(&self) -> Order {
        Order::Unordered
    }

    fn route(
        &mut self,
        _event: EventRef,
        _key: Option<u64>,
        consumers: &Consumers,
        max_unacked: u64,
    ) -> Option<ConsumerId> {
        let next = consumers
            .range(self.last + 1..)
            .chain(consumers.range(..=self.last))
            .find(|(_, c)| c.can_take(max_unacked))
            .map(|(&id, _)| id)?;
        self.last = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::routing::test_consumers;
    use super::*;

    #[test]
    fn round_robin_resumes_after_the_last_served_and_skips_the_full() {
        let mut consumers = test_consumers(&[(1, "a", 0), (2, "b", 0), (3, "c", 0)]);
        consumers.get_mut(&2).unwrap().credits = 0;
        let mut shared = Shared::default();
        let picks: Vec<Option<ConsumerId>> = (0..4)
            .map(|o| shared.route((0, o), None, &consumers, 10))
            .collect();
        assert_eq!(picks, [Some(1), Some(3), Some(1), Some(3)]);
        // At the unacked limit, whatever its credits.
        consumers.get_mut(&1).unwrap().outstanding = 10;
        assert_eq!(shared.route((0, 4), None, &consumers, 10), Some(3));
        consumers.get_mut(&3).unwrap().credits = 0;
        assert_eq!(shared.route((0, 5), None, &consumers, 10), None);
    }
}
