//! `herald bench startup`: how long a real `herald serve` process takes to
//! answer SERVING, with an empty data directory (cold start) and with a
//! large log to recover, plus the in-process cost of opening that log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald::v1::Event;
use herald_server::broker::{Broker, BrokerConfig, Fsync, TopicSettings, TopicSettingsPatch};
use herald_server::storage::file::FileStorage;
use herald_server::storage::{NewRecord, Storage};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::process::spawn_until_serving;
use super::scratch::ScratchDir;
use super::summary::{Spread, per_sec};

/// Topic holding the recovery log.
const RECOVERY_TOPIC: &str = "recovery";
/// Stored bytes per record of the recovery log (an encoded event).
const RECOVERY_EVENT_BYTES: usize = 1024;
/// Records per append while filling the log.
const FILL_BATCH: usize = 1024;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct StartupOptions {
    /// The `herald` binary to start.
    pub exe: PathBuf,
    /// Where scratch data directories go (default: the system temp dir).
    pub parent_dir: Option<PathBuf>,
    /// Starts per measurement.
    pub runs: usize,
    /// Size of the log to recover; 0 skips the recovery measurement.
    pub recovery_bytes: u64,
    /// Longest wait for SERVING.
    pub timeout: Duration,
}

/// What was measured; times in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StartupReport {
    /// Spawn to SERVING with an empty data directory, per run.
    pub cold_start_ms: Vec<f64>,
    pub cold_start: Spread,
    pub recovery: Option<RecoveryReport>,
}

/// Starting on a large log.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecoveryReport {
    /// Bytes of records stored (encoded events of 1 KiB).
    pub bytes: u64,
    pub events: u64,
    /// Filling the log through the storage layer (fsync at the end).
    pub fill_secs: f64,
    pub fill_mb_per_sec: f64,
    /// Spawn to SERVING on the filled data directory, per run.
    pub start_ms: Vec<f64>,
    pub start: Spread,
    /// `FileStorage::open` + `open_partition` in this process, per run.
    pub open_in_process_ms: Vec<f64>,
    pub open_in_process: Spread,
    /// The same open, then appending a duplicate of the first record: the
    /// append waits for the dedup window rebuild (which runs after open).
    pub open_to_first_append_ms: Vec<f64>,
    pub open_to_first_append: Spread,
    /// The same open with a zero dedup window (no id scan): what recovery
    /// costs once the records are older than the window.
    pub open_without_dedup_ms: Vec<f64>,
    pub open_without_dedup: Spread,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs both measurements, removing the scratch data afterwards.
pub(crate) async fn run(opts: StartupOptions) -> anyhow::Result<StartupReport> {
    anyhow::ensure!(opts.runs > 0, "runs must be positive");
    let parent = opts.parent_dir.as_deref();
    let mut cold_start_ms = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let dir = ScratchDir::new(parent, "cold-start")?;
        let server = spawn_until_serving(&opts.exe, dir.path(), opts.timeout).await?;
        cold_start_ms.push(ms(server.ready_after));
        server.stop().await?;
    }
    let recovery = if opts.recovery_bytes > 0 {
        Some(recovery(&opts).await?)
    } else {
        None
    };
    Ok(StartupReport {
        cold_start: Spread::of(&cold_start_ms),
        cold_start_ms,
        recovery,
    })
}

async fn recovery(opts: &StartupOptions) -> anyhow::Result<RecoveryReport> {
    let dir = ScratchDir::new(opts.parent_dir.as_deref(), "recovery")?;
    let settings = TopicSettings {
        fsync: Fsync::None,
        ..TopicSettings::default()
    };
    let started = Instant::now();
    let events = fill(dir.path(), opts.recovery_bytes, &settings).await?;
    let fill = started.elapsed();
    let bytes = events * RECOVERY_EVENT_BYTES as u64;
    tracing::info!(
        bytes,
        events,
        secs = fill.as_secs_f64(),
        "recovery log filled"
    );

    let mut start_ms = Vec::with_capacity(opts.runs);
    for _ in 0..opts.runs {
        let server = spawn_until_serving(&opts.exe, dir.path(), opts.timeout).await?;
        start_ms.push(ms(server.ready_after));
        server.stop().await?;
    }
    let (open_in_process_ms, open_to_first_append_ms) =
        time_open(dir.path(), &settings, events, opts.runs).await?;
    let no_dedup = TopicSettings {
        dedup_window: Duration::ZERO,
        ..settings.clone()
    };
    let (open_without_dedup_ms, _) = time_open(dir.path(), &no_dedup, events, opts.runs).await?;
    Ok(RecoveryReport {
        bytes,
        events,
        fill_secs: fill.as_secs_f64(),
        fill_mb_per_sec: per_sec(bytes as f64 / 1e6, fill),
        start: Spread::of(&start_ms),
        start_ms,
        open_in_process: Spread::of(&open_in_process_ms),
        open_in_process_ms,
        open_to_first_append: Spread::of(&open_to_first_append_ms),
        open_to_first_append_ms,
        open_without_dedup: Spread::of(&open_without_dedup_ms),
        open_without_dedup_ms,
    })
}

/// Times `FileStorage::open` + `open_partition` of the recovery log `runs`
/// times, checking every record is found. With a dedup window, also times
/// open to a first append (a duplicate of the first record, so the log does
/// not grow) answering.
async fn time_open(
    dir: &Path,
    settings: &TopicSettings,
    events: u64,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut times = Vec::with_capacity(runs);
    let mut first_append = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let storage = FileStorage::open(dir)?;
        let log = storage.open_partition(RECOVERY_TOPIC, 0, settings.log_config())?;
        times.push(ms(started.elapsed()));
        let records = log.stats().records();
        anyhow::ensure!(records == events, "recovered {records} of {events} records");
        if settings.dedup_window.is_zero() {
            continue;
        }
        let first = log.read(0, 1, 0)?;
        anyhow::ensure!(!first.is_empty(), "the recovery log is empty");
        let duplicate = NewRecord {
            id: first[0].id.clone(),
            payload: Bytes::from_static(b"duplicate"),
        };
        let answer = log.append(vec![duplicate]).await?;
        first_append.push(ms(started.elapsed()));
        anyhow::ensure!(
            answer[0].duplicate,
            "the first record's id was not deduplicated"
        );
    }
    Ok((times, first_append))
}

/// Creates the recovery topic through the broker (so the server finds its
/// metadata), then appends `bytes` of 1 KiB encoded events with unique ids
/// straight to its partition log without fsync, and syncs once at the end.
async fn fill(dir: &Path, bytes: u64, settings: &TopicSettings) -> anyhow::Result<u64> {
    let storage = Arc::new(FileStorage::open(dir)?);
    let broker = Broker::open(
        storage.clone(),
        BrokerConfig::default(),
        CancellationToken::new(),
    )?;
    let patch = TopicSettingsPatch {
        fsync: Some(settings.fsync),
        ..TopicSettingsPatch::default()
    };
    broker.create_topic(RECOVERY_TOPIC, &patch)?;
    // The broker's own log of the partition (storage hands out one per partition).
    let log = storage.open_partition(RECOVERY_TOPIC, 0, settings.log_config())?;
    let payload = recovery_payload();
    let events = bytes.div_ceil(RECOVERY_EVENT_BYTES as u64);
    let mut appended = 0u64;
    while appended < events {
        let n = (events - appended).min(FILL_BATCH as u64);
        let records = (0..n)
            .map(|_| NewRecord {
                id: Bytes::from(uuid::Uuid::now_v7().to_string()),
                payload: payload.clone(),
            })
            .collect();
        log.append(records).await?;
        appended += n;
    }
    log.sync().await?;
    drop(log);
    broker.shutdown().await;
    Ok(events)
}

/// An encoded event of exactly [`RECOVERY_EVENT_BYTES`].
fn recovery_payload() -> Bytes {
    let event = |data: usize| Event {
        id: uuid::Uuid::nil().to_string(),
        source: "/herald/bench".into(),
        r#type: "herald.bench.recovery".into(),
        data: Bytes::from(vec![b'r'; data]),
        ..Event::default()
    };
    let overhead = event(1000).encoded_len() - 1000;
    Bytes::from(event(RECOVERY_EVENT_BYTES - overhead).encode_to_vec())
}

impl std::fmt::Display for StartupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<34} {:>10} {:>10} {:>10}  runs",
            "startup (ms)", "median", "min", "max"
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, s: &Spread, runs: &[f64]| {
            let runs: Vec<String> = runs.iter().map(|r| format!("{r:.1}")).collect();
            writeln!(
                f,
                "{:<34} {:>10.1} {:>10.1} {:>10.1}  {}",
                name,
                s.median,
                s.min,
                s.max,
                runs.join(" ")
            )
        };
        row(
            f,
            "cold start to SERVING",
            &self.cold_start,
            &self.cold_start_ms,
        )?;
        if let Some(r) = &self.recovery {
            row(f, "recovery start to SERVING", &r.start, &r.start_ms)?;
            row(
                f,
                "  FileStorage open+open_partition",
                &r.open_in_process,
                &r.open_in_process_ms,
            )?;
            row(
                f,
                "  open to first append (duplicate)",
                &r.open_to_first_append,
                &r.open_to_first_append_ms,
            )?;
            row(
                f,
                "  the same, dedup window 0",
                &r.open_without_dedup,
                &r.open_without_dedup_ms,
            )?;
            write!(
                f,
                "recovery log: {} events, {:.1} MiB, filled in {:.2}s ({:.0} MB/s)",
                r.events,
                r.bytes as f64 / (1024.0 * 1024.0),
                r.fill_secs,
                r.fill_mb_per_sec
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_payload_is_one_kib() {
        assert_eq!(recovery_payload().len(), RECOVERY_EVENT_BYTES);
        assert!(Event::decode(recovery_payload()).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filled_log_reopens_with_every_record() {
        let dir = ScratchDir::new(None, "fill-test").unwrap();
        let settings = TopicSettings {
            fsync: Fsync::None,
            ..TopicSettings::default()
        };
        let events = fill(dir.path(), 3000 * 1024, &settings).await.unwrap();
        assert_eq!(events, 3000);
        let storage = FileStorage::open(dir.path()).unwrap();
        assert_eq!(storage.list_topics().unwrap().len(), 1);
        let log = storage
            .open_partition(RECOVERY_TOPIC, 0, settings.log_config())
            .unwrap();
        assert_eq!(log.stats().records(), 3000);
    }
}
