//! One task per partition that owns the order of appends: publishes queue
//! their records here, and the task hands everything queued to storage as
//! one batch. That keeps pipelined publishes to a partition in the order they
//! were sent, and turns many small publishes into one write and one fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::storage::{Appended, NewRecord, PartitionLog, StorageError};

/// Appends queued per partition before a publisher waits for room.
pub(crate) const QUEUE_DEPTH: usize = 1024;
/// Most payload bytes the partition writer merges into one storage batch.
pub(crate) const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// What the writer answers for one job: one [`Appended`] per record, or the
/// storage failure (shared by every job of the failed group).
pub(crate) type AppendOutcome = Result<Vec<Appended>, Arc<StorageError>>;

/// One publish's records for one partition, and where to send the outcome.
pub(crate) struct AppendJob {
    /// The records, in the order they were published.
    pub records: Vec<NewRecord>,
    /// Payload bytes in `records`, to bound merged batches.
    pub bytes: usize,
    /// Receives one [`Appended`] per record, or the storage failure.
    pub reply: oneshot::Sender<AppendOutcome>,
    /// The publish this job belongs to (`Span::none()` unless traces are
    /// exported): the persist span follows from it.
    pub span: tracing::Span,
}

/// Where a writer reports whether its appends succeed.
pub(crate) struct HealthReport {
    pub health: crate::broker::storage_health::StorageHealth,
    pub topic: String,
    pub partition: u32,
}

/// Runs until every sender of `jobs` is dropped, appending each group of
/// queued jobs as one storage batch of at most `max_group_bytes` (a single
/// job larger than that goes alone).
pub(crate) async fn run(
    log: Arc<dyn PartitionLog>,
    mut jobs: mpsc::Receiver<AppendJob>,
    max_group_bytes: usize,
    report: HealthReport,
) {
    let mut group: Vec<AppendJob> = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut bytes = first.bytes;
        group.push(first);
        while bytes < max_group_bytes {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.bytes;
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let outcome = append_group(log.as_ref(), &mut group).await;
        report.health.record(
            &report.topic,
            report.partition,
            outcome.as_ref().map(|_| ()).map_err(|e| e.as_ref()),
        );
    }
}

/// The span of one storage append (write and fsync), which may carry
/// several publishes: it follows from each of their spans.
fn persist_span(group: &[AppendJob]) -> tracing::Span {
    // Traced when a publish it carries is (sampled and exported).
    if group.iter().all(|job| job.span.is_none()) {
        return tracing::Span::none();
    }
    let events: usize = group.iter().map(|job| job.records.len()).sum();
    let bytes: usize = group.iter().map(|job| job.bytes).sum();
    let span = tracing::info_span!(
        "herald.persist",
        otel.name = "persist",
        herald.events = events,
        herald.bytes = bytes,
        herald.publishes = group.len(),
    );
    for job in group {
        span.follows_from(&job.span);
    }
    span
}

/// Appends the group; returns the storage error if it failed.
async fn append_group(
    log: &dyn PartitionLog,
    group: &mut Vec<AppendJob>,
) -> Result<(), Arc<StorageError>> {
    let span = persist_span(group);
    if group.len() == 1 {
        let job = group.pop().expect("one job");
        let outcome = log
            .append(job.records)
            .instrument(span)
            .await
            .map_err(Arc::new);
        let result = outcome.as_ref().map(|_| ()).map_err(Arc::clone);
        // The publisher may have gone away (client cancelled); the records
        // are stored either way, so there is nobody else to tell.
        let _ = job.reply.send(outcome);
        return result;
    }
    let counts: Vec<usize> = group.iter().map(|job| job.records.len()).collect();
    let total = counts.iter().sum();
    let mut records = Vec::with_capacity(total);
    let mut replies = Vec::with_capacity(group.len());
    for job in group.drain(..) {
        records.extend(job.records);
        replies.push(job.reply);
    }
    match log.append(records).instrument(span).await {
        Ok(appended) => {
            let mut rest = appended.into_iter();
            for (reply, count) in replies.into_iter().zip(counts) {
                let _ = reply.send(Ok(rest.by_ref().take(count).collect()));
            }
            Ok(())
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::LogConfig;
    use crate::storage::memory::MemoryLog;

    fn job(payloads: &[&'static str]) -> (AppendJob, oneshot::Receiver<AppendOutcome>) {
        let (reply, rx) = oneshot::channel();
        let records = payloads
            .iter()
            .map(|p| NewRecord {
                id: Bytes::new(),
                payload: Bytes::from_static(p.as_bytes()),
            })
            .collect();
        (
            AppendJob {
                records,
                bytes: 1,
                reply,
                span: tracing::Span::none(),
            },
            rx,
        )
    }

    #[tokio::test]
    async fn queued_jobs_are_stored_in_send_order_and_answered_each() {
        let log: Arc<dyn PartitionLog> = Arc::new(MemoryLog::new(LogConfig::default()));
        let (tx, rx) = mpsc::channel(16);
        let mut replies = Vec::new();
        for i in 0..5 {
            let payloads: &[&'static str] = if i % 2 == 0 { &["a", "b"] } else { &["c"] };
            let (job, reply) = job(payloads);
            tx.send(job).await.unwrap();
            replies.push(reply);
        }
        drop(tx);
        let health = crate::broker::storage_health::StorageHealth::default();
        let report = HealthReport {
            health: health.clone(),
            topic: "t".into(),
            partition: 0,
        };
        run(log.clone(), rx, 1 << 20, report).await;
        assert_eq!(
            *health.watch().borrow(),
            None,
            "successful appends are healthy"
        );
        let mut next = 0;
        for reply in replies {
            for appended in reply.await.unwrap().unwrap() {
                assert_eq!(appended.offset, next);
                next += 1;
            }
        }
        assert_eq!(log.stats().next_offset, 8);
    }
}
