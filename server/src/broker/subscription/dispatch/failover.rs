//! Failover subscriptions: each partition has one active consumer, the
//! preferred consumers sharing the partitions and the rest standing by. A
//! handover bumps the partition's epoch and revokes what the old active
//! held, so the new one starts from the first unacked event and the old
//! one's handles turn stale.

use std::collections::BTreeSet;

use super::routing::{Consumers, Order, Route};
use super::{ConsumerId, EventRef, Output};

/// Routing of a failover subscription.
#[derive(Debug)]
pub(super) struct Failover {
    /// Active consumer per partition.
    active: Vec<Option<ConsumerId>>,
    /// Handovers so far per partition.
    epochs: Vec<u64>,
}

impl Failover {
    pub(super) fn new(partitions: usize) -> Self {
        Self {
            active: vec![None; partitions],
            epochs: vec![0; partitions],
        }
    }
}

impl Route for Failover {
    fn order(&self) -> Order {
        Order::Partition
    }

    fn route(
        &mut self,
        event: EventRef,
        _key: Option<u64>,
        _consumers: &Consumers,
        _max_unacked: u64,
    ) -> Option<ConsumerId> {
        self.active.get(event.0 as usize).copied().flatten()
    }

    /// Recomputes the active consumer of every partition: the lowest
    /// priority value wins, ties share the partitions by name. A partition
    /// whose active changes gets a new epoch and is handed back for
    /// revocation; everyone affected is told its role.
    fn regroup(
        &mut self,
        consumers: &Consumers,
        joined: Option<ConsumerId>,
        out: &mut Vec<Output>,
    ) -> Vec<u32> {
        let mut ranked: Vec<(i32, &str, ConsumerId)> = consumers
            .iter()
            .map(|(&id, c)| (c.priority, c.name.as_str(), id))
            .collect();
        ranked.sort();
        let best = ranked.first().map(|r| r.0);
        let top: Vec<ConsumerId> = ranked
            .iter()
            .filter(|r| Some(r.0) == best)
            .map(|r| r.2)
            .collect();
        let mut changed: BTreeSet<ConsumerId> = joined.into_iter().collect();
        let mut handed_over = Vec::new();
        for partition in 0..self.active.len() {
            let new = (!top.is_empty()).then(|| top[partition % top.len()]);
            let old = self.active[partition];
            if new == old {
                continue;
            }
            self.epochs[partition] += 1;
            self.active[partition] = new;
            // Everyone hears about a handover: standbys are told who is active.
            changed.extend(consumers.keys().copied());
            handed_over.push(partition as u32);
        }
        let first_active = self.active.first().copied().flatten();
        let first_name = first_active
            .and_then(|id| consumers.get(&id))
            .map(|c| c.name.clone())
            .unwrap_or_default();
        for id in changed {
            let Some(c) = consumers.get(&id) else {
                continue;
            };
            let partitions: Vec<u32> = (0..self.active.len() as u32)
                .filter(|&p| self.active[p as usize] == Some(id))
                .collect();
            let active = !partitions.is_empty();
            let epoch = partitions
                .iter()
                .map(|&p| self.epochs[p as usize])
                .max()
                .unwrap_or_else(|| self.epochs.first().copied().unwrap_or(0));
            out.push(Output::ActiveStatus {
                consumer: id,
                active,
                active_consumer: if active {
                    c.name.clone()
                } else {
                    first_name.clone()
                },
                epoch,
                partitions,
            });
        }
        handed_over
    }

    fn epoch(&self, partition: u32) -> u64 {
        self.epochs[partition as usize]
    }

    fn active_per_partition(&self) -> Option<&[Option<ConsumerId>]> {
        Some(&self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::super::routing::test_consumers;
    use super::*;

    /// (consumer, active, active_consumer, epoch, partitions) of each status.
    fn statuses(out: &[Output]) -> Vec<(ConsumerId, bool, String, u64, Vec<u32>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::ActiveStatus {
                    consumer,
                    active,
                    active_consumer,
                    epoch,
                    partitions,
                } => Some((
                    *consumer,
                    *active,
                    active_consumer.clone(),
                    *epoch,
                    partitions.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tied_consumers_share_partitions_in_name_order() {
        let mut routing = Failover::new(3);
        let consumers = test_consumers(&[(1, "b", 0), (2, "a", 0), (3, "z", 5)]);
        let handed_over = routing.regroup(&consumers, None, &mut Vec::new());
        assert_eq!(handed_over, [0, 1, 2]);
        assert_eq!(routing.active, [Some(2), Some(1), Some(2)]);
        assert_eq!(routing.epochs, [1, 1, 1]);
    }

    #[test]
    fn a_joining_standby_changes_nothing_and_alone_hears_who_is_active() {
        let mut routing = Failover::new(2);
        routing.regroup(&test_consumers(&[(1, "a", 0)]), Some(1), &mut Vec::new());
        let mut out = Vec::new();
        let consumers = test_consumers(&[(1, "a", 0), (2, "s", 3)]);
        let handed_over = routing.regroup(&consumers, Some(2), &mut out);
        assert!(handed_over.is_empty());
        assert_eq!(statuses(&out), [(2, false, "a".into(), 1, vec![])]);
    }

    #[test]
    fn a_preferred_joiner_takes_over_with_new_epochs_and_everyone_hears() {
        let mut routing = Failover::new(2);
        routing.regroup(&test_consumers(&[(1, "old", 5)]), Some(1), &mut Vec::new());
        let mut out = Vec::new();
        let consumers = test_consumers(&[(1, "old", 5), (2, "new", 1)]);
        let handed_over = routing.regroup(&consumers, Some(2), &mut out);
        assert_eq!(handed_over, [0, 1]);
        assert_eq!(
            statuses(&out),
            [
                (1, false, "new".into(), 2, vec![]),
                (2, true, "new".into(), 2, vec![0, 1]),
            ]
        );
        let event = (1, 0);
        assert_eq!(routing.route(event, None, &consumers, 10), Some(2));
        assert_eq!(routing.epoch(1), 2);
    }
}
