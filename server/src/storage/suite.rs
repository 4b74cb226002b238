//! One behaviour suite for every `Storage` implementation: the same tests run
//! against `MemoryStorage` and `FileStorage`, so the file log cannot drift
//! from the reference semantics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::file::FileStorage;
use super::memory::MemoryStorage;
use super::{
    Clock, LogConfig, NewRecord, PartitionLog, Retention, Storage, StorageError, StoredSubscription,
};

/// A storage under test, plus whatever keeps it alive (its temp dir).
pub(super) struct Harness {
    /// The storage being tested.
    pub storage: Box<dyn Storage>,
    /// Removed when the test ends.
    pub _dir: Option<tempfile::TempDir>,
}

pub(super) fn memory() -> Harness {
    Harness {
        storage: Box::new(MemoryStorage::new()),
        _dir: None,
    }
}

pub(super) fn file() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FileStorage::open(dir.path()).expect("open file storage");
    Harness {
        storage: Box::new(storage),
        _dir: Some(dir),
    }
}

/// A clock tests move by hand.
pub(super) fn manual_clock(start: i64) -> (Arc<AtomicI64>, Clock) {
    let now = Arc::new(AtomicI64::new(start));
    let for_clock = now.clone();
    (now, Arc::new(move || for_clock.load(Ordering::SeqCst)))
}

pub(super) fn config(clock: Clock) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        clock,
        ..LogConfig::default()
    }
}

pub(super) fn rec(id: &str, payload: &str) -> NewRecord {
    NewRecord {
        id: Bytes::copy_from_slice(id.as_bytes()),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// `n` records without ids with 100-byte payloads tagged by `tag`.
pub(super) fn batch(tag: usize, n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            id: Bytes::new(),
            payload: Bytes::from(format!("{tag:08}-{i:08}-{}", "x".repeat(82))),
        })
        .collect()
}

pub(super) async fn read_all(log: &dyn PartitionLog, from: u64) -> Vec<super::StoredRecord> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let got = log.read(next, 1000, usize::MAX).expect("read");
        let Some(last) = got.last() else {
            return out;
        };
        next = last.offset + 1;
        out.extend(got);
    }
}

macro_rules! storage_suite {
    ($name:ident, $make:path) => {
        mod $name {
            use super::*;

            fn open(h: &Harness, cfg: LogConfig) -> Arc<dyn PartitionLog> {
                h.storage
                    .open_partition("t", 0, cfg)
                    .expect("open partition")
            }

            #[tokio::test]
            async fn append_then_read_round_trips() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = open(&h, config(clock));
                let a = log
                    .append(vec![rec("a", "one"), rec("", "two")])
                    .await
                    .unwrap();
                let b = log.append(vec![rec("b", "three")]).await.unwrap();
                assert_eq!(a.iter().map(|x| x.offset).collect::<Vec<_>>(), [0, 1]);
                assert_eq!(b[0].offset, 2);
                assert!(a.iter().chain(&b).all(|x| !x.duplicate));
                let got = log.read(0, 100, usize::MAX).unwrap();
                assert_eq!(got.len(), 3);
                let want = [("a", "one"), ("", "two"), ("b", "three")];
                for (i, (r, (id, payload))) in got.iter().zip(want).enumerate() {
                    assert_eq!(r.offset, i as u64);
                    assert_eq!(r.id, Bytes::from(id));
                    assert_eq!(r.payload, Bytes::from(payload));
                }
                assert!(
                    got.windows(2)
                        .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
                );
                let stats = log.stats();
                assert_eq!((stats.first_offset, stats.next_offset), (0, 3));
                assert_eq!(stats.last_timestamp_ms, Some(1_000));
            }

            #[tokio::test]
            async fn timestamps_never_go_backwards() {
                let h = $make();
                let (now, clock) = manual_clock(5_000);
                let log = open(&h, config(clock));
                log.append(vec![rec("", "a")]).await.unwrap();
                now.store(1_000, Ordering::SeqCst);
                let b = log.append(vec![rec("", "b")]).await.unwrap();
                assert_eq!(b[0].timestamp_ms, 5_000);
            }

            #[tokio::test]
            async fn read_honours_limits_but_returns_at_least_one() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = open(&h, config(clock));
                log.append(batch(0, 50)).await.unwrap();
                assert_eq!(log.read(0, 7, usize::MAX).unwrap().len(), 7);
                assert_eq!(log.read(0, 100, 250).unwrap().len(), 2);
                let one = log.read(3, 100, 1).unwrap();
                assert_eq!(one.len(), 1);
                assert_eq!(one[0].offset, 3);
                assert!(log.read(50, 100, usize::MAX).unwrap().is_empty());
                assert!(log.read(0, 0, usize::MAX).unwrap().is_empty());
            }

            #[tokio::test]
            async fn read_before_first_offset_clamps() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let cfg = config(clock);
                let mut retention = Retention::default();
                retention.max_bytes = Some(1);
                let log = open(&h, cfg);
                for i in 0..9 {
                    log.append(batch(i, 512)).await.unwrap();
                }
                log.enforce_retention(retention, None).unwrap();
                let first = log.stats().first_offset;
                assert!(first > 0);
                let got = log.read(0, 10, usize::MAX).unwrap();
                assert_eq!(got[0].offset, first);
            }

            #[tokio::test]
            async fn reads_cross_segment_boundaries() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let mut cfg = config(clock);
                cfg.segment_bytes = 4096;
                cfg.index_interval_bytes = 512;
                let log = open(&h, cfg);
                for i in 0..200 {
                    log.append(batch(i, 3)).await.unwrap();
                }
                let all = read_all(&*log, 0).await;
                assert_eq!(all.len(), 600);
                for (i, r) in all.iter().enumerate() {
                    assert_eq!(r.offset, i as u64);
                    let want = format!("{:08}-{:08}-", i / 3, i % 3);
                    assert!(r.payload.starts_with(want.as_bytes()));
                }
                let mid = log.read(301, 5, usize::MAX).unwrap();
                assert_eq!(
                    mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
                    [301, 302, 303, 304, 305]
                );
            }

            #[tokio::test]
            async fn offset_for_timestamp_finds_first_not_older() {
                let h = $make();
                let (now, clock) = manual_clock(1_000);
                let mut cfg = config(clock);
                cfg.segment_bytes = 4096;
                cfg.index_interval_bytes = 256;
                let log = open(&h, cfg);
                for i in 0..100u64 {
                    now.store(1_000 + 10 * i as i64, Ordering::SeqCst);
                    log.append(batch(i as usize, 2)).await.unwrap();
                }
                assert_eq!(log.offset_for_timestamp(0).unwrap(), 0);
                assert_eq!(log.offset_for_timestamp(1_000).unwrap(), 0);
                assert_eq!(log.offset_for_timestamp(1_001).unwrap(), 2);
                assert_eq!(log.offset_for_timestamp(1_500).unwrap(), 100);
                assert_eq!(log.offset_for_timestamp(1_505).unwrap(), 102);
                assert_eq!(log.offset_for_timestamp(1_990).unwrap(), 198);
                assert_eq!(log.offset_for_timestamp(5_000).unwrap(), 200);
            }

            #[tokio::test]
            async fn retention_by_age_deletes_only_expired_whole_segments() {
                let h = $make();
                let (now, clock) = manual_clock(1_000);
                let cfg = config(clock);
                let mut retention = Retention::default();
                retention.max_age = Some(Duration::from_secs(50));
                let log = open(&h, cfg);
                for i in 0..24 {
                    log.append(batch(i, 512)).await.unwrap();
                }
                now.store(100_000, Ordering::SeqCst);
                for i in 0..8 {
                    log.append(batch(100 + i, 512)).await.unwrap();
                }
                let before = log.stats();
                let report = log.enforce_retention(retention, None).unwrap();
                let after = log.stats();
                assert!(report.segments_deleted > 0);
                assert_eq!(after.first_offset, report.records_deleted);
                assert_eq!(after.segments, before.segments - report.segments_deleted);
                // Every old record sits in an expired segment, every new one stays.
                assert_eq!(after.first_offset, 24 * 512);
                assert_eq!(after.next_offset, before.next_offset);
                assert_eq!(read_all(&*log, 0).await.len(), 8 * 512);
            }

            #[tokio::test]
            async fn retention_never_deletes_the_active_segment() {
                let h = $make();
                let (now, clock) = manual_clock(1_000);
                let cfg = config(clock);
                let mut retention = Retention::default();
                retention.max_age = Some(Duration::from_secs(1));
                retention.max_bytes = Some(1);
                let log = open(&h, cfg);
                log.append(batch(0, 10)).await.unwrap();
                now.store(1_000_000, Ordering::SeqCst);
                let report = log.enforce_retention(retention, None).unwrap();
                assert_eq!(report.segments_deleted, 0);
                assert_eq!(log.read(0, 100, usize::MAX).unwrap().len(), 10);
            }

            #[tokio::test]
            async fn retention_by_size_deletes_oldest_and_honours_keep_from() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let cfg = config(clock);
                let mut retention = Retention::default();
                retention.max_bytes = Some(1);
                let log = open(&h, cfg);
                for i in 0..24 {
                    log.append(batch(i, 512)).await.unwrap();
                }
                let report = log.enforce_retention(retention, Some(5_000)).unwrap();
                let stats = log.stats();
                assert!(report.segments_deleted > 0);
                assert!(stats.first_offset <= 5_000, "kept offset 5000: {stats:?}");
                assert_eq!(stats.first_offset, report.records_deleted);
                let report = log.enforce_retention(retention, None).unwrap();
                assert!(report.segments_deleted > 0);
                let stats = log.stats();
                assert_eq!(stats.segments, 1);
                assert!(stats.records() > 0);
                assert_eq!(stats.next_offset, 24 * 512);
            }

            #[tokio::test]
            async fn duplicate_id_in_window_returns_original() {
                let h = $make();
                let (now, clock) = manual_clock(1_000);
                let mut cfg = config(clock);
                cfg.dedup_window = Duration::from_secs(10);
                let log = open(&h, cfg);
                let first = log
                    .append(vec![rec("a", "one"), rec("b", "two")])
                    .await
                    .unwrap();
                now.store(5_000, Ordering::SeqCst);
                let again = log
                    .append(vec![rec("b", "dup"), rec("c", "three")])
                    .await
                    .unwrap();
                assert!(again[0].duplicate);
                assert_eq!(again[0].offset, first[1].offset);
                assert_eq!(again[0].timestamp_ms, 1_000);
                assert_eq!((again[1].offset, again[1].duplicate), (2, false));
                assert_eq!(log.stats().next_offset, 3);
                // Outside the window the id is stored again.
                now.store(20_000, Ordering::SeqCst);
                let later = log.append(vec![rec("a", "again")]).await.unwrap();
                assert_eq!((later[0].offset, later[0].duplicate), (3, false));
                assert_eq!(log.read(0, 10, usize::MAX).unwrap().len(), 4);
            }

            #[tokio::test]
            async fn duplicates_within_one_batch_are_stored_once() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = open(&h, config(clock));
                let got = log
                    .append(vec![
                        rec("x", "1"),
                        rec("x", "2"),
                        rec("", "3"),
                        rec("", "4"),
                    ])
                    .await
                    .unwrap();
                assert_eq!(got[1].offset, 0);
                assert!(got[1].duplicate);
                assert_eq!((got[2].offset, got[3].offset), (1, 2));
                let all = log.read(0, 10, usize::MAX).unwrap();
                assert_eq!(all.len(), 3);
                assert_eq!(all[0].payload, Bytes::from("1"));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_appends_get_distinct_dense_offsets() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = open(&h, config(clock));
                let mut tasks = Vec::new();
                for t in 0..16 {
                    let log = log.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut offsets = Vec::new();
                        for i in 0..20 {
                            let got = log.append(batch(t * 100 + i, 3)).await.unwrap();
                            offsets.extend(got.iter().map(|a| a.offset));
                        }
                        offsets
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all.sort_unstable();
                assert_eq!(all, (0..16 * 20 * 3).collect::<Vec<u64>>());
                assert_eq!(read_all(&*log, 0).await.len(), 960);
            }

            #[tokio::test]
            async fn watch_end_advances_on_append() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = open(&h, config(clock));
                let mut end = log.watch_end();
                assert_eq!(*end.borrow(), 0);
                log.append(batch(0, 4)).await.unwrap();
                tokio::time::timeout(Duration::from_secs(5), end.wait_for(|e| *e == 4))
                    .await
                    .expect("end advanced")
                    .unwrap();
            }

            #[tokio::test]
            async fn deleting_a_topic_wakes_end_watchers() {
                let h = $make();
                let (_, clock) = manual_clock(1_000);
                let log = h.storage.open_partition("gone", 0, config(clock)).unwrap();
                let mut end = log.watch_end();
                end.borrow_and_update();
                h.storage.delete_topic("gone").unwrap();
                tokio::time::timeout(Duration::from_secs(5), end.changed())
                    .await
                    .expect("a waiting reader wakes")
                    .unwrap();
                assert!(matches!(log.read(0, 1, 1), Err(StorageError::Closed)));
            }

            #[tokio::test]
            async fn topic_meta_lists_replaces_and_deletes() {
                let h = $make();
                let s = &h.storage;
                assert!(s.list_topics().unwrap().is_empty());
                s.write_topic_meta("b", b"meta-b").unwrap();
                s.write_topic_meta("a", b"meta-a").unwrap();
                s.write_topic_meta("a", b"meta-a2").unwrap();
                let topics = s.list_topics().unwrap();
                let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, ["a", "b"]);
                assert_eq!(topics[0].meta, Bytes::from("meta-a2"));
                let (_, clock) = manual_clock(1_000);
                let log = s.open_partition("a", 0, config(clock)).unwrap();
                log.append(batch(0, 1)).await.unwrap();
                s.delete_topic("a").unwrap();
                assert_eq!(s.list_topics().unwrap().len(), 1);
                assert!(matches!(log.read(0, 1, 1), Err(StorageError::Closed)));
                assert!(matches!(
                    log.append(batch(1, 1)).await,
                    Err(StorageError::Closed)
                ));
            }

            #[test]
            fn subscriptions_list_write_replace_and_delete() {
                let h = $make();
                let s = &h.storage;
                s.write_topic_meta("t", b"topic-t").unwrap();
                s.write_topic_meta("u", b"topic-u").unwrap();
                assert!(s.list_subscriptions("t").unwrap().is_empty());
                s.write_subscription_meta("t", "zeta", b"meta-z").unwrap();
                s.write_subscription_meta("t", "alpha", b"meta-a").unwrap();
                s.write_subscription_meta("t", "mid.dle-1_x", b"meta-m")
                    .unwrap();
                s.write_cursor("t", "alpha", b"cursor-1").unwrap();
                let subs = s.list_subscriptions("t").unwrap();
                let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, ["alpha", "mid.dle-1_x", "zeta"]);
                assert_eq!(
                    subs[0],
                    StoredSubscription {
                        name: "alpha".into(),
                        meta: Bytes::from("meta-a"),
                        cursor: Some(Bytes::from("cursor-1")),
                    }
                );
                assert_eq!(subs[2].meta, Bytes::from("meta-z"));
                assert_eq!(subs[2].cursor, None);
                // Other topics see none of them.
                assert!(s.list_subscriptions("u").unwrap().is_empty());

                // Replacing metadata keeps the cursor.
                s.write_subscription_meta("t", "alpha", b"meta-a2").unwrap();
                let alpha = &s.list_subscriptions("t").unwrap()[0];
                assert_eq!(alpha.meta, Bytes::from("meta-a2"));
                assert_eq!(alpha.cursor, Some(Bytes::from("cursor-1")));

                s.delete_subscription("t", "alpha").unwrap();
                let names: Vec<_> = s
                    .list_subscriptions("t")
                    .unwrap()
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                assert_eq!(names, ["mid.dle-1_x", "zeta"]);
                // Deleting again, or in a missing topic, is not an error.
                s.delete_subscription("t", "alpha").unwrap();
                s.delete_subscription("nope", "alpha").unwrap();
                // A subscription created again under the name starts without
                // the old cursor.
                s.write_subscription_meta("t", "alpha", b"meta-a3").unwrap();
                let alpha = &s.list_subscriptions("t").unwrap()[0];
                assert_eq!(alpha.meta, Bytes::from("meta-a3"));
                assert_eq!(alpha.cursor, None);
            }

            #[test]
            fn cursor_is_replaced_whole() {
                let h = $make();
                let s = &h.storage;
                s.write_topic_meta("t", b"topic").unwrap();
                s.write_subscription_meta("t", "sub", b"meta").unwrap();
                let long = vec![7u8; 10_000];
                s.write_cursor("t", "sub", &long).unwrap();
                assert_eq!(
                    s.list_subscriptions("t").unwrap()[0].cursor,
                    Some(Bytes::from(long))
                );
                // A shorter cursor leaves nothing of the longer one behind.
                s.write_cursor("t", "sub", b"short").unwrap();
                assert_eq!(
                    s.list_subscriptions("t").unwrap()[0].cursor,
                    Some(Bytes::from("short"))
                );
                s.write_cursor("t", "sub", b"").unwrap();
                assert_eq!(
                    s.list_subscriptions("t").unwrap()[0].cursor,
                    Some(Bytes::new())
                );
            }

            #[test]
            fn subscriptions_need_their_topic_and_metadata() {
                let h = $make();
                let s = &h.storage;
                assert!(s.list_subscriptions("nope").unwrap().is_empty());
                let err = s.write_subscription_meta("nope", "sub", b"m").unwrap_err();
                assert!(err.is_not_found(), "{err}");
                s.write_topic_meta("t", b"topic").unwrap();
                let err = s.write_cursor("t", "sub", b"c").unwrap_err();
                assert!(err.is_not_found(), "{err}");
                s.write_subscription_meta("t", "sub", b"m").unwrap();
                s.delete_subscription("t", "sub").unwrap();
                let err = s.write_cursor("t", "sub", b"c").unwrap_err();
                assert!(err.is_not_found(), "{err}");
                assert!(s.list_subscriptions("t").unwrap().is_empty());
            }

            #[test]
            fn delete_topic_removes_its_subscriptions() {
                let h = $make();
                let s = &h.storage;
                s.write_topic_meta("t", b"topic").unwrap();
                s.write_subscription_meta("t", "sub", b"meta").unwrap();
                s.write_cursor("t", "sub", b"cursor").unwrap();
                s.delete_topic("t").unwrap();
                assert!(s.list_subscriptions("t").unwrap().is_empty());
                assert!(
                    s.write_cursor("t", "sub", b"late")
                        .unwrap_err()
                        .is_not_found()
                );
                s.write_topic_meta("t", b"topic again").unwrap();
                assert!(s.list_subscriptions("t").unwrap().is_empty());
            }
        }
    };
}

storage_suite!(memory_storage, memory);
storage_suite!(file_storage, file);
