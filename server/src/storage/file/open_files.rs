//! A bounded, least-recently-used cache of open segment files, so a broker
//! with thousands of idle partitions holds a bounded number of file
//! descriptors instead of one per segment.
//!
//! A segment names its file through a [`SegmentFile`]; every use asks it for
//! the open [`File`], which is a cache hit or one `open(2)`. The cache holds
//! one reference per file; callers hold theirs only for the duration of an
//! operation (a read, a write, an fsync round), so evicting a file closes it
//! as soon as the operation using it ends. Files with written but not yet
//! fsynced data are kept open by the log itself (see `LogState::dirty`), so
//! an fsync is always issued on a descriptor that saw the writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

/// Segment files kept open at most when the open-file limit allows it.
pub(crate) const MAX_CACHED_FILES: usize = 1024;

/// Segment files kept open at least, however low the open-file limit.
const MIN_CACHED_FILES: usize = 16;

/// The open segment files of one storage, most recently used first.
pub(crate) struct OpenFiles {
    cache: Mutex<LruCache<u64, Arc<File>>>,
    /// Hands out [`SegmentFile`] ids; never reused, so a dropped segment's
    /// id cannot alias a new one.
    next_id: AtomicU64,
    /// `open(2)` calls made on a cache miss, for tests and benchmarks.
    opens: AtomicU64,
}

impl OpenFiles {
    /// A cache of at most `capacity` open files (at least
    /// [`MIN_CACHED_FILES`]).
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        let capacity = NonZeroUsize::new(capacity.max(MIN_CACHED_FILES)).expect("positive");
        Arc::new(Self {
            cache: Mutex::new(LruCache::new(capacity)),
            next_id: AtomicU64::new(0),
            opens: AtomicU64::new(0),
        })
    }

    /// A cache sized from the process's open-file limit: a quarter of the
    /// soft limit (leaving the rest for connections, indexes and metadata
    /// writes), at most [`MAX_CACHED_FILES`].
    pub(crate) fn sized_for_process() -> Arc<Self> {
        let soft = super::limits::open_file_limit().unwrap_or(1024);
        let quarter = usize::try_from(soft / 4).unwrap_or(usize::MAX);
        Self::new(quarter.min(MAX_CACHED_FILES))
    }

    /// Most files this cache keeps open.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cache.lock().cap().get()
    }

    /// Files open in the cache now.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.cache.lock().len()
    }

    /// `open(2)` calls made so far on cache misses.
    #[cfg(test)]
    pub(crate) fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Registers `file`, just opened or created at `path`, and returns the
    /// handle the segment keeps.
    pub(crate) fn adopt(self: &Arc<Self>, path: PathBuf, file: File) -> SegmentFile {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = self.cache.lock().push(id, Arc::new(file));
        // Closing happens here, outside the lock.
        drop(evicted);
        SegmentFile {
            id,
            path,
            files: self.clone(),
        }
    }

    fn get(&self, id: u64, path: &Path) -> io::Result<Arc<File>> {
        if let Some(file) = self.cache.lock().get(&id) {
            return Ok(file.clone());
        }
        // Opened outside the lock; a concurrent miss on the same file opens
        // it too, and the later insert simply replaces the earlier.
        self.opens.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(open_segment_file(path)?);
        let evicted = self.cache.lock().push(id, file.clone());
        drop(evicted);
        Ok(file)
    }

    fn forget(&self, id: u64) {
        let removed = self.cache.lock().pop(&id);
        drop(removed);
    }
}

/// Opens an existing segment file for reading and writing (recovery may
/// truncate any segment; appends go to the last).
pub(crate) fn open_segment_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// A segment's `.log` file: opened on demand through the storage's
/// [`OpenFiles`], closed when evicted or when the segment is dropped.
pub(crate) struct SegmentFile {
    id: u64,
    path: PathBuf,
    files: Arc<OpenFiles>,
}

impl SegmentFile {
    /// The open file, from the cache or opened now.
    pub(crate) fn get(&self) -> io::Result<Arc<File>> {
        self.files.get(self.id, &self.path)
    }

    /// The file's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        self.files.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path, n: usize, cache: &Arc<OpenFiles>) -> Vec<SegmentFile> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.log"));
                std::fs::write(&path, format!("segment {i}")).unwrap();
                cache.adopt(path.clone(), open_segment_file(&path).unwrap())
            })
            .collect()
    }

    fn read_all(file: &File) -> String {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 64];
        let n = file.read_at(&mut buf, 0).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn keeps_at_most_capacity_files_open_and_reopens_evicted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(MIN_CACHED_FILES);
        let segments = files_in(dir.path(), MIN_CACHED_FILES * 3, &cache);
        assert_eq!(cache.open_count(), MIN_CACHED_FILES);
        assert_eq!(cache.opens(), 0);
        // The first file was evicted long ago: reading it opens it again.
        assert_eq!(read_all(&segments[0].get().unwrap()), "segment 0");
        assert_eq!(cache.opens(), 1);
        // Now cached: no further open.
        assert_eq!(read_all(&segments[0].get().unwrap()), "segment 0");
        assert_eq!(cache.opens(), 1);
        assert_eq!(cache.open_count(), MIN_CACHED_FILES);
    }

    #[test]
    fn dropping_a_segment_closes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(MIN_CACHED_FILES);
        let mut segments = files_in(dir.path(), 3, &cache);
        assert_eq!(cache.open_count(), 3);
        segments.remove(1);
        assert_eq!(cache.open_count(), 2);
    }

    #[test]
    fn a_file_in_use_stays_readable_after_its_segment_is_dropped_and_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(MIN_CACHED_FILES);
        let segments = files_in(dir.path(), 1, &cache);
        let held = segments[0].get().unwrap();
        std::fs::remove_file(segments[0].path()).unwrap();
        drop(segments);
        assert_eq!(read_all(&held), "segment 0");
    }

    #[test]
    fn a_vanished_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(MIN_CACHED_FILES);
        let segments = files_in(dir.path(), MIN_CACHED_FILES + 1, &cache);
        std::fs::remove_file(segments[0].path()).unwrap();
        let err = segments[0].get().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
