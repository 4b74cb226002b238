//! Measures the file log alone (no gRPC): append throughput with the chosen
//! fsync policy from concurrent appenders, then sequential read throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_server::storage::file::FileLog;
use herald_server::storage::{FsyncPolicy, LogConfig, NewRecord, PartitionLog};

use super::scratch::ScratchDir;
use super::summary::per_sec;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct StorageBenchOptions {
    /// Records to append in total.
    pub events: u64,
    /// Payload bytes per record.
    pub event_size: usize,
    /// Records per `append` call.
    pub batch_size: usize,
    /// Concurrent appending tasks.
    pub concurrency: usize,
    /// Durability policy of the log.
    pub fsync: FsyncPolicy,
    /// Segment size of the log.
    pub segment_bytes: u64,
    /// Give every record a 16-byte dedup id (exercises the dedup window).
    pub with_ids: bool,
    /// Parent of the scratch log directory (default: the system temp dir).
    pub dir: Option<std::path::PathBuf>,
}

impl Default for StorageBenchOptions {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            event_size: 100,
            batch_size: 100,
            concurrency: 8,
            fsync: FsyncPolicy::Batch,
            segment_bytes: 128 * 1024 * 1024,
            with_ids: false,
            dir: None,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StorageBenchReport {
    /// Records appended.
    pub events: u64,
    /// Payload bytes per record.
    pub event_size: usize,
    /// Records per append.
    pub batch_size: usize,
    /// Concurrent appenders.
    pub concurrency: usize,
    /// Policy as text (`batch`, `interval:<ms>`, `never`).
    pub fsync: String,
    /// Wall time of the append phase, in seconds.
    pub append_secs: f64,
    /// Records appended per second.
    pub append_events_per_sec: f64,
    /// Payload megabytes (10^6) appended per second.
    pub append_mb_per_sec: f64,
    /// fsync calls made by the log during the append phase.
    pub fsyncs: u64,
    /// Wall time of reading everything back, in seconds.
    pub read_secs: f64,
    /// Records read per second.
    pub read_events_per_sec: f64,
    /// Payload megabytes (10^6) read per second.
    pub read_mb_per_sec: f64,
}

impl std::fmt::Display for StorageBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "storage bench: {} events x {} B, batches of {}, {} tasks, fsync={}",
            self.events, self.event_size, self.batch_size, self.concurrency, self.fsync
        )?;
        writeln!(
            f,
            "{:<8} {:>10} {:>14} {:>10} {:>8}",
            "phase", "seconds", "events/s", "MB/s", "fsyncs"
        )?;
        writeln!(
            f,
            "{:<8} {:>10.3} {:>14.0} {:>10.1} {:>8}",
            "append",
            self.append_secs,
            self.append_events_per_sec,
            self.append_mb_per_sec,
            self.fsyncs
        )?;
        write!(
            f,
            "{:<8} {:>10.3} {:>14.0} {:>10.1} {:>8}",
            "read", self.read_secs, self.read_events_per_sec, self.read_mb_per_sec, "-"
        )
    }
}

fn policy_name(p: FsyncPolicy) -> String {
    match p {
        FsyncPolicy::Batch => "batch".into(),
        FsyncPolicy::Interval(d) => format!("interval:{}ms", d.as_millis()),
        FsyncPolicy::Never => "never".into(),
    }
}

/// Appends `events` records to a fresh log in a temp dir, then reads them all back.
pub(crate) async fn run(opts: StorageBenchOptions) -> anyhow::Result<StorageBenchReport> {
    anyhow::ensure!(
        opts.batch_size > 0 && opts.concurrency > 0,
        "batch size and concurrency must be positive"
    );
    let dir = ScratchDir::new(opts.dir.as_deref(), "storage-bench")?;
    let config = LogConfig {
        segment_bytes: opts.segment_bytes,
        fsync: opts.fsync,
        dedup_window: if opts.with_ids {
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        },
        ..LogConfig::default()
    };
    let log = FileLog::open(dir.path(), config)?;
    let payload = Bytes::from(vec![b'x'; opts.event_size]);
    let batches = opts.events.div_ceil(opts.batch_size as u64);
    let next_batch = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        let (log, payload, next_batch) = (log.clone(), payload.clone(), next_batch.clone());
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next_batch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let first = b * opts.batch_size as u64;
                let n = (opts.events - first).min(opts.batch_size as u64);
                let records = (first..first + n)
                    .map(|i| NewRecord {
                        id: if opts.with_ids {
                            Bytes::from(format!("{i:016}"))
                        } else {
                            Bytes::new()
                        },
                        payload: payload.clone(),
                    })
                    .collect();
                log.append(records).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let append = start.elapsed();
    let fsyncs = log.fsync_count();

    let start = Instant::now();
    let mut from = 0u64;
    let mut read = 0u64;
    loop {
        let got = log.read(from, 10_000, 16 * 1024 * 1024)?;
        let Some(last) = got.last() else { break };
        from = last.offset + 1;
        read += got.len() as u64;
    }
    let read_time = start.elapsed();
    anyhow::ensure!(
        read == opts.events,
        "read back {read} of {} events",
        opts.events
    );
    log.close();

    let mb = (opts.events as f64 * opts.event_size as f64) / 1e6;
    Ok(StorageBenchReport {
        events: opts.events,
        event_size: opts.event_size,
        batch_size: opts.batch_size,
        concurrency: opts.concurrency,
        fsync: policy_name(opts.fsync),
        append_secs: append.as_secs_f64(),
        append_events_per_sec: per_sec(opts.events as f64, append),
        append_mb_per_sec: per_sec(mb, append),
        fsyncs,
        read_secs: read_time.as_secs_f64(),
        read_events_per_sec: per_sec(read as f64, read_time),
        read_mb_per_sec: per_sec(mb, read_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_storage_bench_runs_and_reports() {
        let report = run(StorageBenchOptions {
            events: 2_000,
            batch_size: 50,
            concurrency: 4,
            with_ids: true,
            ..StorageBenchOptions::default()
        })
        .await
        .unwrap();
        assert_eq!(report.events, 2_000);
        assert!(report.fsyncs > 0 && report.fsyncs <= 40);
        assert!(report.to_string().contains("append"));
        assert!(
            serde_json::to_string(&report)
                .unwrap()
                .contains("append_events_per_sec")
        );
    }
}
