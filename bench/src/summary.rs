//! Latency summaries shared by every `herald bench` that times requests, so
//! publish, the unary baseline and startup report percentiles the same way
//! (in JSON and in the human table).

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks: larger values are clamped to it.
const MAX_TRACKED_US: u64 = 120_000_000;

/// A latency histogram in microseconds, 3 significant digits, 1 µs to 2 min.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("static histogram bounds are valid")
}

/// Records `d` (in µs) into `h`, clamping what the histogram cannot track.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarizes a histogram filled by [`record`]; all zeros when empty.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A duration in µs as short human text: `850µs`, `1.25ms`, `2.50s`.
pub(crate) fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

impl std::fmt::Display for LatencySummary {
    /// Two lines: a header and the values, aligned.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency", "samples", "mean", "p50", "p90", "p99", "p99.9", "max"
        )?;
        write!(
            f,
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "",
            self.count,
            format_us(self.mean_us.round() as u64),
            format_us(self.p50_us),
            format_us(self.p90_us),
            format_us(self.p99_us),
            format_us(self.p999_us),
            format_us(self.max_us)
        )
    }
}

/// Median, min and max of a few samples (e.g. repeated start times).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `samples`; all zeros when there are none. The median
    /// of an even count is the mean of the two middle samples.
    pub(crate) fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// `n` per second over `d`, guarding against a zero duration.
pub(crate) fn per_sec(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_microseconds_milliseconds_and_seconds() {
        assert_eq!(format_us(0), "0µs");
        assert_eq!(format_us(999), "999µs");
        assert_eq!(format_us(1_250), "1.25ms");
        assert_eq!(format_us(2_500_000), "2.50s");
    }

    #[test]
    fn summary_of_known_samples() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1.0);
        let text = s.to_string();
        assert!(text.contains("p99.9") && text.contains("500µs") && text.contains("1.00ms"));
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["p99_us"], 990);
    }

    #[test]
    fn empty_histogram_and_clamping() {
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram()),
            LatencySummary::default()
        );
        let mut h = new_histogram();
        record(&mut h, Duration::from_secs(3600));
        assert!(h.max() >= MAX_TRACKED_US && h.max() < MAX_TRACKED_US * 2);
    }

    #[test]
    fn spread_median_min_max() {
        assert_eq!(Spread::of(&[]), Spread::default());
        let s = Spread::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }
}
