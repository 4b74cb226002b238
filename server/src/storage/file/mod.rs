//! The durable implementation of the storage traits: each partition is a
//! directory of segment files holding CRC-checked record batches, with sparse
//! offset and time indexes, group-commit fsync and crash recovery.
//!
//! Layout:
//! - `<data_dir>/topics/<topic>/meta.bin`: the topic's metadata;
//! - `<data_dir>/topics/<topic>/<partition>/<base_offset:020>.{log,index,timeindex}`;
//! - `<data_dir>/topics/<topic>/subscriptions/<name>.meta` and `<name>.cursor`:
//!   a subscription's metadata and last cursor.
//!
//! `meta.bin`, `.meta` and `.cursor` files share one framing (magic, crc32c,
//! length, bytes; see [`format::encode_meta`]) and are replaced atomically by
//! [`write_framed_file`]: write a unique `*.tmp` file, fsync it, rename it over
//! the target, fsync the directory. A crash leaves the old or the new file
//! whole, plus perhaps a `*.tmp` file that listing subscriptions removes.
//!
//! Lock order: `FileStorage::logs` before `FileStorage::subscription_files`
//! before a log's `Shared::state` before the sync pool's queue and the
//! open-file cache; a syncer round only ever takes `Shared::state`, and
//! never holds it while calling `fsync`.
//!
//! Idle partitions cost no thread and (beyond a bounded cache) no file
//! descriptor: fsync rounds run on a storage-wide pool of
//! [`sync_pool::STORAGE_SYNC_THREADS`] threads, and segment files are opened
//! on demand through an LRU of [`open_files::MAX_CACHED_FILES`] at most.
//!
//! Opening a log recovers it (fast: indexes let it skip sealed segments) and
//! returns; refilling the dedup window, which reads every record appended
//! within it, runs on a background rebuild thread (see [`DedupStatus`]). It
//! reads without any lock and takes `Shared::state` only to install the
//! window. Every append waits for the window first; nothing else does.

pub(crate) mod format;
pub(crate) mod limits;
pub(crate) mod lock;
pub(crate) mod open_files;
mod recovery;
mod segment;
pub(crate) mod sync_pool;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::open_files::OpenFiles;
use self::sync_pool::{Next, SyncPool, Syncable};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use self::format::BatchHeader;
use self::lock::DataDirLock;
use self::segment::Segment;
use super::dedup::DedupWindow;
use super::{
    Appended, FsyncPolicy, LogConfig, NewRecord, PartitionLog, PartitionStats, Result, Retention,
    RetentionReport, Storage, StorageError, StoredRecord, StoredSubscription, StoredTopic,
};

/// Name of a topic's metadata file.
const META_FILE: &str = "meta.bin";

/// Name of the directory, inside a topic's, holding its subscriptions.
const SUBSCRIPTIONS_DIR: &str = "subscriptions";

/// Suffix of a subscription's metadata file (`<name>.meta`).
const SUBSCRIPTION_META_SUFFIX: &str = ".meta";

/// Suffix of a subscription's cursor file (`<name>.cursor`).
const CURSOR_SUFFIX: &str = ".cursor";

/// Suffix of the temporary file of an atomic replace in progress (or
/// interrupted by a crash).
const TMP_SUFFIX: &str = ".tmp";

/// Makes temporary file names unique, so concurrent replaces of one file
/// never write into each other's temporary file.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Largest read a single `pread` does for `read` (bigger batches are read whole).
const MAX_READ_CHUNK: usize = 4 * 1024 * 1024;

/// Bytes per record assumed when sizing a read by record count.
const RECORD_SIZE_GUESS: usize = 512;

/// Smallest read a single `pread` does for `read`.
const MIN_READ_CHUNK: usize = 64 * 1024;

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// fsyncs a directory so entries created, renamed or removed in it persist.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` atomically and durably with `blob` in the metadata
/// framing ([`format::encode_meta`]): writes `dir/name.<seq>.tmp`, fsyncs it,
/// renames it over `dir/name` and fsyncs `dir`. After a crash `dir/name` is
/// the old or the new file, whole.
///
/// Cost: one small write and two fsyncs (file, then directory). For cursors
/// the broker calls this about every 100 ms per subscription, so a broker
/// with many subscriptions pays two fsyncs per subscription per flush; fine
/// at hundreds of subscriptions, and a per-topic cursor log with group
/// commit would be the next step if it ever shows up in profiles.
fn write_framed_file(dir: &Path, name: &str, blob: &[u8]) -> io::Result<()> {
    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{seq}{TMP_SUFFIX}"));
    let write = || -> io::Result<()> {
        let file = File::create(&tmp)?;
        file.write_all_at(&format::encode_meta(blob), 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    };
    let result = write();
    if result.is_err() {
        // Best effort; a leftover is harmless (ignored, and removed on list).
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a file written by [`write_framed_file`]: `None` when it does not
/// exist, [`StorageError::Corrupt`] naming it when it fails validation.
fn read_framed_file(path: &Path) -> Result<Option<Bytes>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
    };
    let blob = format::decode_meta(&bytes).map_err(|e| corrupt(path, e))?;
    Ok(Some(Bytes::copy_from_slice(blob)))
}

/// Removes a file; true if it existed.
fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Topics stored under one data directory.
pub struct FileStorage {
    /// `<data_dir>/topics`, one directory per topic.
    topics_dir: PathBuf,
    /// Logs handed out and still alive, so reopening returns the same log and
    /// deleting a topic can close them.
    logs: Mutex<LiveLogs>,
    /// Subscription writes (meta, cursor, delete) hold it shared, so they run
    /// concurrently; listing (which removes leftover `*.tmp` files) and topic
    /// deletion hold it exclusively, so they never remove the temporary
    /// file of a write in progress.
    subscription_files: RwLock<()>,
    /// The fsync pool and open-file cache every log of this storage shares.
    io: LogIo,
    /// The data directory's exclusive lock, held while this storage lives.
    _lock: DataDirLock,
}

/// The logs a storage handed out, pruned of dead ones now and then (not on
/// every open: with ten thousand topics that made creating them quadratic).
#[derive(Default)]
struct LiveLogs {
    logs: HashMap<(String, u32), Weak<FileLog>>,
    /// Size at which dead entries are next pruned.
    prune_at: usize,
}

impl LiveLogs {
    fn insert(&mut self, key: (String, u32), log: &Arc<FileLog>) {
        if self.logs.len() >= self.prune_at {
            self.logs.retain(|_, l| l.strong_count() > 0);
            self.prune_at = (self.logs.len() * 2).max(64);
        }
        self.logs.insert(key, Arc::downgrade(log));
    }
}

/// What the logs of one storage share: the threads that run their fsync
/// rounds and the cache of their open segment files.
#[derive(Clone)]
pub(crate) struct LogIo {
    pool: Arc<SyncPool>,
    files: Arc<OpenFiles>,
}

impl LogIo {
    fn start(threads: usize, files: Arc<OpenFiles>) -> Result<Self> {
        let pool = SyncPool::start(threads)
            .map_err(|e| StorageError::io("starting the syncer threads", e))?;
        Ok(Self { pool, files })
    }
}
impl FileStorage {
    /// Opens (creating if needed) a data directory, takes its exclusive lock
    /// (see [`lock`]) and checks that it is writable by creating and
    /// removing a probe file.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(data_dir, None)
    }

    /// [`FileStorage::open`], recording `holder` (e.g. `listening on
    /// 127.0.0.1:50051`) in the lock file so that a second server refused
    /// the directory can say who has it.
    pub fn open_as(data_dir: impl AsRef<Path>, holder: Option<&str>) -> Result<Self> {
        Self::open_with_files(data_dir.as_ref(), holder, OpenFiles::sized_for_process())
    }

    /// [`FileStorage::open`] keeping at most `capacity` segment files open.
    #[cfg(test)]
    fn open_with_file_capacity(data_dir: &Path, capacity: usize) -> Result<Self> {
        Self::open_with_files(data_dir, None, OpenFiles::new(capacity))
    }

    fn open_with_files(
        data_dir: &Path,
        holder: Option<&str>,
        files: Arc<OpenFiles>,
    ) -> Result<Self> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|e| {
            StorageError::io(
                format!("creating data directory {}", topics_dir.display()),
                e,
            )
        })?;
        let lock = DataDirLock::acquire(data_dir, holder)?;
        let io = LogIo::start(sync_pool::STORAGE_SYNC_THREADS, files)?;
        let probe = data_dir.join(format!(".herald-write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"probe")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                StorageError::io(
                    format!(
                        "checking that data directory {} is writable",
                        data_dir.display()
                    ),
                    e,
                )
            })?;
        Ok(Self {
            topics_dir,
            logs: Mutex::new(LiveLogs::default()),
            subscription_files: RwLock::new(()),
            io,
            _lock: lock,
        })
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.topics_dir.join(topic)
    }

    fn subscriptions_dir(&self, topic: &str) -> PathBuf {
        self.topic_dir(topic).join(SUBSCRIPTIONS_DIR)
    }

    /// Segment files open now (in the cache) and the most it keeps open.
    #[cfg(test)]
    fn open_segment_files(&self) -> (usize, usize) {
        (self.io.files.open_count(), self.io.files.capacity())
    }
}

impl Storage for FileStorage {
    fn list_topics(&self) -> Result<Vec<StoredTopic>> {
        let ctx = || format!("listing topics in {}", self.topics_dir.display());
        let mut topics = Vec::new();
        for entry in std::fs::read_dir(&self.topics_dir).map_err(|e| StorageError::io(ctx(), e))? {
            let entry = entry.map_err(|e| StorageError::io(ctx(), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(meta) = read_framed_file(&entry.path().join(META_FILE))? else {
                tracing::warn!(topic = %name, "topic directory without {META_FILE}; ignored");
                continue;
            };
            topics.push(StoredTopic { name, meta });
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    fn write_topic_meta(&self, topic: &str, meta: &[u8]) -> Result<()> {
        let dir = self.topic_dir(topic);
        let ctx = |what: &str| format!("{what} metadata of topic {topic} in {}", dir.display());
        // A first write creates the topic: its directory entry (perhaps
        // made by `open_partition`, which syncs nothing) must persist too.
        let creating = !dir.join(META_FILE).exists();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(ctx("creating"), e))?;
        write_framed_file(&dir, META_FILE, meta)
            .map_err(|e| StorageError::io(ctx("writing"), e))?;
        if creating {
            sync_dir(&self.topics_dir).map_err(|e| StorageError::io(ctx("creating"), e))?;
        }
        Ok(())
    }

    fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        let mut logs = self.logs.lock();
        let key = (topic.to_owned(), partition);
        if let Some(log) = logs.logs.get(&key).and_then(Weak::upgrade) {
            return Ok(log);
        }
        // A new partition directory is made durable by the log's first fsync
        // round, before anything appended to it is acknowledged (see
        // `LogState::parent_dirty`); creating a topic costs no fsync here.
        let dir = self.topic_dir(topic).join(partition.to_string());
        let log = FileLog::open_with(&dir, config, None, self.io.clone())?;
        logs.insert(key, &log);
        Ok(log)
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let mut logs = self.logs.lock();
        let open: Vec<_> = logs
            .logs
            .keys()
            .filter(|(t, _)| t == topic)
            .cloned()
            .collect();
        for key in open {
            if let Some(log) = logs.logs.remove(&key).and_then(|w| w.upgrade()) {
                log.close();
            }
        }
        // No subscription write may create files while the tree is removed.
        let _exclusive = self.subscription_files.write();
        let dir = self.topic_dir(topic);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(format!("deleting {}", dir.display()), e)),
        }
        sync_dir(&self.topics_dir)
            .map_err(|e| StorageError::io(format!("deleting {}", dir.display()), e))
    }

    fn list_subscriptions(&self, topic: &str) -> Result<Vec<StoredSubscription>> {
        // Exclusive: a `*.tmp` file seen now is not a write in progress.
        let _exclusive = self.subscription_files.write();
        let dir = self.subscriptions_dir(topic);
        let ctx = || format!("listing subscriptions in {}", dir.display());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(ctx(), e)),
        };
        let mut names = Vec::new();
        let mut cursors = std::collections::BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(ctx(), e))?;
            let Ok(file_name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %dir.display(), file = ?entry.file_name(), "unexpected file in subscriptions directory; ignored");
                continue;
            };
            if file_name.ends_with(TMP_SUFFIX) {
                // Left by a write interrupted by a crash: the target file is
                // still the previous version, whole.
                let path = entry.path();
                if let Err(e) = remove_if_exists(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove leftover temporary file");
                }
            } else if let Some(name) = file_name.strip_suffix(SUBSCRIPTION_META_SUFFIX) {
                names.push(name.to_owned());
            } else if let Some(name) = file_name.strip_suffix(CURSOR_SUFFIX) {
                cursors.insert(name.to_owned());
            } else {
                tracing::warn!(path = %entry.path().display(), "unexpected file in subscriptions directory; ignored");
            }
        }
        names.sort();
        let mut subscriptions = Vec::with_capacity(names.len());
        for name in names {
            let meta_path = dir.join(format!("{name}{SUBSCRIPTION_META_SUFFIX}"));
            let Some(meta) = read_framed_file(&meta_path)? else {
                continue;
            };
            let cursor = if cursors.remove(&name) {
                // A damaged cursor is an error, not "no cursor": starting
                // over from the initial position could skip unacked events.
                read_framed_file(&dir.join(format!("{name}{CURSOR_SUFFIX}")))?
            } else {
                None
            };
            subscriptions.push(StoredSubscription { name, meta, cursor });
        }
        for orphan in cursors {
            // Deleting removes `.meta` first, so this is the remains of an
            // interrupted delete: remove it, or a later subscription of the
            // same name would inherit its cursor.
            let path = dir.join(format!("{orphan}{CURSOR_SUFFIX}"));
            tracing::warn!(path = %path.display(), "subscription cursor without metadata; ignored and removed");
            if let Err(e) = remove_if_exists(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove orphaned cursor");
            }
        }
        Ok(subscriptions)
    }

    fn write_subscription_meta(&self, topic: &str, subscription: &str, meta: &[u8]) -> Result<()> {
        let _shared = self.subscription_files.read();
        let topic_dir = self.topic_dir(topic);
        let dir = topic_dir.join(SUBSCRIPTIONS_DIR);
        let ctx = || {
            format!(
                "writing metadata of subscription {subscription} in {}",
                dir.display()
            )
        };
        if !topic_dir.join(META_FILE).exists() {
            return Err(StorageError::not_found(
                ctx(),
                format!("topic {topic} does not exist"),
            ));
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => sync_dir(&topic_dir).map_err(|e| StorageError::io(ctx(), e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io(ctx(), e)),
        }
        let name = format!("{subscription}{SUBSCRIPTION_META_SUFFIX}");
        write_framed_file(&dir, &name, meta).map_err(|e| StorageError::io(ctx(), e))
    }

    fn write_cursor(&self, topic: &str, subscription: &str, cursor: &[u8]) -> Result<()> {
        let _shared = self.subscription_files.read();
        let dir = self.subscriptions_dir(topic);
        let ctx = || {
            format!(
                "writing the cursor of subscription {subscription} in {}",
                dir.display()
            )
        };
        // One stat, small next to the two fsyncs below; keeps a flush racing
        // a delete from leaving a cursor without metadata.
        if !dir
            .join(format!("{subscription}{SUBSCRIPTION_META_SUFFIX}"))
            .exists()
        {
            return Err(StorageError::not_found(
                ctx(),
                format!("subscription {subscription} of topic {topic} does not exist"),
            ));
        }
        let name = format!("{subscription}{CURSOR_SUFFIX}");
        write_framed_file(&dir, &name, cursor).map_err(|e| StorageError::io(ctx(), e))
    }

    fn delete_subscription(&self, topic: &str, subscription: &str) -> Result<()> {
        let _shared = self.subscription_files.read();
        let dir = self.subscriptions_dir(topic);
        let ctx = || format!("deleting subscription {subscription} in {}", dir.display());
        // Metadata first: once it is gone the subscription is gone, and a
        // crash before the cursor is removed leaves an orphan cursor that
        // listing ignores and removes.
        let mut removed = false;
        for suffix in [SUBSCRIPTION_META_SUFFIX, CURSOR_SUFFIX] {
            let path = dir.join(format!("{subscription}{suffix}"));
            removed |= remove_if_exists(&path).map_err(|e| StorageError::io(ctx(), e))?;
        }
        if removed {
            sync_dir(&dir).map_err(|e| StorageError::io(ctx(), e))?;
        }
        Ok(())
    }
}

/// A position in the log: an offset and where its batch boundary is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// Offset one past the last record covered.
    offset: u64,
    /// Base offset of the segment holding that end.
    segment: u64,
    /// File position in that segment just past the last covered batch.
    position: u64,
}

/// An fsync (or truncate) failure after which the log refuses appends.
#[derive(Debug, Clone)]
struct Failure {
    /// The OS error code, so ENOSPC still maps to `StorageError::Full`.
    raw_os_error: Option<i32>,
    /// What failed, for the error message.
    message: String,
}

impl Failure {
    fn from_io(what: &str, e: &io::Error) -> Self {
        Failure {
            raw_os_error: e.raw_os_error(),
            message: format!("{what}: {e}"),
        }
    }

    fn from_storage(what: &str, e: &StorageError) -> Self {
        let raw_os_error = match e {
            StorageError::Io { source, .. } | StorageError::Full { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        };
        Failure {
            raw_os_error,
            message: format!("{what}: {e}"),
        }
    }

    fn to_error(&self, dir: &Path) -> StorageError {
        let source = match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(self.message.clone()),
        };
        StorageError::io(
            format!(
                "using log {} after an earlier failure ({})",
                dir.display(),
                self.message
            ),
            source,
        )
    }
}

/// What the syncer publishes to waiting appenders and `sync()` callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct DurableState {
    /// Offset one past the newest durable record.
    offset: u64,
    /// `sync()` requests served by a completed fsync round.
    served: u64,
    /// Set once an fsync failed: nothing more will become durable.
    failed: bool,
    /// Set once the log is closed and the syncer has stopped.
    closed: bool,
}

/// Where the background rebuild of the dedup window stands, published to
/// appenders: an append waits while it is `Rebuilding`, so a duplicate sent
/// right after a restart is still recognised.
///
/// Every append waits, including appends whose ids are all empty (which the
/// window can never answer): letting them through would hand out offsets
/// ahead of appends that arrived first and are still waiting, and the wait
/// only lasts the rebuild, once per open.
#[derive(Debug, Clone)]
enum DedupStatus {
    /// The rebuild thread is still reading the records in the window.
    Rebuilding,
    /// The window is complete (or dedup is off, or nothing was recent).
    Ready,
    /// The rebuild failed: appends answer this error rather than run with
    /// an incomplete window. Reads are unaffected; reopening retries.
    Failed(Failure),
    /// The log closed before the rebuild finished: appends answer `Closed`.
    Abandoned,
}

/// Everything behind the log's one lock.
struct LogState {
    /// Segments in offset order; the last one is active.
    segments: Vec<Segment>,
    /// Offset the next stored record gets.
    next_offset: u64,
    /// Timestamp of the newest record, so timestamps never go backwards.
    last_timestamp: Option<i64>,
    /// Recently appended ids; holds only ids appended since open until the
    /// rebuild thread installs the rebuilt window (see [`DedupStatus`]).
    dedup: DedupWindow,
    /// End of everything written to the page cache.
    written: Mark,
    /// End of everything known durable.
    durable: Mark,
    /// Rolled segment files written but not yet fsynced.
    unsynced: Vec<Arc<File>>,
    /// Set when a segment was created, so the syncer fsyncs the directory.
    dir_dirty: bool,
    /// Set when the partition directory itself was created, so the syncer
    /// also fsyncs its parent (the topic directory).
    parent_dirty: bool,
    /// The active segment's file while it holds written but not yet durable
    /// data: kept open (whatever the file cache evicts) so the fsync that
    /// makes it durable runs on a descriptor that saw the writes.
    dirty: Option<Arc<File>>,
    /// Under `FsyncPolicy::Interval`: when what is written now must be
    /// durable (set by the first write after a round).
    sync_due: Option<Instant>,
    /// The deadline a pool timer is already set for, so rounds do not arm
    /// the same one twice.
    armed: Option<Instant>,
    /// Set once the final round after `close` has run: nothing more syncs.
    syncer_stopped: bool,
    /// `sync()` requests made so far.
    sync_requests: u64,
    /// Set by `close` (or topic deletion): appends and reads answer `Closed`.
    closed: bool,
    /// Set by `close` to stop the syncer once it has flushed.
    shutdown: bool,
    /// Set after a failed fsync or a failed rollback of a failed write.
    failed: Option<Failure>,
    /// Reused buffer for encoding batches.
    encode_buf: Vec<u8>,
}

impl LogState {
    fn active(&self) -> &Segment {
        // `recover` always returns a segment and retention keeps the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn pending_sync(&self) -> bool {
        self.written.offset > self.durable.offset
            || !self.unsynced.is_empty()
            || self.dir_dirty
            || self.parent_dirty
    }

    fn check_usable(&self, dir: &Path) -> Result<()> {
        if self.closed {
            return Err(StorageError::Closed);
        }
        match &self.failed {
            Some(f) => Err(f.to_error(dir)),
            None => Ok(()),
        }
    }
}

/// State shared between the log handle and the sync pool.
struct Shared {
    /// The partition directory.
    dir: PathBuf,
    /// Settings given at open.
    config: LogConfig,
    /// Segments, offsets and marks.
    state: Mutex<LogState>,
    /// Set while the log is queued in (or running on) the sync pool.
    queued: AtomicBool,
    /// Signalled when the final round after `close` has run.
    syncer_stopped: Condvar,
    /// Durable progress, awaited by appenders and `sync()`.
    durable_tx: watch::Sender<DurableState>,
    /// End offset visible to readers (durable under `Batch`, written otherwise).
    end_tx: watch::Sender<u64>,
    /// fsync calls made, for tests and benchmarks.
    fsyncs: AtomicU64,
    /// Progress of the dedup window rebuild, awaited by appenders.
    dedup_tx: watch::Sender<DedupStatus>,
    /// Set by `close` to stop a rebuild in progress.
    cancel_rebuild: AtomicBool,
}

impl Shared {
    fn batch_policy(&self) -> bool {
        self.config.fsync == FsyncPolicy::Batch
    }

    /// What readers may see: nothing that a crash could take back under
    /// `Batch`; everything written otherwise.
    fn visible(&self, s: &LogState) -> Mark {
        if self.batch_policy() {
            s.durable
        } else {
            s.written
        }
    }
}

/// One partition's log on disk.
pub struct FileLog {
    /// State shared with the sync pool.
    shared: Arc<Shared>,
    /// Runs this log's fsync rounds (shared with the storage's other logs).
    io: LogIo,
    /// The dedup rebuild thread while it may run, stopped and joined on close.
    rebuilder: Mutex<Option<JoinHandle<()>>>,
}

impl FileLog {
    /// Opens the log in `dir` (creating it if missing), recovering a torn
    /// tail and rebuilding indexes, with a sync thread and file cache of its
    /// own (a [`FileStorage`] shares one among all its logs). Returns
    /// before the dedup window is refilled: a rebuild thread does that, and
    /// appends wait for it (see [`DedupStatus`]).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Arc<FileLog>> {
        let io = LogIo::start(1, OpenFiles::new(open_files::MAX_CACHED_FILES))?;
        Self::open_with(dir.as_ref(), config, None, io)
    }

    /// [`FileLog::open`] with test control over the dedup rebuild.
    #[cfg(test)]
    fn open_hooked(dir: &Path, config: LogConfig, hook: Arc<RebuildHook>) -> Result<Arc<FileLog>> {
        let io = LogIo::start(1, OpenFiles::new(open_files::MAX_CACHED_FILES))?;
        Self::open_with(dir, config, Some(hook), io)
    }

    fn open_with(
        dir: &Path,
        mut config: LogConfig,
        hook: Option<Arc<RebuildHook>>,
        io: LogIo,
    ) -> Result<Arc<FileLog>> {
        let dir = dir.to_path_buf();
        let dir_created = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        // Positions in the index are u32.
        config.segment_bytes = config.segment_bytes.min(u64::from(u32::MAX));
        let recovered = recovery::recover(&dir, config.index_interval_bytes, &io.files)?;
        let segments = recovered.segments;
        let window_ms = config.dedup_window.as_millis() as i64;
        let window = DedupWindow::new(window_ms);
        let horizon = window.horizon((config.clock)());
        let scans = if window.enabled() {
            recovery::dedup_scans(&segments, horizon)?
        } else {
            Vec::new()
        };
        let status = if scans.is_empty() {
            DedupStatus::Ready
        } else {
            DedupStatus::Rebuilding
        };
        let last = &segments[segments.len() - 1];
        let mark = Mark {
            offset: last.end,
            segment: last.base,
            position: last.size,
        };
        let last_timestamp = segments.iter().rev().find_map(|s| s.max_timestamp);
        let state = LogState {
            segments,
            next_offset: mark.offset,
            last_timestamp,
            // Filled by the rebuild thread, if there is anything to rebuild.
            dedup: DedupWindow::new(window_ms),
            written: mark,
            durable: mark,
            unsynced: Vec::new(),
            // A first segment recovery had to create (or a directory it had
            // to create) is not durable until the first round syncs it.
            dir_dirty: recovered.created_first_segment,
            parent_dirty: dir_created,
            dirty: None,
            sync_due: None,
            armed: None,
            syncer_stopped: false,
            sync_requests: 0,
            closed: false,
            shutdown: false,
            failed: None,
            encode_buf: Vec::new(),
        };
        let shared = Arc::new(Shared {
            dir,
            config,
            state: Mutex::new(state),
            queued: AtomicBool::new(false),
            syncer_stopped: Condvar::new(),
            durable_tx: watch::channel(DurableState {
                offset: mark.offset,
                ..DurableState::default()
            })
            .0,
            end_tx: watch::channel(mark.offset).0,
            fsyncs: AtomicU64::new(0),
            dedup_tx: watch::channel(status).0,
            cancel_rebuild: AtomicBool::new(false),
        });
        let log = Arc::new(FileLog {
            shared,
            io,
            rebuilder: Mutex::new(None),
        });
        if !scans.is_empty() {
            let for_thread = log.shared.clone();
            // On error `log` drops, which runs its final round and marks the
            // rebuild abandoned.
            let rebuilder = std::thread::Builder::new()
                .name("herald-dedup".into())
                .spawn(move || rebuild_loop(&for_thread, &scans, window, horizon, hook))
                .map_err(|e| StorageError::io("starting the dedup rebuild thread", e))?;
            *log.rebuilder.lock() = Some(rebuilder);
        }
        Ok(log)
    }

    /// fsync calls made by this log so far.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Asks the pool for a round; call after releasing the state lock.
    fn wake_syncer(&self) {
        self.io.pool.wake(&self.shared);
    }

    /// Flushes what was written, stops the syncer and writes the active
    /// segment's indexes. Later calls (appends, reads) answer `Closed`.
    pub fn close(&self) {
        {
            let mut s = self.shared.state.lock();
            s.closed = true;
            s.shutdown = true;
        }
        self.shared.cancel_rebuild.store(true, Ordering::Relaxed);
        self.wake_syncer();
        // Wake live readers so they see `Closed` instead of waiting forever.
        self.shared.end_tx.send_modify(|_| {});
        // The rebuild stops at its next batch boundary.
        if let Some(handle) = self.rebuilder.lock().take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.shared.dir.display(), "dedup rebuild thread panicked");
        }
        // Wake appenders still waiting for the window (if the rebuild never
        // started or never published).
        self.shared.dedup_tx.send_if_modified(|status| {
            let pending = matches!(status, DedupStatus::Rebuilding);
            if pending {
                *status = DedupStatus::Abandoned;
            }
            pending
        });
        let mut s = self.shared.state.lock();
        while !s.syncer_stopped {
            self.shared.syncer_stopped.wait(&mut s);
        }
        if self.shared.dir.exists()
            && let Err(e) = s.active().write_indexes(&self.shared.dir)
        {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "could not write indexes at close");
        }
    }

    /// Stores the batch under the lock; returns the answers and the durable
    /// offset the caller must wait for under `Batch`.
    fn write_batch(&self, records: Vec<NewRecord>) -> Result<(Vec<Appended>, Option<u64>)> {
        let sh = &*self.shared;
        let mut guard = sh.state.lock();
        let s = &mut *guard;
        s.check_usable(&sh.dir)?;
        let now = (sh.config.clock)().max(s.last_timestamp.unwrap_or(i64::MIN));
        let base = s.next_offset;
        let mut out = Vec::with_capacity(records.len());
        let mut stored: Vec<NewRecord> = Vec::with_capacity(records.len());
        let mut in_batch: HashMap<Bytes, u64> = HashMap::new();
        let mut wait_for = 0u64;
        for r in records {
            let original = s.dedup.lookup(&r.id, now).or_else(|| {
                let dedup = s.dedup.enabled() && !r.id.is_empty();
                dedup
                    .then(|| in_batch.get(&r.id).map(|&o| (o, now)))
                    .flatten()
            });
            if let Some((offset, timestamp_ms)) = original {
                wait_for = wait_for.max(offset + 1);
                out.push(Appended {
                    offset,
                    timestamp_ms,
                    duplicate: true,
                });
                continue;
            }
            let offset = base + stored.len() as u64;
            if s.dedup.enabled() && !r.id.is_empty() {
                in_batch.insert(r.id.clone(), offset);
            }
            out.push(Appended {
                offset,
                timestamp_ms: now,
                duplicate: false,
            });
            stored.push(r);
        }
        if !stored.is_empty() {
            self.store(s, &stored, base, now)?;
            wait_for = s.next_offset;
        }
        if sh.batch_policy() {
            if wait_for > s.durable.offset {
                drop(guard);
                self.wake_syncer();
                return Ok((out, Some(wait_for)));
            }
        } else {
            sh.end_tx.send_replace(s.written.offset);
            if let FsyncPolicy::Interval(every) = sh.config.fsync
                && s.sync_due.is_none()
                && s.pending_sync()
            {
                s.sync_due = Some(Instant::now() + every);
                drop(guard);
                self.wake_syncer();
            }
        }
        Ok((out, None))
    }

    /// Encodes and writes one batch (rolling first if it does not fit), then
    /// advances offsets; on a failed write nothing changes but the rollback.
    /// Called with the state lock held.
    fn store(&self, s: &mut LogState, stored: &[NewRecord], base: u64, now: i64) -> Result<()> {
        let sh = &*self.shared;
        let pairs = || stored.iter().map(|r| (&r.id[..], &r.payload[..]));
        let len = format::batch_len(pairs());
        let limit = sh.config.segment_bytes;
        if len as u64 > limit {
            return Err(StorageError::RecordTooLarge { size: len, limit });
        }
        if s.active().size > 0 && s.active().size + len as u64 > limit {
            self.roll(s)?;
        }
        let file = match &s.dirty {
            Some(file) => file.clone(),
            None => s.active().file.get().map_err(|e| {
                StorageError::io(format!("opening {}", s.active().path.display()), e)
            })?,
        };
        let mut buf = std::mem::take(&mut s.encode_buf);
        format::encode_batch(&mut buf, base, now, pairs());
        let pos = s.active().size;
        let written = file.write_all_at(&buf, pos);
        s.encode_buf = buf;
        if let Err(e) = written {
            let seg = s.active();
            let err = StorageError::io(format!("appending to {}", seg.path.display()), e);
            // A torn batch must never become readable, now or after restart.
            if let Err(e) = file.set_len(pos) {
                tracing::error!(path = %seg.path.display(), error = %e, "rolling back a failed write failed");
                s.failed = Some(Failure::from_io("rolling back a failed write", &e));
            }
            return Err(err);
        }
        let header = BatchHeader {
            total_len: len,
            crc: 0,
            base_offset: base,
            record_count: stored.len() as u32,
            first_timestamp: now,
            max_timestamp: now,
        };
        let interval = sh.config.index_interval_bytes;
        let seg = s.active_mut();
        seg.note_batch(pos, &header, interval);
        s.written = Mark {
            offset: header.end_offset(),
            segment: seg.base,
            position: seg.size,
        };
        s.next_offset = header.end_offset();
        s.last_timestamp = Some(now);
        s.dirty = Some(file);
        for (i, r) in stored.iter().enumerate() {
            s.dedup.insert(r.id.clone(), base + i as u64, now);
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `next_offset`.
    fn roll(&self, s: &mut LogState) -> Result<()> {
        let dir = &self.shared.dir;
        let seg = Segment::create(dir, s.next_offset, &self.io.files)
            .map_err(|e| StorageError::io(format!("creating a segment in {}", dir.display()), e))?;
        let old = s.active();
        if let Err(e) = old.write_indexes(dir) {
            // Derived data: recovery rebuilds a missing or torn index.
            tracing::warn!(path = %old.path.display(), error = %e, "could not write segment indexes");
        }
        // Rolling means the old segment holds data; whatever of it is not
        // yet durable is in the file `dirty` keeps open.
        if let Some(old_file) = s.dirty.take() {
            s.unsynced.push(old_file);
        }
        s.dir_dirty = true;
        s.segments.push(seg);
        Ok(())
    }

    /// Waits until the dedup window is complete; see [`DedupStatus`].
    async fn wait_dedup_ready(&self) -> Result<()> {
        // After the rebuild this is one uncontended read lock per append.
        if matches!(*self.shared.dedup_tx.borrow(), DedupStatus::Ready) {
            return Ok(());
        }
        let mut rx = self.shared.dedup_tx.subscribe();
        let status = rx
            .wait_for(|status| !matches!(status, DedupStatus::Rebuilding))
            .await
            .map_err(|_| StorageError::Closed)?
            .clone();
        match status {
            DedupStatus::Ready => Ok(()),
            DedupStatus::Failed(f) => Err(f.to_error(&self.shared.dir)),
            DedupStatus::Rebuilding | DedupStatus::Abandoned => Err(StorageError::Closed),
        }
    }

    async fn wait_durable(&self, target: u64, served: u64) -> Result<()> {
        let mut rx = self.shared.durable_tx.subscribe();
        let state = *rx
            .wait_for(|d| (d.offset >= target && d.served >= served) || d.failed || d.closed)
            .await
            .map_err(|_| StorageError::Closed)?;
        if state.offset >= target && state.served >= served {
            return Ok(());
        }
        let s = self.shared.state.lock();
        match &s.failed {
            Some(f) => Err(f.to_error(&self.shared.dir)),
            None => Err(StorageError::Closed),
        }
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a failed dedup rebuild says it was doing.
const REBUILDING: &str = "rebuilding the dedup window";

/// Test control over the dedup rebuild thread (tests only build one).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Default)]
struct RebuildHook {
    /// While set (and the log open), the rebuild does not start.
    hold: AtomicBool,
    /// When set, the rebuild fails with an I/O error instead of reading.
    fail: AtomicBool,
}

/// The dedup rebuild thread: reads the records in the window without any
/// lock, installs the window, and publishes the outcome to waiting appenders.
fn rebuild_loop(
    sh: &Shared,
    scans: &[recovery::DedupScan],
    window: DedupWindow,
    horizon: i64,
    hook: Option<Arc<RebuildHook>>,
) {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(hook) = &hook {
            while hook.hold.load(Ordering::SeqCst) && !sh.cancel_rebuild.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if hook.fail.load(Ordering::SeqCst) {
                let e = StorageError::io("scanning (injected)", io::Error::other("injected"));
                return DedupStatus::Failed(Failure::from_storage(REBUILDING, &e));
            }
        }
        rebuild_and_install(sh, scans, window, horizon)
    }));
    let status = outcome.unwrap_or_else(|_| {
        DedupStatus::Failed(Failure {
            raw_os_error: None,
            message: format!("{REBUILDING}: the rebuild thread panicked"),
        })
    });
    match &status {
        DedupStatus::Ready => tracing::info!(
            dir = %sh.dir.display(),
            ms = started.elapsed().as_millis() as u64,
            "dedup window rebuilt; appends proceed"
        ),
        DedupStatus::Failed(f) => tracing::error!(
            dir = %sh.dir.display(),
            error = %f.message,
            "dedup window rebuild failed; the log refuses appends until reopened"
        ),
        DedupStatus::Rebuilding | DedupStatus::Abandoned => {}
    }
    sh.dedup_tx.send_replace(status);
}

/// Fills `window` from `scans` and installs it, merging in whatever the log's
/// own window learnt meanwhile (nothing while appends wait, but merging keeps
/// the install correct regardless) and forgetting ids retention deleted.
fn rebuild_and_install(
    sh: &Shared,
    scans: &[recovery::DedupScan],
    mut window: DedupWindow,
    horizon: i64,
) -> DedupStatus {
    match recovery::rebuild_dedup(scans, &mut window, horizon, &sh.cancel_rebuild) {
        Ok(true) => {}
        Ok(false) => return DedupStatus::Abandoned,
        Err(e) => {
            return DedupStatus::Failed(Failure::from_storage(REBUILDING, &e));
        }
    }
    let mut s = sh.state.lock();
    if s.closed {
        return DedupStatus::Abandoned;
    }
    // Records appended since open are newer than every rebuilt one.
    let newer = std::mem::replace(&mut s.dedup, window);
    s.dedup.merge_newer(newer);
    let first = s.segments[0].base;
    s.dedup.forget_below(first);
    DedupStatus::Ready
}

/// Group commit on the sync pool: each round fsyncs everything written so
/// far without holding the lock (so appends keep flowing into the next
/// group), then publishes the new durable end.
impl Syncable for Shared {
    fn queued(&self) -> &AtomicBool {
        &self.queued
    }

    fn sync_round(&self) -> Next {
        let sh = self;
        let mut s = sh.state.lock();
        if s.syncer_stopped {
            sh.queued.store(false, Ordering::Release);
            return Next::Idle;
        }
        let due = s.sync_due.is_some_and(|t| Instant::now() >= t);
        let requested = s.sync_requests > sh.durable_tx.borrow().served;
        let wanted = s.failed.is_none()
            && s.pending_sync()
            && (sh.batch_policy() || requested || due || s.shutdown);
        if !wanted {
            if requested || s.shutdown {
                // Nothing to flush: answer requests (or the final round) at
                // once. After a failure, requests stay unserved: waiters see
                // `failed`.
                let served = if s.failed.is_none() {
                    s.sync_requests
                } else {
                    sh.durable_tx.borrow().served
                };
                let closed = s.shutdown;
                sh.durable_tx.send_modify(|d| {
                    d.served = served;
                    d.closed = closed;
                });
                if closed {
                    s.syncer_stopped = true;
                    s.dirty = None;
                    sh.queued.store(false, Ordering::Release);
                    sh.syncer_stopped.notify_all();
                    return Next::Idle;
                }
            }
            sh.queued.store(false, Ordering::Release);
            return match s.sync_due {
                Some(at) if s.failed.is_none() && s.armed != Some(at) => {
                    s.armed = Some(at);
                    Next::At(at)
                }
                _ => Next::Idle,
            };
        }
        let target = s.written;
        let served = s.sync_requests;
        let mut files = std::mem::take(&mut s.unsynced);
        if target.segment == s.active().base {
            // None: durable already, or never written; nothing to sync.
            if let Some(file) = &s.dirty {
                files.push(file.clone());
            }
        }
        let dir_dirty = std::mem::take(&mut s.dir_dirty);
        let parent_dirty = std::mem::take(&mut s.parent_dirty);
        s.sync_due = None;
        drop(s);
        let mut result = Ok(());
        let started = std::time::Instant::now();
        for file in &files {
            sh.fsyncs.fetch_add(1, Ordering::Relaxed);
            result = file.sync_data();
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && dir_dirty {
            sh.fsyncs.fetch_add(1, Ordering::Relaxed);
            result = sync_dir(&sh.dir);
        }
        if result.is_ok()
            && parent_dirty
            && let Some(parent) = sh.dir.parent()
        {
            sh.fsyncs.fetch_add(1, Ordering::Relaxed);
            result = sync_dir(parent);
        }
        // One round (its files and directories) is what a durable append
        // waits for.
        metrics::histogram!(crate::metrics::names::FSYNC_DURATION)
            .record(started.elapsed().as_secs_f64());
        drop(files);
        s = sh.state.lock();
        match result {
            Ok(()) => {
                if target.offset >= s.durable.offset {
                    s.durable = target;
                }
                if s.durable == s.written {
                    s.dirty = None;
                }
                let offset = s.durable.offset;
                sh.durable_tx.send_modify(|d| {
                    d.offset = offset;
                    d.served = served;
                });
                if sh.batch_policy() {
                    sh.end_tx.send_replace(offset);
                }
            }
            Err(e) => {
                // After a failed fsync the kernel may have dropped the dirty
                // pages, so a retry proving nothing: refuse further appends.
                tracing::error!(dir = %sh.dir.display(), error = %e, "fsync failed; the log refuses further appends");
                s.failed = Some(Failure::from_io("fsync", &e));
                sh.durable_tx.send_modify(|d| d.failed = true);
            }
        }
        // Whatever arrived meanwhile waits behind the other logs' rounds.
        Next::Again
    }

    fn round_panicked(&self) {
        let mut s = self.state.lock();
        s.failed = Some(Failure {
            raw_os_error: None,
            message: "the fsync round panicked".into(),
        });
        s.syncer_stopped = true;
        self.durable_tx.send_modify(|d| {
            d.failed = true;
            d.closed = true;
        });
        self.queued.store(false, Ordering::Release);
        self.syncer_stopped.notify_all();
    }
}

/// Where one segment read should stop and what it should return.
struct ReadBudget {
    /// First offset wanted.
    from: u64,
    /// Records still allowed.
    max_records: usize,
    /// Payload bytes allowed (one record is always returned).
    max_bytes: usize,
    /// Payload bytes returned so far.
    bytes: usize,
}

/// Reads records from one segment between `pos` and `limit` into `out`.
/// Returns whether the budget is exhausted and the offset reached.
fn read_segment(
    file: &File,
    path: &Path,
    mut pos: u64,
    limit: u64,
    budget: &mut ReadBudget,
    out: &mut Vec<StoredRecord>,
) -> Result<(bool, u64)> {
    // Size the first read by what is asked for: the byte budget, but also
    // the record count (at a generous guess per record), so a caller asking
    // for 500 small records does not allocate and copy megabytes. Later
    // reads double while more is needed.
    let by_records = budget.max_records.saturating_mul(RECORD_SIZE_GUESS);
    let mut chunk = budget
        .max_bytes
        .saturating_add(budget.max_bytes / 8)
        .min(by_records)
        .clamp(MIN_READ_CHUNK, MAX_READ_CHUNK);
    let mut reached = budget.from;
    while pos < limit {
        let len = chunk.min((limit - pos) as usize);
        let buf = segment::read_at(file, pos, len)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        if buf.len() < len {
            return Err(corrupt(path, format!("file ends before position {limit}")));
        }
        let mut off = 0usize;
        while let Some(total) = format::peek_batch_len(&buf[off..]) {
            let at = pos + off as u64;
            if total < format::BATCH_HEADER_LEN || total as u64 > limit - at {
                return Err(corrupt(
                    path,
                    format!("bad batch length {total} at position {at}"),
                ));
            }
            if total > buf.len() - off {
                break;
            }
            let batch = buf.slice(off..off + total);
            off += total;
            let header = format::decode_header(&batch)
                .map_err(|e| corrupt(path, format!("at position {at}: {e}")))?;
            reached = header.end_offset();
            if header.end_offset() <= budget.from {
                continue;
            }
            if !format::crc_matches(&header, &batch) {
                return Err(corrupt(
                    path,
                    format!("CRC mismatch in batch at offset {}", header.base_offset),
                ));
            }
            let mut full = false;
            format::decode_records(&header, &batch, |r| {
                if full || r.offset < budget.from {
                    return;
                }
                let size = r.payload.len();
                if out.len() >= budget.max_records
                    || (!out.is_empty() && budget.bytes + size > budget.max_bytes)
                {
                    full = true;
                    return;
                }
                budget.bytes += size;
                out.push(r);
            })
            .map_err(|e| corrupt(path, format!("at position {at}: {e}")))?;
            if full || out.len() >= budget.max_records {
                return Ok((true, reached));
            }
        }
        if off == 0 {
            match format::peek_batch_len(&buf) {
                Some(need) if need > buf.len() => chunk = need,
                _ => return Err(corrupt(path, format!("unreadable batch at position {pos}"))),
            }
            continue;
        }
        pos += off as u64;
        chunk = chunk.saturating_mul(2).min(MAX_READ_CHUNK);
    }
    Ok((false, reached))
}

#[async_trait::async_trait]
impl PartitionLog for FileLog {
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>> {
        // Before the lock: the rebuild needs it to install the window.
        self.wait_dedup_ready().await?;
        let (out, wait_for) = self.write_batch(records)?;
        if let Some(target) = wait_for {
            self.wait_durable(target, 0).await?;
        }
        Ok(out)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let sh = &*self.shared;
        let mut out = Vec::new();
        let mut budget = ReadBudget {
            from,
            max_records,
            max_bytes,
            bytes: 0,
        };
        loop {
            let (file, path, pos, limit) = {
                let s = sh.state.lock();
                if s.closed {
                    return Err(StorageError::Closed);
                }
                budget.from = budget.from.max(s.segments[0].base);
                let visible = sh.visible(&s);
                if budget.from >= visible.offset || max_records == 0 {
                    return Ok(out);
                }
                let i = s.segments.partition_point(|seg| seg.base <= budget.from);
                let Some(seg) = i.checked_sub(1).and_then(|i| s.segments.get(i)) else {
                    return Ok(out);
                };
                let limit = match seg.base.cmp(&visible.segment) {
                    std::cmp::Ordering::Less => seg.size,
                    std::cmp::Ordering::Equal => visible.position,
                    std::cmp::Ordering::Greater => 0,
                };
                let (pos, _) = seg.position_for(budget.from);
                let file = seg
                    .file
                    .get()
                    .map_err(|e| StorageError::io(format!("opening {}", seg.path.display()), e))?;
                (file, seg.path.clone(), pos, limit)
            };
            let (done, reached) = read_segment(&file, &path, pos, limit, &mut budget, &mut out)?;
            if done || reached <= budget.from {
                return Ok(out);
            }
            budget.from = reached;
        }
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64> {
        let sh = &*self.shared;
        let (file, path, pos, offset, limit, end) = {
            let s = sh.state.lock();
            if s.closed {
                return Err(StorageError::Closed);
            }
            let visible = sh.visible(&s);
            let found = s.segments.iter().find(|seg| {
                seg.base < visible.offset && seg.max_timestamp.is_some_and(|t| t >= timestamp_ms)
            });
            let Some(seg) = found else {
                return Ok(visible.offset);
            };
            let limit = if seg.base == visible.segment {
                visible.position
            } else {
                seg.size
            };
            let (pos, offset) = seg.position_for_timestamp(timestamp_ms);
            let file = seg
                .file
                .get()
                .map_err(|e| StorageError::io(format!("opening {}", seg.path.display()), e))?;
            (file, seg.path.clone(), pos, offset, limit, visible.offset)
        };
        let mut found = None;
        let mut failure = None;
        let scanned = segment::scan(&file, pos, limit, offset, |_, h, batch| {
            if h.max_timestamp < timestamp_ms {
                return true;
            }
            let r = format::decode_records(h, batch, |r| {
                if found.is_none() && r.timestamp_ms >= timestamp_ms {
                    found = Some(r.offset);
                }
            });
            if let Err(e) = r {
                failure = Some(e.to_string());
            }
            false
        })
        .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        match (found, failure.or(scanned.error)) {
            (Some(offset), _) => Ok(offset),
            (None, Some(reason)) => Err(corrupt(&path, reason)),
            // Newer records are past the visible end.
            (None, None) => Ok(end),
        }
    }

    fn stats(&self) -> PartitionStats {
        let s = self.shared.state.lock();
        PartitionStats {
            first_offset: s.segments[0].base,
            next_offset: s.next_offset,
            bytes: s.segments.iter().map(|seg| seg.size).sum(),
            segments: s.segments.len() as u32,
            last_timestamp_ms: s.last_timestamp,
        }
    }

    fn enforce_retention(
        &self,
        retention: Retention,
        keep_from: Option<u64>,
    ) -> Result<RetentionReport> {
        let sh = &*self.shared;
        let mut s = sh.state.lock();
        if s.closed {
            return Err(StorageError::Closed);
        }
        let now = (sh.config.clock)();
        let visible = sh.visible(&s).offset;
        let mut total: u64 = s.segments.iter().map(|seg| seg.size).sum();
        let mut report = RetentionReport::default();
        while s.segments.len() > 1 {
            let seg = &s.segments[0];
            let expired_by_age = retention.max_age.is_some_and(|age| {
                seg.max_timestamp
                    .is_none_or(|t| t < now.saturating_sub(age.as_millis() as i64))
            });
            let expired_by_size = retention.max_bytes.is_some_and(|max| total > max);
            let protected = keep_from.is_some_and(|k| seg.end > k) || seg.end > visible;
            if protected || !(expired_by_age || expired_by_size) {
                break;
            }
            recovery::remove_segment_files(&sh.dir, seg.base).map_err(|e| {
                StorageError::io(format!("deleting segment {}", seg.path.display()), e)
            })?;
            let seg = s.segments.remove(0);
            total -= seg.size;
            report.segments_deleted += 1;
            report.records_deleted += seg.end - seg.base;
            report.bytes_deleted += seg.size;
        }
        let first = s.segments[0].base;
        s.dedup.forget_below(first);
        Ok(report)
    }

    async fn sync(&self) -> Result<()> {
        let request = {
            let mut s = self.shared.state.lock();
            s.check_usable(&self.shared.dir)?;
            if !s.pending_sync() {
                return Ok(());
            }
            s.sync_requests += 1;
            s.sync_requests
        };
        self.wake_syncer();
        self.wait_durable(0, request).await
    }

    fn watch_end(&self) -> watch::Receiver<u64> {
        self.shared.end_tx.subscribe()
    }
}
