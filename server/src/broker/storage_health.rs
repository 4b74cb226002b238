//! Whether storage can write: partitions whose last append failed for a
//! reason other than the request itself (disk full, I/O error, a log that
//! refuses writes after a failed fsync). The server reports NOT_SERVING
//! while any partition is failing, so health checks and load balancers see
//! a broker that cannot take publishes; a later successful append (space
//! freed) or deleting the topic clears its partitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::storage::StorageError;

/// The failing partitions, shared by the partition writers.
#[derive(Clone)]
pub(crate) struct StorageHealth {
    failing: Arc<Mutex<BTreeMap<(String, u32), String>>>,
    /// `None` while every partition can write; else one failure, for logs.
    state: Arc<watch::Sender<Option<String>>>,
}

impl Default for StorageHealth {
    fn default() -> Self {
        let (state, _) = watch::channel(None);
        StorageHealth {
            failing: Arc::default(),
            state: Arc::new(state),
        }
    }
}

impl StorageHealth {
    /// Follows the state: `None` while storage can write.
    pub(crate) fn watch(&self) -> watch::Receiver<Option<String>> {
        self.state.subscribe()
    }

    /// Records the outcome of an append to `topic`/`partition`.
    pub(crate) fn record(&self, topic: &str, partition: u32, outcome: Result<(), &StorageError>) {
        let mut failing = self.failing.lock();
        let key = (topic.to_owned(), partition);
        match outcome {
            Ok(()) => {
                if failing.remove(&key).is_none() {
                    return;
                }
            }
            // The request's fault, or a log closing under it: storage is fine.
            Err(StorageError::RecordTooLarge { .. } | StorageError::Closed) => return,
            Err(error) => {
                if failing.insert(key, error.to_string()).is_some() {
                    return;
                }
            }
        }
        self.publish(&failing);
    }

    /// Forgets a deleted topic's partitions.
    pub(crate) fn forget_topic(&self, topic: &str) {
        let mut failing = self.failing.lock();
        let before = failing.len();
        failing.retain(|(t, _), _| t != topic);
        if failing.len() != before {
            self.publish(&failing);
        }
    }

    fn publish(&self, failing: &BTreeMap<(String, u32), String>) {
        let state = failing.iter().next().map(|((topic, partition), error)| {
            format!(
                "{} partition(s) cannot write; topic {topic:?} partition {partition}: {error}",
                failing.len()
            )
        });
        self.state.send_replace(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StorageError {
        StorageError::io("appending", std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    #[test]
    fn failing_until_every_partition_writes_again_or_is_deleted() {
        let health = StorageHealth::default();
        let state = health.watch();
        health.record("a", 0, Err(&full()));
        health.record("b", 1, Err(&full()));
        assert!(
            state
                .borrow()
                .as_deref()
                .unwrap()
                .starts_with("2 partition(s)")
        );
        health.record("a", 0, Ok(()));
        assert!(
            state
                .borrow()
                .as_deref()
                .unwrap()
                .contains("topic \"b\" partition 1")
        );
        health.forget_topic("b");
        assert_eq!(*state.borrow(), None);
    }

    #[test]
    fn refusals_of_the_request_and_closing_logs_are_not_storage_faults() {
        let health = StorageHealth::default();
        health.record(
            "a",
            0,
            Err(&StorageError::RecordTooLarge { size: 10, limit: 5 }),
        );
        health.record("a", 0, Err(&StorageError::Closed));
        assert_eq!(*health.watch().borrow(), None);
    }
}
