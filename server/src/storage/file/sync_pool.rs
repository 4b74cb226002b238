//! A small pool of threads that run the group-commit fsync rounds of every
//! partition log of a storage, so idle partitions cost no thread.
//!
//! A log asks for a round with [`SyncPool::wake`]; a worker runs it with
//! [`Syncable::sync_round`], which fsyncs what was written (appends keep
//! flowing into the next group meanwhile) and says what comes next: another
//! round at once (queued behind the other logs waiting, so one busy log
//! cannot starve the rest), one at a given instant (the `interval` fsync
//! policy's deadline), or nothing until the next wake.
//!
//! Each log is queued at most once: its `queued` flag is set by whoever
//! queues it and cleared by the round itself, under the log's own lock,
//! when it finds nothing more to do. A writer changes the log's state under
//! that lock and wakes after releasing it, so either the round sees the
//! change or the writer sees the flag cleared and queues the log again.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Worker threads of a storage's pool: enough for several partitions'
/// fsyncs to be in flight at once on one disk, few enough that ten
/// thousand partitions cost four threads.
pub(crate) const STORAGE_SYNC_THREADS: usize = 4;

/// What a log's round says comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing until the next wake (the round cleared `queued`).
    Idle,
    /// More is wanted now: queue the log again, behind the others.
    Again,
    /// Wake the log at this instant (the round cleared `queued`).
    At(Instant),
}

/// A log whose fsyncs the pool runs.
pub(crate) trait Syncable: Send + Sync + 'static {
    /// Set while the log is queued or running; see the module docs.
    fn queued(&self) -> &AtomicBool;
    /// Runs one fsync round (or answers what is pending without one).
    fn sync_round(&self) -> Next;
    /// The round panicked: fail what waits rather than hang it.
    fn round_panicked(&self);
}

/// A deadline in the timer heap, earliest first.
struct Timer {
    at: Instant,
    seq: u64,
    job: Weak<dyn Syncable>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest pops first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<dyn Syncable>>,
    timers: BinaryHeap<Timer>,
    timer_seq: u64,
    stop: bool,
}

struct PoolShared {
    queue: Mutex<Queue>,
    work: Condvar,
}

/// The pool; dropping it stops and joins its threads (logs hold it, so
/// that happens after the last log is gone).
pub(crate) struct SyncPool {
    shared: Arc<PoolShared>,
    workers: Vec<JoinHandle<()>>,
}

impl SyncPool {
    /// Starts `threads` workers (at least one) named `herald-syncer`.
    pub(crate) fn start(threads: usize) -> std::io::Result<Arc<SyncPool>> {
        let shared = Arc::new(PoolShared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            let for_thread = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("herald-syncer".into())
                .spawn(move || worker_loop(&for_thread));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // Stop the ones already started before failing.
                    drop(SyncPool { shared, workers });
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(SyncPool { shared, workers }))
    }

    /// Queues a round for `job` unless one is queued or running.
    pub(crate) fn wake<S: Syncable>(&self, job: &Arc<S>) {
        if job.queued().swap(true, Ordering::AcqRel) {
            return;
        }
        let job: Arc<dyn Syncable> = job.clone();
        self.shared.queue.lock().ready.push_back(job);
        self.shared.work.notify_one();
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.work.notify_all();
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a syncer thread panicked outside a round");
            }
        }
    }
}

fn worker_loop(shared: &PoolShared) {
    loop {
        let job = {
            let mut q = shared.queue.lock();
            loop {
                let now = Instant::now();
                while q.timers.peek().is_some_and(|t| t.at <= now) {
                    let timer = q.timers.pop().expect("peeked");
                    if let Some(job) = timer.job.upgrade()
                        && !job.queued().swap(true, Ordering::AcqRel)
                    {
                        q.ready.push_back(job);
                    }
                }
                if let Some(job) = q.ready.pop_front() {
                    break job;
                }
                if q.stop {
                    return;
                }
                match q.timers.peek().map(|t| t.at) {
                    Some(at) => {
                        shared.work.wait_until(&mut q, at);
                    }
                    None => shared.work.wait(&mut q),
                }
            }
        };
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.sync_round()));
        match next {
            Ok(Next::Idle) => {}
            Ok(Next::Again) => {
                shared.queue.lock().ready.push_back(job);
                shared.work.notify_one();
            }
            Ok(Next::At(at)) => {
                let mut q = shared.queue.lock();
                q.timer_seq += 1;
                let seq = q.timer_seq;
                q.timers.push(Timer {
                    at,
                    seq,
                    job: Arc::downgrade(&job),
                });
                drop(q);
                // A worker asleep on a later deadline must see this one.
                shared.work.notify_one();
            }
            Err(_) => {
                tracing::error!("an fsync round panicked; that log refuses further appends");
                job.round_panicked();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A job that wants `rounds` rounds, then an optional deadline.
    struct Counter {
        queued: AtomicBool,
        rounds_left: AtomicUsize,
        ran: AtomicUsize,
        then_at: Mutex<Option<Instant>>,
        panic: AtomicBool,
        panicked: AtomicBool,
    }

    impl Counter {
        fn new(rounds: usize) -> Arc<Counter> {
            Arc::new(Counter {
                queued: AtomicBool::new(false),
                rounds_left: AtomicUsize::new(rounds),
                ran: AtomicUsize::new(0),
                then_at: Mutex::new(None),
                panic: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
            })
        }
    }

    impl Syncable for Counter {
        fn queued(&self) -> &AtomicBool {
            &self.queued
        }
        fn sync_round(&self) -> Next {
            self.ran.fetch_add(1, Ordering::SeqCst);
            if self.panic.load(Ordering::SeqCst) {
                panic!("injected");
            }
            if self.rounds_left.fetch_sub(1, Ordering::SeqCst) > 1 {
                return Next::Again;
            }
            self.queued.store(false, Ordering::Release);
            match self.then_at.lock().take() {
                Some(at) => Next::At(at),
                None => Next::Idle,
            }
        }
        fn round_panicked(&self) {
            self.panicked.store(true, Ordering::SeqCst);
        }
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_round_that_wants_more_runs_again_until_idle() {
        let pool = SyncPool::start(2).unwrap();
        let job = Counter::new(5);
        pool.wake(&job);
        wait_for("five rounds", || !job.queued.load(Ordering::SeqCst));
        assert_eq!(job.ran.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn waking_a_queued_job_does_not_queue_it_twice() {
        let pool = SyncPool::start(1).unwrap();
        let job = Counter::new(1);
        job.queued.store(true, Ordering::SeqCst);
        pool.wake(&job);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(job.ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_deadline_wakes_the_job_when_due_and_not_before() {
        let pool = SyncPool::start(1).unwrap();
        let job = Counter::new(1);
        let due = Instant::now() + Duration::from_millis(200);
        *job.then_at.lock() = Some(due);
        pool.wake(&job);
        wait_for("the first round", || job.ran.load(Ordering::SeqCst) == 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            job.ran.load(Ordering::SeqCst),
            1,
            "woken before its deadline"
        );
        job.rounds_left.store(1, Ordering::SeqCst);
        wait_for("the deadline round", || job.ran.load(Ordering::SeqCst) == 2);
        assert!(Instant::now() >= due);
    }

    #[test]
    fn many_jobs_share_few_threads_and_all_get_their_rounds() {
        let pool = SyncPool::start(2).unwrap();
        let jobs: Vec<_> = (0..200).map(|_| Counter::new(3)).collect();
        for job in &jobs {
            pool.wake(job);
        }
        for job in &jobs {
            wait_for("every job's rounds", || !job.queued.load(Ordering::SeqCst));
            assert_eq!(job.ran.load(Ordering::SeqCst), 3);
        }
    }

    #[test]
    fn a_panicking_round_is_reported_and_the_pool_keeps_working() {
        let pool = SyncPool::start(1).unwrap();
        let bad = Counter::new(1);
        bad.panic.store(true, Ordering::SeqCst);
        pool.wake(&bad);
        wait_for("the panic report", || bad.panicked.load(Ordering::SeqCst));
        let good = Counter::new(1);
        pool.wake(&good);
        wait_for("the next job", || good.ran.load(Ordering::SeqCst) == 1);
    }
}
