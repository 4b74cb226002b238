//! Bringing a partition directory back to a consistent state on open.
//!
//! Policy: tolerate tail corruption. A crash can leave a torn or garbage
//! tail, so the tail segment is scanned in full and truncated at its last
//! valid batch. Sealed segments are trusted when their indexes are sound and
//! their last indexed stretch scans clean (cheap, so a large log opens fast);
//! otherwise their indexes are rebuilt by a full scan. A torn sealed segment
//! can only hold records that were never acknowledged under `FsyncPolicy::Batch`
//! (a rolled segment is synced before anything after it is acknowledged), so it
//! is truncated and the segments after it are dropped. Every repair is logged
//! with the file, the offset and the bytes dropped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::format;
use super::open_files::{self, OpenFiles};
use super::segment::{self, Segment};
use crate::storage::dedup::DedupWindow;
use crate::storage::{Result, StorageError};

/// Base offsets of the `.log` files in `dir`, sorted.
fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens a segment file and reads its length.
fn open_segment(dir: &Path, base: u64, files: &Arc<OpenFiles>) -> Result<(Segment, u64)> {
    let path = segment::log_path(dir, base);
    let ctx = || format!("opening {}", path.display());
    let file = open_files::open_segment_file(&path).map_err(|e| StorageError::io(ctx(), e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(ctx(), e))?
        .len();
    let file = files.adopt(path.clone(), file);
    Ok((Segment::empty(base, file, path), len))
}

/// The segment's open file, for recovery's reads and repairs.
fn file_of(seg: &Segment) -> Result<Arc<File>> {
    seg.file
        .get()
        .map_err(|e| StorageError::io(format!("opening {}", seg.path.display()), e))
}

/// Scans a whole segment, rebuilding its indexes; returns where it stopped.
fn full_scan(seg: &mut Segment, len: u64, interval: u32) -> Result<segment::ScanEnd> {
    seg.index.clear();
    seg.time_index.clear();
    seg.bytes_since_index = 0;
    let file = file_of(seg)?;
    let mut batches = Vec::new();
    let end = segment::scan(&file, 0, len, seg.base, |pos, h, _| {
        batches.push((pos, *h));
        true
    })
    .map_err(|e| StorageError::io(format!("scanning {}", seg.path.display()), e))?;
    for (pos, h) in batches {
        seg.note_batch(pos, &h, interval);
    }
    Ok(end)
}

/// Loads a sealed segment's index files; `Err` says why they cannot be used.
fn load_indexes(dir: &Path, seg: &mut Segment, len: u64) -> std::result::Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let index = read(&segment::index_path(dir, seg.base))?;
    let time = read(&segment::time_index_path(dir, seg.base))?;
    let index = format::decode_index(&index, len).map_err(|e| e.to_string())?;
    let time = format::decode_time_index(&time).map_err(|e| e.to_string())?;
    if index.is_empty() {
        return Err("empty index".into());
    }
    let consistent = time.len() == index.len()
        && time
            .iter()
            .zip(&index)
            .all(|(t, i)| t.relative_offset == i.relative_offset);
    if !consistent {
        return Err("time index does not match the offset index".into());
    }
    seg.index = index;
    seg.time_index = time;
    Ok(())
}

/// Checks a sealed segment cheaply: scan from its last index entry to the end
/// of the file. Fills in `end`, `size` and `max_timestamp` on success.
fn check_sealed(seg: &mut Segment, len: u64) -> Result<std::result::Result<(), String>> {
    let Some(last) = seg.index.last().copied() else {
        return Ok(Err("empty index".into()));
    };
    let file = file_of(seg)?;
    let expected = seg.base + u64::from(last.relative_offset);
    let end = segment::scan(&file, u64::from(last.position), len, expected, |_, _, _| {
        true
    })
    .map_err(|e| StorageError::io(format!("scanning {}", seg.path.display()), e))?;
    if let Some(err) = end.error {
        return Ok(Err(err));
    }
    if end.next_offset == expected {
        return Ok(Err("last indexed batch is missing".into()));
    }
    seg.end = end.next_offset;
    seg.size = end.valid_len;
    let indexed_max = seg.time_index.last().map(|t| t.max_timestamp);
    seg.max_timestamp = end.max_timestamp.max(indexed_max);
    Ok(Ok(()))
}

/// Truncates `seg` to `valid_len` bytes, durably, logging what was dropped.
fn truncate(seg: &Segment, len: u64, valid_len: u64, next_offset: u64, why: &str) -> Result<()> {
    tracing::warn!(
        path = %seg.path.display(),
        truncated_at_offset = next_offset,
        truncated_at_position = valid_len,
        bytes_dropped = len - valid_len,
        reason = why,
        "truncating torn or corrupt segment tail"
    );
    let ctx = || format!("truncating {}", seg.path.display());
    let file = file_of(seg)?;
    file.set_len(valid_len)
        .map_err(|e| StorageError::io(ctx(), e))?;
    file.sync_all().map_err(|e| StorageError::io(ctx(), e))
}

/// Removes a segment and its indexes (files that are already gone are fine).
pub(super) fn remove_segment_files(dir: &Path, base: u64) -> io::Result<()> {
    for path in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// What [`recover`] found.
pub(super) struct Recovered {
    /// At least one segment, the active one last.
    pub segments: Vec<Segment>,
    /// Set when the directory held no segment and recovery created the
    /// first: its directory entry is not durable yet.
    pub created_first_segment: bool,
}

/// Opens every segment of the partition in `dir`, repairing as described in
/// the module docs.
pub(super) fn recover(dir: &Path, interval: u32, files: &Arc<OpenFiles>) -> Result<Recovered> {
    let bases = segment_bases(dir)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        if let Some(prev) = segments.last()
            && prev.end != base
        {
            return Err(StorageError::Corrupt {
                path: segment::log_path(dir, base).display().to_string(),
                reason: format!(
                    "segment starts at offset {base} but the previous one ends at {}",
                    prev.end
                ),
            });
        }
        let (mut seg, len) = open_segment(dir, base, files)?;
        let is_tail = i + 1 == bases.len();
        if !is_tail {
            let sealed_ok = match load_indexes(dir, &mut seg, len) {
                Ok(()) => check_sealed(&mut seg, len)?,
                Err(e) => Err(e),
            };
            match sealed_ok {
                Ok(()) => {
                    segments.push(seg);
                    continue;
                }
                Err(why) => tracing::warn!(
                    path = %seg.path.display(),
                    reason = %why,
                    "rebuilding segment indexes by scanning"
                ),
            }
        }
        let end = full_scan(&mut seg, len, interval)?;
        if let Some(why) = &end.error {
            truncate(&seg, len, end.valid_len, end.next_offset, why)?;
        }
        seg.size = end.valid_len;
        seg.end = end.next_offset;
        if !is_tail {
            seg.write_indexes(dir).map_err(|e| {
                StorageError::io(format!("writing indexes of {}", seg.path.display()), e)
            })?;
        }
        let torn = end.error.is_some();
        segments.push(seg);
        if torn && !is_tail {
            // Nothing after a torn sealed segment can have been acknowledged.
            for &later in &bases[i + 1..] {
                tracing::warn!(
                    path = %segment::log_path(dir, later).display(),
                    "removing segment that follows a torn segment"
                );
                remove_segment_files(dir, later)
                    .map_err(|e| StorageError::io(format!("removing segment {later}"), e))?;
            }
            break;
        }
    }
    let created_first_segment = segments.is_empty();
    if created_first_segment {
        let seg = Segment::create(dir, 0, files).map_err(|e| {
            StorageError::io(format!("creating first segment in {}", dir.display()), e)
        })?;
        segments.push(seg);
    }
    Ok(Recovered {
        segments,
        created_first_segment,
    })
}

/// A stretch of one segment that may hold records appended within the dedup
/// window. It owns what it reads (the file is shared, and stays readable
/// even if retention unlinks it), so the rebuild runs without the log's lock.
pub(super) struct DedupScan {
    file: Arc<File>,
    path: PathBuf,
    /// File position to scan from, and the offset of the batch there.
    start: u64,
    start_offset: u64,
    /// File position to scan to: the segment's size at open.
    end: u64,
}

/// What [`rebuild_dedup`] must read to refill a window whose horizon is
/// `horizon`: the recovered segments from the first one holding a record at
/// or after it, using the time indexes to skip older data. Empty when no
/// record is that recent.
pub(super) fn dedup_scans(segments: &[Segment], horizon: i64) -> Result<Vec<DedupScan>> {
    let Some(first) = segments
        .iter()
        .position(|s| s.max_timestamp.is_some_and(|t| t >= horizon))
    else {
        return Ok(Vec::new());
    };
    segments[first..]
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let (start, start_offset) = if i == 0 {
                seg.position_for_timestamp(horizon)
            } else {
                (0, seg.base)
            };
            Ok(DedupScan {
                file: file_of(seg)?,
                path: seg.path.clone(),
                start,
                start_offset,
                end: seg.size,
            })
        })
        .collect()
}

/// Refills `dedup` with the ids of records appended at or after `horizon`
/// found by `scans`. Returns `Ok(false)`, leaving `dedup` partly filled, as
/// soon as it sees `cancelled` set (checked between batches).
pub(super) fn rebuild_dedup(
    scans: &[DedupScan],
    dedup: &mut DedupWindow,
    horizon: i64,
    cancelled: &AtomicBool,
) -> Result<bool> {
    for scan in scans {
        let mut failure = None;
        let end = segment::scan(
            &scan.file,
            scan.start,
            scan.end,
            scan.start_offset,
            |_, h, batch| {
                if cancelled.load(Ordering::Relaxed) {
                    return false;
                }
                if h.max_timestamp < horizon {
                    return true;
                }
                let r = format::decode_records(h, batch, |r| {
                    if r.timestamp_ms >= horizon {
                        dedup.insert(r.id, r.offset, r.timestamp_ms);
                    }
                });
                if let Err(e) = r {
                    failure.get_or_insert(e.to_string());
                }
                true
            },
        )
        .map_err(|e| StorageError::io(format!("scanning {}", scan.path.display()), e))?;
        if cancelled.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if let Some(reason) = failure.or(end.error) {
            // Reads report the bad batch as corrupt; dedup just forgets ids
            // past it rather than refusing to open the log.
            tracing::warn!(
                path = %scan.path.display(),
                reason = %reason,
                "dedup window rebuild skipped the rest of a corrupt segment"
            );
        }
    }
    Ok(true)
}
