//! Every on-disk byte layout of the file log, in one place, so the format can
//! be reviewed (and evolved) without reading the log logic.
//!
//! All integers are little-endian. Decoding never panics: garbage yields a
//! [`FormatError`] that callers turn into truncation (recovery) or
//! `StorageError::Corrupt` (reads).

use bytes::{BufMut, Bytes};

use crate::storage::StoredRecord;

/// Format version of a batch; bump it (and keep decoding the old one) when
/// the layout changes.
pub(crate) const BATCH_MAGIC: u8 = 1;

/// Format version of a metadata file (topic meta, subscription meta, cursor).
pub(crate) const META_MAGIC: u8 = 1;

// A record batch: the records stored by one `append` call.
//
// { batch_len: u32 | crc32c: u32 | magic: u8 | attributes: u8 | record_count: u32
//   | base_offset: u64 | first_timestamp: i64 | max_timestamp: i64 | records... }
//
// `batch_len` counts every byte after the `batch_len` field; `crc32c` covers
// every byte after the `crc32c` field. `attributes` is reserved (0). Records
// hold consecutive offsets starting at `base_offset`.
/// Bytes before the first record of a batch.
pub(crate) const BATCH_HEADER_LEN: usize = 4 + 4 + 1 + 1 + 4 + 8 + 8 + 8;
/// Bytes of a batch covered by `batch_len` that precede the CRC'd part.
const CRC_START: usize = 8;

// A record inside a batch:
//
// { timestamp_delta: u32 | id_len: u32 | id bytes | payload_len: u32 | payload bytes }
//
// `timestamp_delta` is added to the batch's `first_timestamp`.
/// Fixed bytes of one record besides its id and payload.
pub(crate) const RECORD_OVERHEAD: usize = 4 + 4 + 4;

// A sparse offset index entry (`<base>.index`), one per `index_interval_bytes`
// of log, in increasing order:
//
// { relative_offset: u32 | position: u32 }
//
// `relative_offset` is a batch's base offset minus the segment's base offset;
// `position` is where that batch starts in the `.log` file.
/// Bytes of one offset index entry.
pub(crate) const INDEX_ENTRY_LEN: usize = 8;

// A time index entry (`<base>.timeindex`), written beside each offset index
// entry:
//
// { max_timestamp: i64 | relative_offset: u32 }
//
// `max_timestamp` is the newest timestamp of the segment up to and including
// the batch at `relative_offset`.
/// Bytes of one time index entry.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

// Metadata files, replaced atomically: a topic's `meta.bin`, and a
// subscription's `<name>.meta` and `<name>.cursor`:
//
// { magic: u8 | crc32c: u32 | meta_len: u32 | meta bytes }
//
// `crc32c` covers `meta_len` and the meta bytes.
/// Bytes of the metadata header.
const META_HEADER_LEN: usize = 1 + 4 + 4;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(reason: impl Into<String>) -> FormatError {
    FormatError(reason.into())
}

/// A little-endian reader over a slice that reports running out of bytes
/// instead of panicking.
struct Cursor<'a> {
    /// Bytes still unread.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < n {
            return Err(invalid(format!(
                "needed {n} bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(self.u64()? as i64)
    }
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    /// Whole batch size in bytes, including the `batch_len` field itself.
    pub total_len: usize,
    /// Stored CRC of everything after the CRC field.
    pub crc: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records (never 0).
    pub record_count: u32,
    /// Timestamp of the first record; record deltas are relative to it.
    pub first_timestamp: i64,
    /// Newest timestamp in the batch.
    pub max_timestamp: i64,
}

impl BatchHeader {
    /// Offset one past the batch's last record.
    pub(crate) fn end_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// The total size of the batch starting at `buf`, from its length field, if
/// at least those 4 bytes are present.
pub(crate) fn peek_batch_len(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize + 4)
}

/// Decodes a batch header from the start of `buf` (which need only hold the
/// header) and checks what can be checked without the body.
pub(crate) fn decode_header(buf: &[u8]) -> Result<BatchHeader, FormatError> {
    let mut c = Cursor { rest: buf };
    let batch_len = c.u32()? as usize;
    let crc = c.u32()?;
    let magic = c.u8()?;
    let _attributes = c.u8()?;
    let record_count = c.u32()?;
    let base_offset = c.u64()?;
    let first_timestamp = c.i64()?;
    let max_timestamp = c.i64()?;
    if magic != BATCH_MAGIC {
        return Err(invalid(format!("unknown batch magic {magic}")));
    }
    let total_len = batch_len + 4;
    let min_len = BATCH_HEADER_LEN + record_count as usize * RECORD_OVERHEAD;
    if record_count == 0 || total_len < min_len {
        return Err(invalid(format!(
            "batch of {total_len} bytes cannot hold {record_count} records"
        )));
    }
    if max_timestamp < first_timestamp {
        return Err(invalid("max timestamp before first timestamp"));
    }
    Ok(BatchHeader {
        total_len,
        crc,
        base_offset,
        record_count,
        first_timestamp,
        max_timestamp,
    })
}

/// Checks the CRC of a whole batch (`batch.len() == header.total_len`).
pub(crate) fn crc_matches(header: &BatchHeader, batch: &[u8]) -> bool {
    batch.len() == header.total_len
        && batch.len() >= CRC_START
        && crc32c::crc32c(&batch[CRC_START..]) == header.crc
}

/// Decodes a full batch and validates its CRC, length and header.
pub(crate) fn decode_checked(batch: &[u8]) -> Result<BatchHeader, FormatError> {
    let header = decode_header(batch)?;
    if batch.len() != header.total_len {
        return Err(invalid(format!(
            "batch is {} bytes, header says {}",
            batch.len(),
            header.total_len
        )));
    }
    if !crc_matches(&header, batch) {
        return Err(invalid(format!(
            "CRC mismatch in batch at offset {}",
            header.base_offset
        )));
    }
    Ok(header)
}

/// Decodes the records of a CRC-checked batch, slicing ids and payloads out
/// of `batch` without copying them.
pub(crate) fn decode_records(
    header: &BatchHeader,
    batch: &Bytes,
    mut f: impl FnMut(StoredRecord),
) -> Result<(), FormatError> {
    let body = batch
        .get(BATCH_HEADER_LEN..header.total_len)
        .ok_or_else(|| invalid("batch shorter than its header"))?;
    let mut c = Cursor { rest: body };
    for i in 0..u64::from(header.record_count) {
        let delta = c.u32()?;
        let id_len = c.u32()? as usize;
        let id_start = header.total_len - c.rest.len();
        c.take(id_len)?;
        let payload_len = c.u32()? as usize;
        let payload_start = header.total_len - c.rest.len();
        c.take(payload_len)?;
        f(StoredRecord {
            offset: header.base_offset + i,
            timestamp_ms: header.first_timestamp.saturating_add(i64::from(delta)),
            id: batch.slice(id_start..id_start + id_len),
            payload: batch.slice(payload_start..payload_start + payload_len),
        });
    }
    if !c.rest.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the last record",
            c.rest.len()
        )));
    }
    Ok(())
}

/// Size of the encoded batch holding records of these id and payload sizes.
pub(crate) fn batch_len<'a>(records: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    BATCH_HEADER_LEN
        + records
            .map(|(id, payload)| RECORD_OVERHEAD + id.len() + payload.len())
            .sum::<usize>()
}

/// Encodes records stored at `base_offset..` with one timestamp into `out`
/// (cleared first). The caller checked that ids and payloads fit in u32.
pub(crate) fn encode_batch<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    timestamp: i64,
    records: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) {
    out.clear();
    let count = records.len() as u32;
    out.put_u32_le(0); // batch_len, patched below
    out.put_u32_le(0); // crc, patched below
    out.put_u8(BATCH_MAGIC);
    out.put_u8(0);
    out.put_u32_le(count);
    out.put_u64_le(base_offset);
    out.put_i64_le(timestamp);
    out.put_i64_le(timestamp);
    for (id, payload) in records {
        out.put_u32_le(0);
        out.put_u32_le(id.len() as u32);
        out.put_slice(id);
        out.put_u32_le(payload.len() as u32);
        out.put_slice(payload);
    }
    let batch_len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&batch_len.to_le_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One offset index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
    /// File position of that batch.
    pub position: u32,
}

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Newest timestamp up to and including the batch at `relative_offset`.
    pub max_timestamp: i64,
    /// Batch base offset minus the segment base offset.
    pub relative_offset: u32,
}

/// Encodes an offset index file.
pub(crate) fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for e in entries {
        out.put_u32_le(e.relative_offset);
        out.put_u32_le(e.position);
    }
    out
}

/// Encodes a time index file.
pub(crate) fn encode_time_index(entries: &[TimeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
    for e in entries {
        out.put_i64_le(e.max_timestamp);
        out.put_u32_le(e.relative_offset);
    }
    out
}

/// Decodes an offset index file, checking that entries strictly increase
/// and point inside a log file of `log_len` bytes.
pub(crate) fn decode_index(buf: &[u8], log_len: u64) -> Result<Vec<IndexEntry>, FormatError> {
    if !buf.len().is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(invalid(format!(
            "index size {} is not a multiple of 8",
            buf.len()
        )));
    }
    let mut c = Cursor { rest: buf };
    let mut out: Vec<IndexEntry> = Vec::with_capacity(buf.len() / INDEX_ENTRY_LEN);
    while !c.rest.is_empty() {
        let e = IndexEntry {
            relative_offset: c.u32()?,
            position: c.u32()?,
        };
        if u64::from(e.position) >= log_len {
            return Err(invalid(format!(
                "index points at {} past the log end {log_len}",
                e.position
            )));
        }
        match out.last() {
            None if e.position != 0 || e.relative_offset != 0 => {
                return Err(invalid("first index entry is not the segment start"));
            }
            Some(p) if e.relative_offset <= p.relative_offset || e.position <= p.position => {
                return Err(invalid("index entries are not increasing"));
            }
            _ => {}
        }
        out.push(e);
    }
    Ok(out)
}

/// Decodes a time index file, checking that entries never decrease.
pub(crate) fn decode_time_index(buf: &[u8]) -> Result<Vec<TimeEntry>, FormatError> {
    if !buf.len().is_multiple_of(TIME_ENTRY_LEN) {
        return Err(invalid(format!(
            "time index size {} is not a multiple of 12",
            buf.len()
        )));
    }
    let mut c = Cursor { rest: buf };
    let mut out: Vec<TimeEntry> = Vec::with_capacity(buf.len() / TIME_ENTRY_LEN);
    while !c.rest.is_empty() {
        let e = TimeEntry {
            max_timestamp: c.i64()?,
            relative_offset: c.u32()?,
        };
        if let Some(p) = out.last()
            && (e.max_timestamp < p.max_timestamp || e.relative_offset <= p.relative_offset)
        {
            return Err(invalid("time index entries are not increasing"));
        }
        out.push(e);
    }
    Ok(out)
}

/// Encodes a metadata file (a topic's `meta.bin`, a subscription's `.meta`
/// or `.cursor`) holding the opaque `meta`.
pub(crate) fn encode_meta(meta: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_HEADER_LEN + meta.len());
    out.put_u8(META_MAGIC);
    out.put_u32_le(0);
    out.put_u32_le(meta.len() as u32);
    out.put_slice(meta);
    let crc = crc32c::crc32c(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a metadata file written by [`encode_meta`], checking its CRC.
pub(crate) fn decode_meta(buf: &[u8]) -> Result<&[u8], FormatError> {
    let mut c = Cursor { rest: buf };
    let magic = c.u8()?;
    if magic != META_MAGIC {
        return Err(invalid(format!("unknown meta magic {magic}")));
    }
    let crc = c.u32()?;
    if crc32c::crc32c(c.rest) != crc {
        return Err(invalid("meta CRC mismatch"));
    }
    let len = c.u32()? as usize;
    let meta = c.take(len)?;
    if !c.rest.is_empty() {
        return Err(invalid("trailing bytes after meta"));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_batch(&mut out, 42, 1_000, records.iter().copied());
        out
    }

    #[test]
    fn batch_round_trips() {
        let buf = encode(&[(b"a", b"hello"), (b"", b"")]);
        assert_eq!(
            buf.len(),
            batch_len([(&b"a"[..], &b"hello"[..]), (b"", b"")].into_iter())
        );
        let header = decode_checked(&buf).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.end_offset(), 44);
        let mut got = Vec::new();
        decode_records(&header, &Bytes::from(buf), |r| got.push(r)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, Bytes::from_static(b"a"));
        assert_eq!(got[0].payload, Bytes::from_static(b"hello"));
        assert_eq!(got[1].offset, 43);
        assert_eq!(got[1].timestamp_ms, 1_000);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut buf = encode(&[(b"id", b"payload")]);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(decode_checked(&buf).is_err());
    }

    #[test]
    fn meta_round_trips_and_rejects_garbage() {
        let buf = encode_meta(b"topic");
        assert_eq!(decode_meta(&buf).unwrap(), b"topic");
        assert!(decode_meta(&buf[..buf.len() - 1]).is_err());
        assert!(decode_meta(b"").is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(h) = decode_header(&bytes) {
                let b = Bytes::from(bytes.clone());
                let _ = crc_matches(&h, &bytes);
                let _ = decode_records(&h, &b, |_| {});
            }
            let _ = decode_checked(&bytes);
            let _ = decode_index(&bytes, 1 << 20);
            let _ = decode_time_index(&bytes);
            let _ = decode_meta(&bytes);
        }
    }
}
