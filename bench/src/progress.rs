//! Live feedback while a timed benchmark runs: a progress bar on stderr
//! (hidden for `--json`) fed from the counters the benchmark updates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

/// Counters shared by the tasks of one run and read by the progress bar.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    /// One request succeeded.
    pub(crate) fn ok(&self) {
        self.oks(1);
    }

    /// `n` requests (or events) succeeded.
    pub(crate) fn oks(&self, n: u64) {
        self.ok.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` requests failed with `error`; the first error is kept for the report.
    pub(crate) fn errors(&self, n: u64, error: impl std::fmt::Display) {
        if n == 0 {
            return;
        }
        self.errors.fetch_add(n, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }

    pub(crate) fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.lock().clone()
    }
}

/// A bar over the run's duration showing the throughput so far; stops when dropped.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the bar (a no-op when `hidden`). `unit` names what one
    /// `Tally::ok` counts as `per_ok` of, e.g. 100 "events" per batch.
    pub(crate) fn start(
        duration: Duration,
        hidden: bool,
        tally: Arc<Tally>,
        per_ok: u64,
        unit: &'static str,
    ) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(
                Some(duration.as_millis() as u64),
                ProgressDrawTarget::stderr(),
            )
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        let start = Instant::now();
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                let elapsed = start.elapsed();
                let done = tally.ok_count() * per_ok;
                ticking.set_position(elapsed.as_millis() as u64);
                ticking.set_message(format!(
                    "{done} {unit}, {:.0} {unit}/s, {} errors",
                    super::summary::per_sec(done as f64, elapsed),
                    tally.error_count()
                ));
            }
        });
        Self { bar, ticker }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
