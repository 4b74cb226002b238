//! The `herald bench` command line: flags of each benchmark and printing
//! its report (a table, or JSON with `--json`). Lives in the library so
//! `main.rs` only dispatches to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use herald_server::broker::Fsync;
use herald_server::storage::FsyncPolicy;

use super::load::LoadOptions;
use super::publish::{PublishMode, PublishOptions};
use super::startup::StartupOptions;
use super::storage::StorageBenchOptions;
use super::subscribe::SubscribeOptions;

/// `herald bench <what>`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append then read back through the file log alone (no gRPC).
    Storage(StorageArgs),
    /// Publish to a running server over gRPC.
    Publish(PublishArgs),
    /// Consume from a running server: delivery rate, backlog catch-up and
    /// publish-to-deliver latency.
    Subscribe(SubscribeArgs),
    /// Serve only grpc.health.v1.Health: the bare tonic baseline.
    BaselineServer(BaselineServerArgs),
    /// Hammer Health/Check like `bench publish --mode unary` hammers Publish.
    UnaryBaseline(UnaryBaselineArgs),
    /// Time `herald serve` to SERVING: empty data dir, then a large log.
    Startup(StartupArgs),
    /// What idle topics cost `herald serve`: create time, memory, threads,
    /// open files, restart time.
    Topics(TopicsArgs),
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Events to append in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub event_size: usize,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// batch, interval or none.
    #[arg(long, default_value = "batch")]
    pub fsync: Fsync,
    /// Flush period for --fsync interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub fsync_interval: Duration,
    /// Give every event a dedup id.
    #[arg(long)]
    pub with_ids: bool,
    /// Directory for the scratch log (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub output: Output,
}

/// Connections, concurrency, duration and pacing of a gRPC load run.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Outstanding requests per connection (stream: batches unanswered;
    /// unary: concurrent callers).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub output: Output,
}

impl LoadArgs {
    fn options(&self, rate: Option<f64>) -> LoadOptions {
        LoadOptions {
            endpoint: self.endpoint.clone(),
            connections: self.connections,
            in_flight: self.in_flight,
            duration: self.duration,
            rate,
            quiet: self.output.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Topic to publish to.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub event_size: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Open loop at this many events/s in total (latency counted from the
    /// intended send time); as fast as possible when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, value_enum, default_value = "stream")]
    pub mode: PublishMode,
    /// Create the topic first with this fsync policy: batch, interval or none
    /// (an existing topic is kept as is).
    #[arg(long)]
    pub create_topic_fsync: Option<Fsync>,
    /// With --create-topic-fsync: the new topic's dedup window, e.g. 2m;
    /// 0s turns dedup off [default: the server's]
    #[arg(long, requires = "create_topic_fsync", value_parser = humantime::parse_duration)]
    pub create_topic_dedup_window: Option<Duration>,
    /// Keep the topic at the end; without it, a topic this run created is
    /// deleted (one that existed before is always kept).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub options: SubscribeOptions,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct BaselineServerArgs {
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct UnaryBaselineArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Open loop at this many RPCs/s in total; as fast as possible when absent.
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// Where scratch data directories go (default: the system temp dir);
    /// they are removed afterwards.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Starts per measurement.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Size of the log to recover (bytes); 0 skips it.
    #[arg(long, default_value_t = 1 << 30)]
    pub recovery_bytes: u64,
    /// The herald binary to start (default: this one).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Longest wait for SERVING.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// Where the scratch data directory goes (default: the system temp
    /// dir); it is removed afterwards.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Single-partition topics to create.
    #[arg(long, default_value_t = 10_000)]
    pub topics: usize,
    /// CreateTopic calls in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The herald binary to start (default: this one).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Longest wait for SERVING.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: Output,
}

fn print<R: std::fmt::Display + serde::Serialize>(
    report: &R,
    output: &Output,
) -> anyhow::Result<()> {
    if output.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Runs one `herald bench` command.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(args) => {
            let fsync = match args.fsync {
                Fsync::Batch => FsyncPolicy::Batch,
                Fsync::Interval => FsyncPolicy::Interval(args.fsync_interval),
                Fsync::None => FsyncPolicy::Never,
            };
            let report = super::storage::run(StorageBenchOptions {
                events: args.events,
                event_size: args.event_size,
                batch_size: args.batch_size,
                concurrency: args.concurrency,
                fsync,
                with_ids: args.with_ids,
                dir: args.dir,
                ..StorageBenchOptions::default()
            })
            .await?;
            print(&report, &args.output)
        }
        BenchCommand::Publish(args) => {
            let report = super::publish::run(PublishOptions {
                load: args.load.options(args.rate),
                topic: args.topic,
                event_size: args.event_size,
                batch_size: args.batch_size,
                mode: args.mode,
                create_topic_fsync: args.create_topic_fsync,
                create_topic_dedup_window: args.create_topic_dedup_window,
                keep: args.keep,
            })
            .await?;
            print(&report, &args.load.output)
        }
        BenchCommand::Subscribe(args) => {
            let report = super::subscribe::run(SubscribeOptions {
                quiet: args.output.json,
                ..args.options
            })
            .await?;
            print(&report, &args.output)
        }
        BenchCommand::BaselineServer(args) => {
            super::baseline::serve(
                args.listen,
                |addr| tracing::info!("baseline health server listening on {addr}"),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await
        }
        BenchCommand::UnaryBaseline(args) => {
            let report = super::baseline::run_unary(args.load.options(args.rate)).await?;
            print(&report, &args.load.output)
        }
        BenchCommand::Startup(args) => {
            let exe = herald_exe(args.herald_bin)?;
            let report = super::startup::run(StartupOptions {
                exe,
                parent_dir: args.data_dir,
                runs: args.runs,
                recovery_bytes: args.recovery_bytes,
                timeout: args.timeout,
            })
            .await?;
            print(&report, &args.output)
        }
        BenchCommand::Topics(args) => {
            let exe = herald_exe(args.herald_bin)?;
            let report = super::topics::run(super::topics::TopicsOptions {
                exe,
                parent_dir: args.data_dir,
                topics: args.topics,
                concurrency: args.concurrency,
                timeout: args.timeout,
            })
            .await?;
            print(&report, &args.output)
        }
    }
}

/// The `herald` binary a bench starts: the one given, else this one.
fn herald_exe(given: Option<std::path::PathBuf>) -> std::io::Result<std::path::PathBuf> {
    given.map_or_else(std::env::current_exe, Ok)
}
