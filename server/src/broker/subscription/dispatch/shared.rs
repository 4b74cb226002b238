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
