//! `herald bench topics`: what idle topics cost a real `herald serve`
//! process: the time to create N single-partition topics over gRPC, the
//! server's memory, OS threads and open files while they sit idle, and the
//! time to SERVING when it restarts on them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::v1::CreateTopicRequest;
use herald::v1::admin_client::AdminClient;

use super::process::{ServerProcess, spawn_until_serving};
use super::rss::read_rss;
use super::scratch::ScratchDir;
use super::summary::per_sec;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct TopicsOptions {
    /// The `herald` binary to start.
    pub exe: PathBuf,
    /// Where the scratch data directory goes (default: the system temp dir).
    pub parent_dir: Option<PathBuf>,
    /// Topics to create.
    pub topics: usize,
    /// CreateTopic calls in flight.
    pub concurrency: usize,
    /// Longest wait for SERVING (the restart recovers every topic).
    pub timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TopicsReport {
    pub topics: usize,
    /// Creating them all, first call to last answer.
    pub create_secs: f64,
    pub creates_per_sec: f64,
    /// With every topic idle: resident memory, OS threads, open files.
    pub idle_rss_bytes: u64,
    pub idle_threads: u64,
    pub idle_open_files: u64,
    /// Spawn to SERVING on the data directory holding them.
    pub restart_ms: f64,
}

/// Creates the topics, samples the idle server, restarts it; removes the
/// scratch data afterwards.
pub(crate) async fn run(opts: TopicsOptions) -> anyhow::Result<TopicsReport> {
    anyhow::ensure!(opts.concurrency > 0, "concurrency must be positive");
    let dir = ScratchDir::new(opts.parent_dir.as_deref(), "topics")?;
    let server = spawn_until_serving(&opts.exe, dir.path(), opts.timeout).await?;
    let admin = AdminClient::connect(format!("http://{}", server.addr)).await?;
    let started = Instant::now();
    let mut creates = futures::stream::iter(0..opts.topics)
        .map(|i| {
            let mut admin = admin.clone();
            async move {
                let request = CreateTopicRequest {
                    name: format!("idle.{i:06}"),
                    config: None,
                };
                admin.create_topic(request).await
            }
        })
        .buffer_unordered(opts.concurrency);
    while let Some(outcome) = creates.next().await {
        outcome.map_err(|status| anyhow::anyhow!("CreateTopic failed: {status}"))?;
    }
    let create = started.elapsed();
    // Let anything the creates started settle before sampling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, threads, files) = idle_costs(&server)?;
    server.stop().await?;
    let restarted = spawn_until_serving(&opts.exe, dir.path(), opts.timeout).await?;
    let restart = restarted.ready_after;
    restarted.stop().await?;
    Ok(TopicsReport {
        topics: opts.topics,
        create_secs: create.as_secs_f64(),
        creates_per_sec: per_sec(opts.topics as f64, create),
        idle_rss_bytes: rss,
        idle_threads: threads,
        idle_open_files: files,
        restart_ms: restart.as_secs_f64() * 1e3,
    })
}

/// Resident bytes, OS threads and open file descriptors of the server.
fn idle_costs(server: &ServerProcess) -> anyhow::Result<(u64, u64, u64)> {
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the server exited"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Threads line in /proc/{pid}/status"))?;
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok((read_rss(pid)?, threads, files))
}

impl std::fmt::Display for TopicsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "idle topics (1 partition each)  {:>10}", self.topics)?;
        writeln!(
            f,
            "create                          {:>10.2} s  ({:.0} topics/s)",
            self.create_secs, self.creates_per_sec
        )?;
        writeln!(
            f,
            "idle server RSS                 {:>10.1} MiB",
            self.idle_rss_bytes as f64 / (1024.0 * 1024.0)
        )?;
        writeln!(
            f,
            "idle server OS threads          {:>10}",
            self.idle_threads
        )?;
        writeln!(
            f,
            "idle server open files          {:>10}",
            self.idle_open_files
        )?;
        writeln!(
            f,
            "restart to SERVING              {:>10.1} ms",
            self.restart_ms
        )
    }
}
