//! When the next request of a load benchmark may start: as soon as a caller
//! is free (closed loop), or on a fixed schedule (open loop, `--rate`) whose
//! latencies count from the *intended* start so that a slow server cannot
//! hide its stalls by delaying the requests that would have measured them
//! (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fixed-rate schedule: slot `i` is meant to start at `start + i / rate`.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    rate_per_sec: f64,
    next: AtomicU64,
}

impl Schedule {
    /// A schedule of `rate_per_sec` slots per second from `start`.
    pub fn new(start: Instant, rate_per_sec: f64) -> Self {
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
    pub fn intended(&self, slot: u64) -> Instant {
        self.start + Duration::from_secs_f64(slot as f64 / self.rate_per_sec)
    }

    /// Claims the next unclaimed slot and returns its intended start.
    pub fn claim(&self) -> Instant {
        self.intended(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Paces the callers of one benchmark run.
#[derive(Debug)]
pub enum Pacer {
    /// Start whenever a caller is free.
    Closed,
    /// Start on the schedule.
    Open(Schedule),
}

/// Permission to start one request.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    intended: Option<Instant>,
}

impl Slot {
    /// Where the request's latency counts from: its intended start in an
    /// open loop, now in a closed one. Call it right before sending.
    pub fn origin(&self) -> Instant {
        self.intended.unwrap_or_else(Instant::now)
    }
}

impl Pacer {
    /// Closed loop without a rate, else an open loop of `rate` requests/s from now.
    pub fn new(rate: Option<f64>) -> Self {
        match rate {
            Some(rate) => Pacer::Open(Schedule::new(Instant::now(), rate)),
            None => Pacer::Closed,
        }
    }

    /// Waits until the next request may start; `None` once its start would
    /// be at or after `deadline`.
    pub async fn next(&self, deadline: Instant) -> Option<Slot> {
        match self {
            Pacer::Closed => (Instant::now() < deadline).then_some(Slot { intended: None }),
            Pacer::Open(schedule) => {
                let at = schedule.claim();
                if at >= deadline {
                    return None;
                }
                tokio::time::sleep_until(at.into()).await;
                Some(Slot { intended: Some(at) })
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
        // Taken just before the schedule starts: slot 5 lands after it.
        let deadline = Instant::now() + Duration::from_millis(5);
        let pacer = Pacer::new(Some(1000.0));
        let first = pacer.next(deadline).await.unwrap();
        // The caller is late (e.g. every caller was busy): the origin stays
        // the slot's intended time, not when the caller got to it.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let second = pacer.next(deadline).await.unwrap();
        assert_eq!(second.origin() - first.origin(), Duration::from_millis(1));
        assert!(second.origin() + Duration::from_millis(2) <= Instant::now());
        for _ in 0..3 {
            assert!(pacer.next(deadline).await.is_some());
        }
        // Slot 5 would start at 5 ms: not before the deadline.
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
