//! File-log-only tests in the raft-engine style: damage real files in a temp
//! dir, reopen, and check what survives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::format;
use super::{FileLog, FileStorage, RebuildHook};
use crate::storage::suite::{batch, config, manual_clock, read_all, rec};
use crate::storage::{
    FsyncPolicy, LogConfig, NewRecord, PartitionLog, Retention, Storage, StorageError,
};

fn small_segments(cfg: LogConfig) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 1024,
        ..cfg
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn flip_byte(path: &Path, pos: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos as usize] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Appends 50 batches of 3 records (150 records, about 5 segments).
async fn fill(log: &FileLog) {
    for i in 0..50 {
        log.append(batch(i, 3)).await.unwrap();
    }
}

fn check_records(records: &[crate::storage::StoredRecord], from: u64, count: usize) {
    assert_eq!(records.len(), count);
    for (i, r) in records.iter().enumerate() {
        let offset = from + i as u64;
        assert_eq!(r.offset, offset);
        let want = format!("{:08}-{:08}-", offset / 3, offset % 3);
        assert!(r.payload.starts_with(want.as_bytes()), "record {offset}");
    }
}

#[tokio::test]
async fn reopen_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    {
        let storage = FileStorage::open(dir.path()).unwrap();
        let log = storage
            .open_partition("t", 0, small_segments(config(clock.clone())))
            .unwrap();
        for i in 0..50 {
            log.append(batch(i, 3)).await.unwrap();
        }
        assert!(log.stats().segments > 3);
    }
    let storage = FileStorage::open(dir.path()).unwrap();
    let log = storage
        .open_partition("t", 0, small_segments(config(clock)))
        .unwrap();
    check_records(&read_all(&*log, 0).await, 0, 150);
    assert_eq!(log.stats().last_timestamp_ms, Some(1_000));
    assert_eq!(log.append(batch(50, 1)).await.unwrap()[0].offset, 150);
}

#[tokio::test]
async fn missing_and_corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000);
    {
        let log = FileLog::open(dir.path(), small_segments(config(clock.clone()))).unwrap();
        for i in 0..50 {
            now.store(1_000 + i, Ordering::SeqCst);
            log.append(batch(i as usize, 3)).await.unwrap();
        }
    }
    let indexes = files(dir.path(), "index");
    let time_indexes = files(dir.path(), "timeindex");
    assert!(indexes.len() >= 4);
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::write(&time_indexes[1], b"garbage").unwrap();
    // Well-sized but pointing past the end of the log file.
    std::fs::write(
        &indexes[2],
        format::encode_index(&[
            format::IndexEntry {
                relative_offset: 0,
                position: 0,
            },
            format::IndexEntry {
                relative_offset: 3,
                position: 1 << 30,
            },
        ]),
    )
    .unwrap();
    std::fs::remove_file(&time_indexes[3]).unwrap();
    let log = FileLog::open(dir.path(), small_segments(config(clock))).unwrap();
    check_records(&read_all(&*log, 0).await, 0, 150);
    for i in 0..50u64 {
        assert_eq!(log.offset_for_timestamp(1_000 + i as i64).unwrap(), 3 * i);
    }
    assert!(
        std::fs::metadata(&indexes[0]).unwrap().len() > 0,
        "index rewritten"
    );
}

#[tokio::test]
async fn chopped_tail_byte_drops_only_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    {
        let log = FileLog::open(dir.path(), small_segments(config(clock.clone()))).unwrap();
        fill(&log).await;
    }
    let tail = files(dir.path(), "log").pop().unwrap();
    let len = std::fs::metadata(&tail).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tail)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let log = FileLog::open(dir.path(), small_segments(config(clock))).unwrap();
    check_records(&read_all(&*log, 0).await, 0, 147);
    assert_eq!(log.append(batch(49, 3)).await.unwrap()[0].offset, 147);
    check_records(&read_all(&*log, 0).await, 0, 150);
}

#[tokio::test]
async fn corrupt_crc_in_tail_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    {
        let log = FileLog::open(dir.path(), small_segments(config(clock.clone()))).unwrap();
        fill(&log).await;
    }
    let tail = files(dir.path(), "log").pop().unwrap();
    let len = std::fs::metadata(&tail).unwrap().len();
    // Last byte of the last record's payload, covered by the CRC.
    flip_byte(&tail, len - 1);
    let log = FileLog::open(dir.path(), small_segments(config(clock))).unwrap();
    check_records(&read_all(&*log, 0).await, 0, 147);
    assert_eq!(log.stats().next_offset, 147);
}

#[tokio::test]
async fn half_written_batch_at_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    {
        let log = FileLog::open(dir.path(), small_segments(config(clock.clone()))).unwrap();
        fill(&log).await;
    }
    let tail = files(dir.path(), "log").pop().unwrap();
    let mut encoded = Vec::new();
    let records = batch(50, 3);
    format::encode_batch(
        &mut encoded,
        150,
        1_000,
        records.iter().map(|r| (&r.id[..], &r.payload[..])),
    );
    let mut bytes = std::fs::read(&tail).unwrap();
    let clean_len = bytes.len();
    bytes.extend_from_slice(&encoded[..encoded.len() / 2]);
    std::fs::write(&tail, &bytes).unwrap();
    let log = FileLog::open(dir.path(), small_segments(config(clock))).unwrap();
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), clean_len as u64);
    check_records(&read_all(&*log, 0).await, 0, 150);
    assert_eq!(log.append(batch(50, 3)).await.unwrap()[0].offset, 150);
}

#[tokio::test]
async fn corrupt_sealed_segment_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    {
        let log = FileLog::open(dir.path(), small_segments(config(clock.clone()))).unwrap();
        fill(&log).await;
    }
    let first = files(dir.path(), "log").remove(0);
    // Inside the first record's payload of the first batch.
    flip_byte(
        &first,
        (format::BATCH_HEADER_LEN + format::RECORD_OVERHEAD + 30) as u64,
    );
    let log = FileLog::open(dir.path(), small_segments(config(clock))).unwrap();
    assert!(matches!(
        log.read(0, 10, usize::MAX),
        Err(StorageError::Corrupt { .. })
    ));
    // Later segments are still served.
    let later = log.read(100, 10, usize::MAX).unwrap();
    check_records(&later, 100, 10);
}

#[tokio::test]
async fn dedup_survives_restart_within_window() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_000);
    let mut cfg = small_segments(config(clock));
    cfg.dedup_window = Duration::from_secs(10);
    {
        let log = FileLog::open(dir.path(), cfg.clone()).unwrap();
        log.append(vec![rec("old", "a")]).await.unwrap();
        now.store(8_000, Ordering::SeqCst);
        log.append(vec![rec("new", "b")]).await.unwrap();
        fill(&log).await;
    }
    now.store(12_000, Ordering::SeqCst);
    let log = FileLog::open(dir.path(), cfg).unwrap();
    let got = log
        .append(vec![rec("new", "again"), rec("old", "again")])
        .await
        .unwrap();
    assert_eq!((got[0].offset, got[0].duplicate), (1, true));
    assert_eq!((got[1].offset, got[1].duplicate), (152, false));
}

/// Records with ids `id-0`, `id-1`, ... (one record per id).
fn with_ids(from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| rec(&format!("id-{i}"), &format!("payload-{i}")))
        .collect()
}

/// A log in `dir` holding `n` records with ids inside a 10 s window at
/// 1 s; returns the config to reopen it with (the clock still at 1 s).
async fn log_with_ids(dir: &Path, n: usize) -> LogConfig {
    let (_, clock) = manual_clock(1_000);
    let mut cfg = config(clock);
    cfg.dedup_window = Duration::from_secs(10);
    cfg.fsync = FsyncPolicy::Never;
    let log = FileLog::open(dir, cfg.clone()).unwrap();
    for from in (0..n).step_by(1000) {
        log.append(with_ids(from, 1000.min(n - from)))
            .await
            .unwrap();
    }
    log.close();
    cfg
}

#[tokio::test]
async fn duplicate_right_after_reopen_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = log_with_ids(dir.path(), 50_000).await;
    let log = FileLog::open(dir.path(), cfg).unwrap();
    // Appended at once: waits for the window, however far the rebuild got.
    let got = log
        .append(vec![
            rec("id-49999", "again"),
            rec("id-0", "again"),
            rec("", "new"),
        ])
        .await
        .unwrap();
    assert_eq!((got[0].offset, got[0].duplicate), (49_999, true));
    assert_eq!((got[1].offset, got[1].duplicate), (0, true));
    assert_eq!((got[2].offset, got[2].duplicate), (50_000, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_and_appends_wait_while_the_dedup_rebuild_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = log_with_ids(dir.path(), 3_000).await;
    let hook = Arc::new(RebuildHook::default());
    hook.hold.store(true, Ordering::SeqCst);
    let log = FileLog::open_hooked(dir.path(), cfg, hook.clone()).unwrap();
    let appender = {
        let log = log.clone();
        tokio::spawn(async move { log.append(vec![rec("id-7", "again")]).await })
    };
    assert_eq!(log.stats().next_offset, 3_000);
    let first = log.read(0, 10, usize::MAX).unwrap();
    assert_eq!((first.len(), &first[0].id[..]), (10, &b"id-0"[..]));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), 0);
    assert_eq!(*log.watch_end().borrow(), 3_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !appender.is_finished(),
        "append ran before the window was ready"
    );
    hook.hold.store(false, Ordering::SeqCst);
    let got = appender.await.unwrap().unwrap();
    assert_eq!((got[0].offset, got[0].duplicate), (7, true));
    assert_eq!(log.stats().next_offset, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_during_a_pending_rebuild_do_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = log_with_ids(dir.path(), 3_000).await;
    let held = || {
        let hook = Arc::new(RebuildHook::default());
        hook.hold.store(true, Ordering::SeqCst);
        FileLog::open_hooked(dir.path(), cfg.clone(), hook).unwrap()
    };
    let log = held();
    let appender = {
        let log = log.clone();
        tokio::spawn(async move { log.append(vec![rec("id-7", "again")]).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.close();
    let waited = tokio::time::timeout(Duration::from_secs(10), appender)
        .await
        .expect("the waiting append returns once the log closes")
        .unwrap();
    assert!(matches!(waited, Err(StorageError::Closed)), "{waited:?}");
    drop(log);
    // Dropped (never closed explicitly) while the rebuild is held, then
    // reopened: the window is rebuilt and nothing was lost.
    drop(held());
    let log = FileLog::open(dir.path(), cfg).unwrap();
    let got = log.append(vec![rec("id-7", "again")]).await.unwrap();
    assert_eq!((got[0].offset, got[0].duplicate), (7, true));
}

#[tokio::test]
async fn failed_dedup_rebuild_refuses_appends_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = log_with_ids(dir.path(), 3_000).await;
    let hook = Arc::new(RebuildHook::default());
    hook.fail.store(true, Ordering::SeqCst);
    let log = FileLog::open_hooked(dir.path(), cfg, hook).unwrap();
    let err = log.append(vec![rec("id-7", "again")]).await.unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("dedup window"), "{err}");
    // Every append is refused, with or without ids; reads are served.
    assert!(log.append(vec![rec("", "x")]).await.is_err());
    assert_eq!(log.read(0, 5, usize::MAX).unwrap().len(), 5);
    assert_eq!(log.stats().next_offset, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_fsyncs_between_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    let mut cfg = config(clock);
    cfg.fsync = FsyncPolicy::Batch;
    let log = FileLog::open(dir.path(), cfg).unwrap();
    let (tasks, appends) = (32, 25);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..appends {
                log.append(batch(t * 1000 + i, 1)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let total = (tasks * appends) as u64;
    let fsyncs = log.fsync_count();
    assert_eq!(log.stats().next_offset, total);
    assert!(fsyncs * 4 <= total, "{fsyncs} fsyncs for {total} appends");
}

/// Unmounts the tmpfs even when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn disk_full_keeps_acknowledged_records_and_recovers() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test mounts a 1 MiB tmpfs and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("full");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs failed");
    let _guard = Unmount(mount.clone());

    let (_, clock) = manual_clock(1_000);
    let mut cfg = config(clock);
    let mut retention = Retention::default();
    cfg.segment_bytes = 128 * 1024;
    cfg.dedup_window = Duration::ZERO;
    retention.max_bytes = Some(256 * 1024);
    let payload = |n: u64| Bytes::from(format!("{n:010}-{}", "p".repeat(989)));
    let records = |from: u64| -> Vec<NewRecord> {
        (from..from + 10)
            .map(|n| NewRecord {
                id: Bytes::new(),
                payload: payload(n),
            })
            .collect()
    };
    let log = FileLog::open(&mount, cfg.clone()).unwrap();
    let mut acked = 0u64;
    let full = loop {
        match log.append(records(acked)).await {
            Ok(got) => {
                assert_eq!(got[0].offset, acked);
                acked += 10;
            }
            Err(e) => break e,
        }
        assert!(acked < 10_000, "never ran out of space");
    };
    assert!(matches!(full, StorageError::Full { .. }), "{full}");
    assert_eq!(log.stats().next_offset, acked);
    let all = read_all(&*log, 0).await;
    assert_eq!(all.len() as u64, acked);
    // Free space, then the log takes appends again.
    assert!(
        log.enforce_retention(retention, None)
            .unwrap()
            .segments_deleted
            > 0
    );
    log.append(records(acked)).await.unwrap();
    acked += 10;
    drop(log);

    let log = FileLog::open(&mount, cfg).unwrap();
    let first = log.stats().first_offset;
    let all = read_all(&*log, 0).await;
    assert_eq!(all.len() as u64, acked - first);
    for r in &all {
        assert_eq!(r.payload, payload(r.offset));
    }
    assert_eq!(log.stats().next_offset, acked);
}

fn subscriptions_dir(data: &Path, topic: &str) -> PathBuf {
    data.join("topics").join(topic).join("subscriptions")
}

/// A data dir with topic `t` and subscriptions `a` (with a cursor) and `b`.
fn with_subscriptions(data: &Path) -> FileStorage {
    let s = FileStorage::open(data).unwrap();
    s.write_topic_meta("t", b"topic").unwrap();
    s.write_subscription_meta("t", "a", b"meta-a").unwrap();
    s.write_subscription_meta("t", "b", b"meta-b").unwrap();
    s.write_cursor("t", "a", b"cursor-a1").unwrap();
    s.write_cursor("t", "a", b"cursor-a2").unwrap();
    s
}

#[test]
fn subscriptions_survive_restart_with_last_cursor() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_subscriptions(dir.path()));
    let s = FileStorage::open(dir.path()).unwrap();
    let subs = s.list_subscriptions("t").unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].name, "a");
    assert_eq!(subs[0].meta, Bytes::from("meta-a"));
    assert_eq!(subs[0].cursor, Some(Bytes::from("cursor-a2")));
    assert_eq!(subs[1].name, "b");
    assert_eq!(subs[1].cursor, None);
    let mut names: Vec<_> = std::fs::read_dir(subscriptions_dir(dir.path(), "t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.cursor", "a.meta", "b.meta"]);
}

#[test]
fn corrupt_cursor_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_subscriptions(dir.path()));
    let path = subscriptions_dir(dir.path(), "t").join("a.cursor");
    let len = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 1);
    let s = FileStorage::open(dir.path()).unwrap();
    match s.list_subscriptions("t") {
        Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path.display().to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A torn (truncated) file is caught too.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match s.list_subscriptions("t") {
        Err(StorageError::Corrupt { path: p, .. }) => assert!(p.ends_with("a.cursor"), "{p}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Writing a new cursor replaces the damaged file.
    s.write_cursor("t", "a", b"cursor-a3").unwrap();
    let subs = s.list_subscriptions("t").unwrap();
    assert_eq!(subs[0].cursor, Some(Bytes::from("cursor-a3")));
}

#[test]
fn corrupt_subscription_meta_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_subscriptions(dir.path()));
    let path = subscriptions_dir(dir.path(), "t").join("b.meta");
    flip_byte(&path, 2);
    let s = FileStorage::open(dir.path()).unwrap();
    match s.list_subscriptions("t") {
        Err(StorageError::Corrupt { path: p, .. }) => assert!(p.ends_with("b.meta"), "{p}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn leftover_tmp_files_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_subscriptions(dir.path()));
    let subs_dir = subscriptions_dir(dir.path(), "t");
    // An interrupted cursor replace of `a` and an interrupted create of `c`.
    std::fs::write(subs_dir.join("a.cursor.17.tmp"), b"half a curs").unwrap();
    std::fs::write(subs_dir.join("c.meta.3.tmp"), b"").unwrap();
    let s = FileStorage::open(dir.path()).unwrap();
    let subs = s.list_subscriptions("t").unwrap();
    let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(subs[0].cursor, Some(Bytes::from("cursor-a2")));
    assert!(!subs_dir.join("a.cursor.17.tmp").exists());
    assert!(!subs_dir.join("c.meta.3.tmp").exists());
}

#[test]
fn cursor_without_meta_is_skipped_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_subscriptions(dir.path()));
    let subs_dir = subscriptions_dir(dir.path(), "t");
    // A delete interrupted between removing `a.meta` and `a.cursor`.
    std::fs::remove_file(subs_dir.join("a.meta")).unwrap();
    let s = FileStorage::open(dir.path()).unwrap();
    let names: Vec<_> = s
        .list_subscriptions("t")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["b"]);
    assert!(!subs_dir.join("a.cursor").exists());
    // Created again, `a` does not inherit the old cursor.
    s.write_subscription_meta("t", "a", b"meta-new").unwrap();
    assert_eq!(s.list_subscriptions("t").unwrap()[0].cursor, None);
}

#[test]
fn delete_topic_removes_subscription_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_subscriptions(dir.path());
    s.delete_topic("t").unwrap();
    assert!(!dir.path().join("topics").join("t").exists());
    drop(s);
    let s = FileStorage::open(dir.path()).unwrap();
    assert!(s.list_topics().unwrap().is_empty());
    assert!(s.list_subscriptions("t").unwrap().is_empty());
}

#[test]
fn subscriptions_dir_does_not_disturb_topics_or_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_subscriptions(dir.path());
    let (_, clock) = manual_clock(1_000);
    s.open_partition("t", 0, config(clock.clone())).unwrap();
    drop(s);
    let s = FileStorage::open(dir.path()).unwrap();
    let topics = s.list_topics().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].meta, Bytes::from("topic"));
    s.open_partition("t", 0, config(clock)).unwrap();
    assert_eq!(s.list_subscriptions("t").unwrap().len(), 2);
}

#[test]
fn concurrent_cursor_writes_leave_one_whole_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_subscriptions(dir.path());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..10 {
                    let cursor = format!("writer-{t}-{i}-{}", "c".repeat(t * 100));
                    s.write_cursor("t", "a", cursor.as_bytes()).unwrap();
                }
            });
        }
    });
    let cursor = s.list_subscriptions("t").unwrap()[0]
        .cursor
        .clone()
        .unwrap();
    // Exactly one of the written cursors, whole.
    let text = std::str::from_utf8(&cursor).unwrap();
    let written: Vec<String> = (0..4)
        .flat_map(|t| (0..10).map(move |i| format!("writer-{t}-{i}-{}", "c".repeat(t * 100))))
        .collect();
    assert!(written.iter().any(|w| w == text), "{text}");
    let leftovers = std::fs::read_dir(subscriptions_dir(dir.path(), "t"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn interval_policy_makes_an_append_durable_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    let mut cfg = config(clock);
    cfg.fsync = FsyncPolicy::Interval(Duration::from_millis(100));
    let log = FileLog::open(dir.path(), cfg).unwrap();
    let before = log.fsync_count();
    log.append(batch(0, 10)).await.unwrap();
    // Answered before any fsync: the interval policy does not wait for it.
    let answered = std::time::Instant::now();
    while log.fsync_count() == before {
        assert!(
            answered.elapsed() < Duration::from_secs(5),
            "no fsync within 5 s of an append under a 100 ms interval"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // An idle log is not fsynced again and again (once the round that
    // started has synced the file and the new directory entries).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let settled = log.fsync_count();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(log.fsync_count(), settled);
}

#[tokio::test]
async fn the_first_round_of_a_new_partition_syncs_its_directory_and_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    let log = FileLog::open(dir.path().join("0"), config(clock)).unwrap();
    log.append(batch(0, 1)).await.unwrap();
    // The segment file, the partition directory (holding the new segment)
    // and the topic directory (holding the new partition directory).
    assert_eq!(log.fsync_count(), 3);
    log.append(batch(1, 1)).await.unwrap();
    assert_eq!(log.fsync_count(), 4, "later rounds sync only the data");
}

#[tokio::test]
async fn many_partitions_share_a_bounded_set_of_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clock) = manual_clock(1_000);
    let capacity = 16;
    let partitions = 100u32;
    {
        let storage = FileStorage::open_with_file_capacity(dir.path(), capacity).unwrap();
        let mut logs = Vec::new();
        for p in 0..partitions {
            let log = storage
                .open_partition("t", p, small_segments(config(clock.clone())))
                .unwrap();
            // Several segments each: sealed ones are opened on demand too.
            for round in 0..5 {
                log.append(vec![rec(&format!("{p}-{round}"), &"x".repeat(1500))])
                    .await
                    .unwrap();
            }
            logs.push(log);
        }
        let (open, cap) = storage.open_segment_files();
        assert_eq!(cap, capacity);
        assert!(open <= capacity, "{open} files open, capacity {capacity}");
        for (p, log) in logs.iter().enumerate() {
            let records = read_all(log.as_ref(), 0).await;
            assert_eq!(records.len(), 5, "partition {p}");
            assert_eq!(records[0].id, Bytes::from(format!("{p}-0")));
            assert!(log.stats().segments > 1, "partition {p} never rolled");
        }
        assert!(storage.open_segment_files().0 <= capacity);
    }
    let storage = FileStorage::open_with_file_capacity(dir.path(), capacity).unwrap();
    for p in 0..partitions {
        let log = storage
            .open_partition("t", p, small_segments(config(clock.clone())))
            .unwrap();
        assert_eq!(
            read_all(log.as_ref(), 0).await.len(),
            5,
            "partition {p} after reopen"
        );
    }
    assert!(storage.open_segment_files().0 <= capacity);
}
