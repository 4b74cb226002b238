//! Persisting a subscription's cursor: the task marks it changed and hands
//! snapshots to a flusher task, which writes them (through
//! [`CursorRecord`]) off the delivery path, so delivery never waits for an
//! fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::AckSet;
use super::task::{Running, SubscriptionTask};
use crate::broker::records::CursorRecord;
use crate::storage::Storage;

impl SubscriptionTask {
    pub(super) fn cursor_changed(&self, run: &mut Running) {
        run.dirty = true;
        if run.flush_due.is_none() {
            run.flush_due = Some(Instant::now() + self.ctx.cursor_flush_interval);
        }
    }

    /// Hands the current cursor to the flusher if it changed. The write
    /// happens off this task, so delivery never waits for an fsync.
    pub(super) fn flush(&self, run: &mut Running) {
        run.flush_due = None;
        if !run.dirty {
            return;
        }
        run.dirty = false;
        run.acks_since_flush = 0;
        run.cursor_tx
            .send_replace(Some(self.dispatcher.cursors().to_vec()));
    }
}

/// Writes each new cursor snapshot (the latest wins when writes are slower
/// than acks), at most once per `interval`, until the sender is dropped and
/// the last snapshot is written. A failed write is retried; the marks used
/// by retention only move once a cursor is on disk.
pub(super) async fn flush_cursors(
    storage: Arc<dyn Storage>,
    topic: String,
    name: String,
    marks: Arc<Vec<AtomicU64>>,
    mut snapshots: watch::Receiver<Option<Vec<AckSet>>>,
    interval: Duration,
) {
    while snapshots.changed().await.is_ok() {
        let Some(cursors) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let bytes = CursorRecord {
            partitions: cursors.clone(),
        }
        .encode();
        let mut failures = 0;
        loop {
            let (s, t, n, b) = (storage.clone(), topic.clone(), name.clone(), bytes.clone());
            match tokio::task::spawn_blocking(move || s.write_cursor(&t, &n, &b)).await {
                Ok(Ok(())) => {
                    for (mark, cursor) in marks.iter().zip(&cursors) {
                        mark.store(cursor.mark_delete(), Ordering::Relaxed);
                    }
                    break;
                }
                // The subscription (or its topic) was deleted meanwhile.
                Ok(Err(error)) if error.is_not_found() => return,
                Ok(Err(error)) => {
                    tracing::error!(%topic, subscription = %name, %error, "cursor flush failed; retrying")
                }
                Err(join) => tracing::error!(%join, "cursor flush task failed; retrying"),
            }
            failures += 1;
            let closed = snapshots.has_changed().is_err();
            if (closed && failures >= 5) || snapshots.has_changed().unwrap_or(false) {
                // Give up at shutdown, or let a newer snapshot supersede.
                break;
            }
            tokio::time::sleep(interval).await;
        }
        if snapshots.has_changed().is_ok() {
            tokio::time::sleep(interval).await;
        }
    }
}
