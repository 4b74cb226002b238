//! The load generator shared by the gRPC benchmarks: connections, concurrent
//! callers, pacing, and the report. `bench publish --mode unary` and `bench
//! unary-baseline` both run [`drive_unary`], so their RPCs/s compare like
//! for like; `bench publish --mode stream` reuses the pacing and report.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

use super::pacing::Pacer;
use super::progress::{Progress, Tally};
use super::summary::{self, LatencySummary};

/// How hard and how long to drive a server.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    /// Target, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// HTTP/2 connections (each its own channel).
    pub connections: usize,
    /// Concurrent requests per connection.
    pub in_flight: usize,
    /// How long to send.
    pub duration: Duration,
    /// Open loop at this many requests per second in total; closed loop when `None`.
    pub rate: Option<f64>,
    /// Hide the progress bar.
    pub quiet: bool,
}

impl LoadOptions {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.connections > 0 && self.in_flight > 0,
            "connections and in-flight must be positive"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "rate must be a positive number"
            );
        }
        Ok(())
    }
}

/// Opens one HTTP/2 connection, tuned like the server (no Nagle, large
/// windows), to `host:port` or `http(s)://host:port`.
pub(crate) async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let channel = Endpoint::from_shared(herald::endpoint::uri(endpoint))?
        .tcp_nodelay(true)
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint}: {e}"))?;
    Ok(channel)
}

/// Opens a bidirectional stream at `path` (e.g.
/// `/herald.v1.Publisher/PublishStream`) with message types of the caller's
/// choosing: the benches send and receive the server's light wire types
/// rather than the generated ones, so the load generator spends less of the
/// cores it shares with the server.
pub(crate) async fn open_stream<Req, Resp>(
    channel: Channel,
    path: &'static str,
    requests: impl tokio_stream::Stream<Item = Req> + Send + 'static,
) -> Result<tonic::Streaming<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await?
        .into_inner())
}

/// Opens `opts.connections` connections.
pub(crate) async fn connect_all(opts: &LoadOptions) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        channels.push(connect(&opts.endpoint).await?);
    }
    Ok(channels)
}

/// What a run measured, before it is turned into a [`LoadReport`].
pub(crate) struct LoadOutcome {
    /// Latency of successful requests, µs.
    pub latencies: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl LoadOutcome {
    /// Collects the run's counters and merges the per-task histograms.
    pub(crate) fn collect(
        tally: &Tally,
        histograms: impl IntoIterator<Item = Histogram<u64>>,
        elapsed: Duration,
    ) -> Self {
        let mut latencies = summary::new_histogram();
        for h in histograms {
            latencies
                .add(&h)
                .expect("histograms with the same bounds merge");
        }
        Self {
            latencies,
            ok: tally.ok_count(),
            errors: tally.error_count(),
            first_error: tally.first_error(),
            elapsed,
        }
    }
}

/// The shared state of one timed run: counters, pacing, deadline and the
/// progress bar. Start it, spawn tasks that each return their latency
/// histogram, then [`finish`](Self::finish) with their handles.
pub(crate) struct Run {
    pub tally: Arc<Tally>,
    pub pacer: Arc<Pacer>,
    /// No request starts at or after this.
    pub deadline: Instant,
    start: Instant,
    progress: Progress,
}

impl Run {
    /// Starts the clock and the progress bar (`per_ok` `unit`s per success).
    pub(crate) fn start(opts: &LoadOptions, per_ok: u64, unit: &'static str) -> Self {
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        Self {
            pacer: Arc::new(Pacer::new(opts.rate)),
            deadline: start + opts.duration,
            progress: Progress::start(opts.duration, opts.quiet, tally.clone(), per_ok, unit),
            tally,
            start,
        }
    }

    /// Waits for the tasks and collects what they measured.
    pub(crate) async fn finish(
        self,
        tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
    ) -> anyhow::Result<LoadOutcome> {
        let mut histograms = Vec::with_capacity(tasks.len());
        for task in tasks {
            histograms.push(task.await?);
        }
        let elapsed = self.start.elapsed();
        drop(self.progress);
        Ok(LoadOutcome::collect(&self.tally, histograms, elapsed))
    }
}

/// Runs `call` from `opts.in_flight` concurrent callers on each connection
/// until `opts.duration` is over, timing each call from its pacing origin.
/// `per_ok` and `unit` only label the progress bar.
pub(crate) async fn drive_unary<C, F, Fut>(
    opts: &LoadOptions,
    clients: Vec<C>,
    call: F,
    per_ok: u64,
    unit: &'static str,
) -> anyhow::Result<LoadOutcome>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    opts.validate()?;
    let run = Run::start(opts, per_ok, unit);
    let mut callers = Vec::with_capacity(clients.len() * opts.in_flight);
    for client in clients {
        for _ in 0..opts.in_flight {
            let (client, call) = (client.clone(), call.clone());
            let (tally, pacer, deadline) = (run.tally.clone(), run.pacer.clone(), run.deadline);
            callers.push(tokio::spawn(async move {
                let mut latencies = summary::new_histogram();
                while let Some(slot) = pacer.next(deadline).await {
                    let origin = slot.origin();
                    match call(client.clone()).await {
                        Ok(()) => {
                            summary::record(&mut latencies, origin.elapsed());
                            tally.ok();
                        }
                        Err(status) => tally.errors(1, status),
                    }
                }
                latencies
            }));
        }
    }
    run.finish(callers).await
}

/// The result of a gRPC load benchmark, as printed and as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadReport {
    /// `publish-stream`, `publish-unary` or `unary-baseline`.
    pub bench: String,
    pub endpoint: String,
    pub connections: usize,
    pub in_flight: usize,
    /// Open-loop target in requests (batches) per second; `None` for closed loop.
    pub target_rpcs_per_sec: Option<f64>,
    /// Events per request (0 for the health-check baseline).
    pub batch_size: usize,
    /// Payload bytes per event.
    pub event_size: usize,
    pub elapsed_secs: f64,
    /// Successful requests (RPCs, or batches acknowledged on a stream).
    pub rpcs: u64,
    pub rpcs_per_sec: f64,
    /// Events acknowledged.
    pub events: u64,
    pub events_per_sec: f64,
    /// Payload megabytes (10^6) acknowledged per second.
    pub mb_per_sec: f64,
    /// Failed requests (RPC errors, error answers, batches lost with a stream).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency of successful requests: send (or intended send) to answer.
    pub latency: LatencySummary,
}

impl LoadReport {
    /// Builds the report of `outcome` for requests of `batch_size` events of `event_size` bytes.
    pub(crate) fn new(
        bench: &str,
        opts: &LoadOptions,
        batch_size: usize,
        event_size: usize,
        outcome: &LoadOutcome,
    ) -> Self {
        let events = outcome.ok * batch_size as u64;
        let d = outcome.elapsed;
        Self {
            bench: bench.to_owned(),
            endpoint: opts.endpoint.clone(),
            connections: opts.connections,
            in_flight: opts.in_flight,
            target_rpcs_per_sec: opts.rate,
            batch_size,
            event_size,
            elapsed_secs: d.as_secs_f64(),
            rpcs: outcome.ok,
            rpcs_per_sec: summary::per_sec(outcome.ok as f64, d),
            events,
            events_per_sec: summary::per_sec(events as f64, d),
            mb_per_sec: summary::per_sec(events as f64 * event_size as f64 / 1e6, d),
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            latency: LatencySummary::from_histogram(&outcome.latencies),
        }
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pacing = match self.target_rpcs_per_sec {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "{}: {} x {} connections x {} in flight, {}, {:.1}s",
            self.bench, self.endpoint, self.connections, self.in_flight, pacing, self.elapsed_secs
        )?;
        writeln!(
            f,
            "{:<8} {:>10} {:>12} {:>14} {:>10} {:>8}",
            "", "rpcs", "rpcs/s", "events/s", "MB/s", "errors"
        )?;
        writeln!(
            f,
            "{:<8} {:>10} {:>12.0} {:>14.0} {:>10.1} {:>8}",
            "total",
            self.rpcs,
            self.rpcs_per_sec,
            self.events_per_sec,
            self.mb_per_sec,
            self.errors
        )?;
        if self.batch_size > 0 {
            writeln!(
                f,
                "{:<8} {} events of {} B per request",
                "", self.batch_size, self.event_size
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "first error: {error}")?;
        }
        write!(f, "{}", self.latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rates_and_table() {
        let opts = LoadOptions {
            endpoint: "http://x".into(),
            connections: 2,
            in_flight: 4,
            duration: Duration::from_secs(2),
            rate: None,
            quiet: true,
        };
        let mut latencies = summary::new_histogram();
        summary::record(&mut latencies, Duration::from_micros(700));
        let outcome = LoadOutcome {
            latencies,
            ok: 1_000,
            errors: 3,
            first_error: Some("boom".into()),
            elapsed: Duration::from_secs(2),
        };
        let r = LoadReport::new("publish-unary", &opts, 100, 100, &outcome);
        assert_eq!(r.events, 100_000);
        assert_eq!(r.rpcs_per_sec, 500.0);
        assert_eq!(r.events_per_sec, 50_000.0);
        assert_eq!(r.mb_per_sec, 5.0);
        let text = r.to_string();
        assert!(text.contains("closed loop"), "{text}");
        assert!(text.contains("first error: boom"), "{text}");
        assert!(text.contains("700µs"), "{text}");
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains("\"p99_us\":700")
        );
    }

    #[test]
    fn rejects_zero_concurrency_and_bad_rates() {
        let mut opts = LoadOptions {
            endpoint: "http://x".into(),
            connections: 1,
            in_flight: 0,
            duration: Duration::from_secs(1),
            rate: None,
            quiet: true,
        };
        assert!(opts.validate().is_err());
        opts.in_flight = 1;
        opts.rate = Some(0.0);
        assert!(opts.validate().is_err());
        opts.rate = Some(10.0);
        assert!(opts.validate().is_ok());
    }
}
