//! The `herald` binary, a package of its own so that the broker library
//! (`herald-server`) holds the broker only: `herald serve` runs the broker;
//! `herald stats` shows a running one's topics and subscriptions; `herald
//! bench` measures it.

mod error_report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_server::broker::Fsync;
use herald_server::config::{MetricsListen, Overrides, ServerConfig};
use herald_server::server::BoundServer;
use herald_server::telemetry::{LogFormat, Telemetry, TelemetryConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A durable event broker with a gRPC API"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "HERALD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info", env = "HERALD_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Show a running server's topics and subscriptions (rates, backlog, lag).
    Stats(stats::StatsArgs),
    /// Measure storage, publishing, subscriptions and startup.
    #[command(subcommand)]
    Bench(herald_bench::BenchCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; flags and HERALD_* variables override it.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "HERALD_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory [default: ./herald-data]
    #[arg(long, env = "HERALD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing survives a restart.
    #[arg(long, env = "HERALD_IN_MEMORY", num_args = 0..=1, default_missing_value = "true")]
    in_memory: Option<bool>,
    /// Create topics on first publish [default: true]
    #[arg(long, env = "HERALD_AUTO_CREATE_TOPICS", num_args = 0..=1, default_missing_value = "true")]
    auto_create_topics: Option<bool>,
    /// Largest accepted gRPC request, bytes [default: 16777216]
    #[arg(long, env = "HERALD_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// How long shutdown waits for open calls, e.g. "10s" [default: 10s]
    #[arg(long, env = "HERALD_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// On shutdown, report NOT_SERVING this long before draining, e.g. "5s" [default: 0s]
    #[arg(long, env = "HERALD_DRAIN_DELAY", value_parser = humantime::parse_duration)]
    drain_delay: Option<Duration>,
    /// Partitions of topics created without explicit settings [default: 1]
    #[arg(long, env = "HERALD_DEFAULT_PARTITIONS")]
    default_partitions: Option<u32>,
    /// Fsync policy of topics created without explicit settings: batch, interval or none [default: batch]
    #[arg(long, env = "HERALD_DEFAULT_FSYNC")]
    default_fsync: Option<Fsync>,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317 [default: no export]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled, 0.0 to 1.0; traces a producer sampled are always followed
    #[arg(long, env = "HERALD_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    trace_sample_ratio: f64,
    /// Prometheus /metrics address, or "off" [default: 127.0.0.1:9464]
    #[arg(long, env = "HERALD_METRICS_LISTEN")]
    metrics_listen: Option<MetricsListen>,
    /// Time between HTTP/2 PINGs on each client connection, e.g. "10s" [default: 10s]
    #[arg(long, env = "HERALD_KEEPALIVE_INTERVAL", value_parser = humantime::parse_duration)]
    keepalive_interval: Option<Duration>,
    /// Close a connection whose PING goes unanswered this long, e.g. "20s" [default: 20s]
    #[arg(long, env = "HERALD_KEEPALIVE_TIMEOUT", value_parser = humantime::parse_duration)]
    keepalive_timeout: Option<Duration>,
}

/// Cancels the token on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        token.cancel();
    });
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        in_memory: args.in_memory,
        auto_create_topics: args.auto_create_topics,
        max_request_bytes: args.max_request_bytes,
        shutdown_timeout: args.shutdown_timeout,
        drain_delay: args.drain_delay,
        default_partitions: args.default_partitions,
        default_fsync: args.default_fsync,
        metrics_listen: args.metrics_listen,
        keepalive_interval: args.keepalive_interval,
        keepalive_timeout: args.keepalive_timeout,
    };
    let config = ServerConfig::load(args.config.as_deref(), &overrides)?;
    let started = std::time::Instant::now();
    let server = BoundServer::bind(config).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "storage open"
    );
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    server.run(shutdown).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (otlp_endpoint, sample_ratio) = match &cli.command {
        Command::Serve(args) => (
            args.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            args.trace_sample_ratio,
        ),
        _ => (None, 1.0),
    };
    let telemetry_config = TelemetryConfig {
        log_format: cli.log_format,
        log_level: cli.log_level,
        otlp_endpoint,
        sample_ratio,
    };
    let result = runtime.block_on(async {
        let telemetry = herald_server::telemetry::init(&telemetry_config)?;
        let result = match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Stats(args) => stats::run(args).await.map_err(Into::into),
            Command::Bench(command) => herald_bench::run(command).await,
        };
        flush(telemetry).await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once: as a JSON log line for machines, else as one plain line.
            let line = error_report::describe(error.as_ref());
            match telemetry_config.log_format {
                LogFormat::Json => tracing::error!("{line}"),
                LogFormat::Human => eprintln!("herald: error: {line}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Sends the last spans before the process exits.
async fn flush(telemetry: Telemetry) {
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
}
