//! One segment of a partition log (a `.log` file plus its sparse indexes) and
//! the sequential batch scanner that recovery, index rebuilds and timestamp
//! lookups share.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::format::{self, BatchHeader, IndexEntry, TimeEntry};
use super::open_files::{OpenFiles, SegmentFile};

/// How much a sequential scan reads per `pread`.
const SCAN_CHUNK: usize = 4 * 1024 * 1024;

/// The file name stem of a segment: its base offset, zero-padded so names sort.
pub(super) fn stem(base: u64) -> String {
    format!("{base:020}")
}

/// Path of a segment's `.log` file.
pub(super) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.log", stem(base)))
}

/// Path of a segment's offset index.
pub(super) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.index", stem(base)))
}

/// Path of a segment's time index.
pub(super) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.timeindex", stem(base)))
}

/// Reads exactly `len` bytes at `pos`, or fewer if the file ends first.
pub(super) fn read_at(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// A segment as the log tracks it in memory.
#[derive(Debug)]
pub(super) struct Segment {
    /// Offset of the first record (also the file name).
    pub base: u64,
    /// Offset one past the last record written to this segment.
    pub end: u64,
    /// Bytes of valid batches in the `.log` file.
    pub size: u64,
    /// Newest record timestamp, `None` while empty.
    pub max_timestamp: Option<i64>,
    /// The `.log` file, opened on demand; an operation holds the `Arc<File>`
    /// it gets, so readers can `pread` without the log's lock.
    pub file: SegmentFile,
    /// Path of the `.log` file, for error messages and deletion.
    pub path: PathBuf,
    /// Sparse offset index, always starting with the first batch.
    pub index: Vec<IndexEntry>,
    /// Time index, one entry beside each offset index entry.
    pub time_index: Vec<TimeEntry>,
    /// Log bytes written since the last index entry, for the index cadence.
    pub bytes_since_index: u64,
}

impl Segment {
    /// Creates an empty segment file starting at `base`.
    pub(super) fn create(dir: &Path, base: u64, files: &Arc<OpenFiles>) -> io::Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Segment::empty(base, files.adopt(path.clone(), file), path))
    }

    /// An in-memory segment with no batches over an already open file.
    pub(super) fn empty(base: u64, file: SegmentFile, path: PathBuf) -> Segment {
        Segment {
            base,
            end: base,
            size: 0,
            max_timestamp: None,
            file,
            path,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
        }
    }

    /// Accounts for a batch written at `pos`, adding index entries at the
    /// configured cadence (and always for the first batch).
    pub(super) fn note_batch(&mut self, pos: u64, header: &BatchHeader, interval: u32) {
        let max_ts = self
            .max_timestamp
            .map_or(header.max_timestamp, |t| t.max(header.max_timestamp));
        if self.index.is_empty() || self.bytes_since_index >= u64::from(interval) {
            let relative_offset = (header.base_offset - self.base) as u32;
            self.index.push(IndexEntry {
                relative_offset,
                position: pos as u32,
            });
            self.time_index.push(TimeEntry {
                max_timestamp: max_ts,
                relative_offset,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_len as u64;
        self.size = pos + header.total_len as u64;
        self.end = header.end_offset();
        self.max_timestamp = Some(max_ts);
    }

    /// File position and base offset of the last indexed batch at or before
    /// `offset`.
    pub(super) fn position_for(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        let i = self.index.partition_point(|e| e.relative_offset <= rel);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (
                u64::from(e.position),
                self.base + u64::from(e.relative_offset),
            ),
            None => (0, self.base),
        }
    }

    /// A file position (and the batch offset there) from which scanning finds
    /// the first record with a timestamp `>= timestamp_ms`.
    pub(super) fn position_for_timestamp(&self, timestamp_ms: i64) -> (u64, u64) {
        let i = self
            .time_index
            .partition_point(|e| e.max_timestamp < timestamp_ms);
        match i.checked_sub(1).and_then(|i| self.time_index.get(i)) {
            // Everything up to that batch is older, so the target lies after
            // its start; the batch itself is indexed, so scan from there.
            Some(e) => self.position_for(self.base + u64::from(e.relative_offset)),
            None => (0, self.base),
        }
    }

    /// Writes both index files in full (after a roll, a rebuild or at close).
    /// Index files are derived data, so they are not fsynced: a torn index is
    /// detected and rebuilt on open.
    pub(super) fn write_indexes(&self, dir: &Path) -> io::Result<()> {
        std::fs::write(
            index_path(dir, self.base),
            format::encode_index(&self.index),
        )?;
        std::fs::write(
            time_index_path(dir, self.base),
            format::encode_time_index(&self.time_index),
        )
    }
}

/// Where a scan stopped.
#[derive(Debug)]
pub(super) struct ScanEnd {
    /// File position just past the last valid batch.
    pub valid_len: u64,
    /// Offset one past the last valid record.
    pub next_offset: u64,
    /// Newest timestamp seen in valid batches.
    pub max_timestamp: Option<i64>,
    /// Why the scan stopped before `end`, if it did.
    pub error: Option<String>,
}

/// Reads batches from `start` to `end` in big chunks, validating length,
/// CRC, record structure and offset continuity (starting at `expected`),
/// and calls `f(position, header, batch bytes)` for each valid one until it
/// returns false. Stops at the first invalid batch and says why in
/// [`ScanEnd::error`].
pub(super) fn scan(
    file: &File,
    start: u64,
    end: u64,
    expected: u64,
    mut f: impl FnMut(u64, &BatchHeader, &Bytes) -> bool,
) -> io::Result<ScanEnd> {
    let mut out = ScanEnd {
        valid_len: start,
        next_offset: expected,
        max_timestamp: None,
        error: None,
    };
    let mut pos = start;
    let mut chunk_len = SCAN_CHUNK;
    while pos < end {
        let len = chunk_len.min((end - pos) as usize);
        let buf = read_at(file, pos, len)?;
        let mut off = 0usize;
        loop {
            let rest = &buf[off..];
            if rest.is_empty() {
                break;
            }
            let Some(total) = format::peek_batch_len(rest) else {
                break;
            };
            if total as u64 > end - (pos + off as u64) || total < format::BATCH_HEADER_LEN {
                out.error = Some(format!(
                    "batch length {total} at position {} runs past the end ({end})",
                    pos + off as u64
                ));
                return Ok(out);
            }
            if total > rest.len() {
                break;
            }
            let batch = buf.slice(off..off + total);
            let checked = format::decode_checked(&batch).and_then(|h| {
                if h.base_offset != out.next_offset {
                    return Err(format::FormatError(format!(
                        "batch starts at offset {}, expected {}",
                        h.base_offset, out.next_offset
                    )));
                }
                format::decode_records(&h, &batch, |_| {})?;
                Ok(h)
            });
            let header = match checked {
                Ok(h) => h,
                Err(e) => {
                    out.error = Some(format!("at position {}: {e}", pos + off as u64));
                    return Ok(out);
                }
            };
            let more = f(pos + off as u64, &header, &batch);
            off += total;
            out.valid_len = pos + off as u64;
            out.next_offset = header.end_offset();
            out.max_timestamp = Some(header.max_timestamp);
            if !more {
                return Ok(out);
            }
        }
        if off == 0 {
            // One batch is larger than the chunk: read exactly that batch
            // next time around. Anything else means the file ends mid-batch.
            match format::peek_batch_len(&buf) {
                Some(need) if need > buf.len() && buf.len() == len => {
                    chunk_len = need;
                    continue;
                }
                _ => {
                    out.error = Some(format!(
                        "file ends inside a batch at position {pos} ({} bytes left)",
                        buf.len()
                    ));
                    return Ok(out);
                }
            }
        }
        chunk_len = SCAN_CHUNK;
        pos += off as u64;
    }
    Ok(out)
}
