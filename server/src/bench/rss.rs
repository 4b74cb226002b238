//! Samples another process's resident memory (`VmRSS` in
//! `/proc/<pid>/status`) while a benchmark runs, e.g. the server's with
//! `bench subscribe --server-pid`, and reports where it started, its peak
//! and where it ended.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The resident set size in bytes from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(kib * 1024),
        Some(_) => None,
    }
}

/// The current resident set size of `pid` in bytes.
pub fn read_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS line in {path}"))
}

/// Resident memory over a run, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RssSummary {
    pub pid: u32,
    pub samples: u64,
    pub start_bytes: u64,
    pub max_bytes: u64,
    pub end_bytes: u64,
}

impl RssSummary {
    /// Adds one sample (the first one is the start, the latest the end).
    pub fn add(&mut self, bytes: u64) {
        if self.samples == 0 {
            self.start_bytes = bytes;
        }
        self.samples += 1;
        self.max_bytes = self.max_bytes.max(bytes);
        self.end_bytes = bytes;
    }
}

impl std::fmt::Display for RssSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        write!(
            f,
            "server RSS (pid {}, {} samples): start {:.1} MB, max {:.1} MB, end {:.1} MB",
            self.pid,
            self.samples,
            mb(self.start_bytes),
            mb(self.max_bytes),
            mb(self.end_bytes)
        )
    }
}

/// Samples a process's RSS every `every` until stopped.
pub struct RssSampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<RssSummary>,
}

impl RssSampler {
    /// Takes the first sample now (failing if the process cannot be read),
    /// then keeps sampling in the background.
    pub fn start(pid: u32, every: Duration) -> anyhow::Result<Self> {
        let mut summary = RssSummary {
            pid,
            ..RssSummary::default()
        };
        summary.add(read_rss(pid)?);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = ticks.tick() => match read_rss(pid) {
                        Ok(bytes) => summary.add(bytes),
                        Err(_) => break,
                    },
                }
            }
            summary
        });
        Ok(Self { stop, task })
    }

    /// Takes a last sample and returns the summary.
    pub async fn finish(self) -> anyhow::Result<RssSummary> {
        self.stop.cancel();
        let mut summary = self.task.await?;
        if let Ok(bytes) = read_rss(summary.pid) {
            summary.add(bytes);
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_kib() {
        let status = "Name:\therald\nVmPeak:\t  200000 kB\nVmRSS:\t   15360 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(15_360 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn summary_tracks_start_max_end() {
        let mut s = RssSummary::default();
        for b in [10, 30, 20] {
            s.add(b);
        }
        assert_eq!(
            (s.samples, s.start_bytes, s.max_bytes, s.end_bytes),
            (3, 10, 30, 20)
        );
        assert!(s.to_string().contains("max 0.0 MB"));
    }

    #[tokio::test]
    async fn samples_this_process() {
        let sampler = RssSampler::start(std::process::id(), Duration::from_millis(5)).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let s = sampler.finish().await.unwrap();
        assert!(s.samples >= 3, "{s:?}");
        assert!(s.start_bytes > 0 && s.max_bytes >= s.end_bytes);
        assert!(RssSampler::start(u32::MAX, Duration::from_millis(5)).is_err());
    }
}
