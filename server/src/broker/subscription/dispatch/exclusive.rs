//! Exclusive subscriptions: one consumer at a time gets every event, so it
//! sees each partition whole and in order and may ack cumulatively.

use super::routing::{Consumers, Order, Route};
use super::{AttachRefusal, ConsumerId, EventRef};

/// Routing of an exclusive subscription. It needs no state: the one
/// attached consumer is the route.
#[derive(Debug)]
pub(super) struct Exclusive;

impl Route for Exclusive {
    fn order(&self) -> Order {
        Order::Partition
    }

    fn route(
        &mut self,
        _event: EventRef,
        _key: Option<u64>,
        consumers: &Consumers,
        _max_unacked: u64,
    ) -> Option<ConsumerId> {
        consumers.keys().next().copied()
    }

    fn refuse_attach(&self, consumers: &Consumers) -> Option<AttachRefusal> {
        consumers
            .values()
            .next()
            .map(|holder| AttachRefusal::ExclusiveHeld {
                holder: holder.name.clone(),
            })
    }
}
