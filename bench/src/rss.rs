//! Samples another process's resident memory (`VmRSS` in
//! `/proc/<pid>/status`) and CPU time (`/proc/<pid>/stat`) while a benchmark
//! runs, e.g. the server's with `bench subscribe --server-pid`, and reports
//! where the memory started, its peak and where it ended, and the CPU
//! seconds the process used meanwhile.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The resident set size in bytes from the text of `/proc/<pid>/status`.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(kib * 1024),
        Some(_) => None,
    }
}

/// The current resident set size of `pid` in bytes.
pub(crate) fn read_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS line in {path}"))
}

/// User plus system CPU time in clock ticks from the text of
/// `/proc/<pid>/stat` (fields 14 and 15; the command name in field 2 may
/// hold spaces and parentheses, so fields count from its last `)`).
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// CPU seconds `pid` has used so far (user + system).
pub(crate) fn read_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow::anyhow!("cannot parse {path}"))?;
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_sec > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64 / per_sec as f64)
}

/// Resident memory over a run, bytes, and the CPU time used during it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct RssSummary {
    pub pid: u32,
    pub samples: u64,
    pub start_bytes: u64,
    pub max_bytes: u64,
    pub end_bytes: u64,
    /// User + system CPU seconds between the first and the last sample.
    pub cpu_secs: f64,
}

impl RssSummary {
    /// Adds one sample (the first one is the start, the latest the end).
    pub(crate) fn add(&mut self, bytes: u64) {
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
            "server RSS (pid {}, {} samples): start {:.1} MB, max {:.1} MB, end {:.1} MB; CPU {:.2} s",
            self.pid,
            self.samples,
            mb(self.start_bytes),
            mb(self.max_bytes),
            mb(self.end_bytes),
            self.cpu_secs
        )
    }
}

/// Samples a process's RSS every `every` until stopped.
pub(crate) struct RssSampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<RssSummary>,
    cpu_at_start: f64,
}

impl RssSampler {
    /// Takes the first sample now (failing if the process cannot be read),
    /// then keeps sampling in the background.
    pub(crate) fn start(pid: u32, every: Duration) -> anyhow::Result<Self> {
        let mut summary = RssSummary {
            pid,
            ..RssSummary::default()
        };
        summary.add(read_rss(pid)?);
        let cpu_at_start = read_cpu_secs(pid)?;
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
        Ok(Self {
            stop,
            task,
            cpu_at_start,
        })
    }

    /// Takes a last sample and returns the summary.
    pub(crate) async fn finish(self) -> anyhow::Result<RssSummary> {
        self.stop.cancel();
        let mut summary = self.task.await?;
        if let Ok(bytes) = read_rss(summary.pid) {
            summary.add(bytes);
        }
        if let Ok(cpu) = read_cpu_secs(summary.pid) {
            summary.cpu_secs = cpu - self.cpu_at_start;
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
    fn parses_cpu_ticks_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no name here"), None);
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
        assert!(s.cpu_secs >= 0.0, "{s:?}");
        assert!(RssSampler::start(u32::MAX, Duration::from_millis(5)).is_err());
    }
}
