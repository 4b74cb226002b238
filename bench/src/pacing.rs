//! When the next request of a load benchmark may start: as soon as a caller
//! is free (closed loop), or on a fixed schedule (open loop, `--rate`) whose
//! latencies count from the *intended* start so that a slow server cannot
//! hide its stalls by delaying the requests that would have measured them
//! (no coordinated omission).
//!
//! The open loop's clock is a thread of its own sleeping with the OS's
//! high-resolution timer: tokio's timer wheel ticks in whole milliseconds,
//! so a tokio sleep to each intended time would send up to 1 ms late and
//! charge that delay, the load generator's own, to the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fixed-rate schedule: slot `i` is meant to start at `start + i / rate`.
#[derive(Debug)]
pub(crate) struct Schedule {
    start: Instant,
    rate_per_sec: f64,
    next: AtomicU64,
}

impl Schedule {
    /// A schedule of `rate_per_sec` slots per second from `start`.
    pub(crate) fn new(start: Instant, rate_per_sec: f64) -> Self {
        assert!(
            rate_per_sec.is_finite() && rate_per_sec > 0.0,
            "rate must be positive"
        );
        Self {
            start,
            rate_per_sec,
            next: AtomicU64::new(0),
        }
    }

    /// When slot `slot` is meant to start.
    pub(crate) fn intended(&self, slot: u64) -> Instant {
        self.start + Duration::from_secs_f64(slot as f64 / self.rate_per_sec)
    }

    /// Claims the next unclaimed slot and returns its intended start.
    pub(crate) fn claim(&self) -> Instant {
        self.intended(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Paces the callers of one benchmark run.
#[derive(Debug)]
pub(crate) enum Pacer {
    /// Start whenever a caller is free.
    Closed,
    /// Start on the schedule: the clock thread sends each slot's intended
    /// time when it is due.
    Open(tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Instant>>),
}

/// Slots the clock thread may be ahead of the callers; when they fall
/// further behind it waits, and the slots it then sends late still carry
/// their intended times.
const CLOCK_AHEAD: usize = 1024;

/// Permission to start one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    intended: Option<Instant>,
}

impl Slot {
    /// Where the request's latency counts from: its intended start in an
    /// open loop, now in a closed one. Call it right before sending.
    pub(crate) fn origin(&self) -> Instant {
        self.intended.unwrap_or_else(Instant::now)
    }
}

impl Pacer {
    /// Closed loop without a rate, else an open loop of `rate` requests/s
    /// from now. The clock thread stops when the pacer is dropped.
    pub(crate) fn new(rate: Option<f64>) -> Self {
        let Some(rate) = rate else {
            return Pacer::Closed;
        };
        let schedule = Schedule::new(Instant::now(), rate);
        let (tx, rx) = tokio::sync::mpsc::channel(CLOCK_AHEAD);
        std::thread::Builder::new()
            .name("bench-clock".into())
            .spawn(move || {
                loop {
                    let at = schedule.claim();
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if tx.blocking_send(at).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the bench clock thread");
        Pacer::Open(tokio::sync::Mutex::new(rx))
    }

    /// Waits until the next request may start; `None` once its start would
    /// be at or after `deadline`.
    pub(crate) async fn next(&self, deadline: Instant) -> Option<Slot> {
        match self {
            Pacer::Closed => (Instant::now() < deadline).then_some(Slot { intended: None }),
            Pacer::Open(due) => {
                // A caller that comes late still gets the slots due before
                // the deadline (queued, with their intended times).
                let at = due.lock().await.recv().await?;
                (at < deadline).then_some(Slot { intended: Some(at) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced_from_the_start() {
        let start = Instant::now();
        let s = Schedule::new(start, 1000.0);
        assert_eq!(s.intended(0), start);
        assert_eq!(s.intended(1), start + Duration::from_millis(1));
        assert_eq!(s.intended(2500), start + Duration::from_millis(2500));
        let s = Schedule::new(start, 3.0);
        let third = s.intended(1) - start;
        assert!((third.as_secs_f64() - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn claims_take_consecutive_slots() {
        let start = Instant::now();
        let s = Schedule::new(start, 10.0);
        assert_eq!(s.claim(), start);
        assert_eq!(s.claim(), start + Duration::from_millis(100));
        assert_eq!(s.claim(), start + Duration::from_millis(200));
    }

    #[tokio::test]
    async fn open_loop_latency_counts_from_the_intended_time() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pacer = Pacer::new(Some(1000.0));
        let first = pacer.next(deadline).await.unwrap();
        // The caller is late (e.g. every caller was busy): the origin stays
        // the slot's intended time, not when the caller got to it.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let second = pacer.next(deadline).await.unwrap();
        assert_eq!(second.origin() - first.origin(), Duration::from_millis(1));
        assert!(second.origin() + Duration::from_millis(2) <= Instant::now());
        let third = pacer.next(deadline).await.unwrap();
        assert_eq!(third.origin() - first.origin(), Duration::from_millis(2));
    }

    #[tokio::test]
    async fn open_loop_stops_at_the_deadline() {
        // Taken before the schedule starts: slot 0 is already too late.
        let deadline = Instant::now();
        let pacer = Pacer::new(Some(1000.0));
        assert!(pacer.next(deadline).await.is_none());
        // Slots 0..2 start before a deadline 2.5 ms after slot 0, slot 3 not.
        let pacer = Pacer::new(Some(1000.0));
        let first = pacer
            .next(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        let deadline = first.origin() + Duration::from_micros(2500);
        assert!(pacer.next(deadline).await.is_some());
        assert!(pacer.next(deadline).await.is_some());
        assert!(pacer.next(deadline).await.is_none());
    }

    #[tokio::test]
    async fn closed_loop_runs_until_the_deadline() {
        let pacer = Pacer::new(None);
        assert!(
            pacer
                .next(Instant::now() + Duration::from_secs(1))
                .await
                .is_some()
        );
        assert!(pacer.next(Instant::now()).await.is_none());
    }
}
