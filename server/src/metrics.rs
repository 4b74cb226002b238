//! Prometheus metrics: the `/metrics` HTTP endpoint, the metric names, and
//! the scrape-time collection of state gauges from the broker.
//!
//! The broker and storage only call the `metrics` facade (`counter!`,
//! `histogram!`); they know nothing of Prometheus. This module installs the
//! `metrics-exporter-prometheus` recorder and serves its rendering.
//!
//! Three kinds of series:
//! - **Events as they happen**: publish counters and latency histograms
//!   (broker), the fsync histogram (storage). Handles are registered when a
//!   topic opens, so the recorder must be installed before the broker opens
//!   ([`install_recorder`], called by `BoundServer::bind`).
//! - **State, read at scrape time**: backlog, unacked, consumers, lag,
//!   storage bytes and segments, connections and streams. [`collect`] asks
//!   the broker for the same stats the Admin API reports just before each
//!   render, so a scrape is exact and there is no background loop. The
//!   per-subscription counters (delivered, acked, ...) are set the same way
//!   from the subscription's own counters rather than counted twice.
//! - Gauges expire [`GAUGE_IDLE_TIMEOUT`] after their last update: every
//!   live gauge is refreshed by each scrape, so only the series of deleted
//!   topics and subscriptions go away (instead of reporting a stale backlog
//!   forever).
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder) and installed once, by the first server that serves metrics.
//! In-process servers (`testing`) default to metrics off, so tests never
//! fight over it; two servers in one process serving metrics would share
//! (and add up) their series.

pub(crate) mod connections;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::MetricsListen;
use connections::OpenCounts;

/// Metric names, in one place so the README list and the code agree.
pub(crate) mod names {
    pub(crate) const PUBLISHED_EVENTS: &str = "herald_published_events_total";
    pub(crate) const PUBLISHED_BYTES: &str = "herald_published_bytes_total";
    pub(crate) const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
    pub(crate) const FSYNC_DURATION: &str = "herald_fsync_duration_seconds";
    pub(crate) const TOPIC_STORAGE_BYTES: &str = "herald_topic_storage_bytes";
    pub(crate) const TOPIC_STORAGE_SEGMENTS: &str = "herald_topic_storage_segments";
    pub(crate) const TOPIC_STORED_EVENTS: &str = "herald_topic_stored_events";
    pub(crate) const SUB_BACKLOG_EVENTS: &str = "herald_subscription_backlog_events";
    pub(crate) const SUB_BACKLOG_BYTES: &str = "herald_subscription_backlog_bytes";
    pub(crate) const SUB_UNACKED: &str = "herald_subscription_unacked_events";
    pub(crate) const SUB_CONSUMERS: &str = "herald_subscription_consumers";
    pub(crate) const SUB_OLDEST_UNACKED_AGE: &str =
        "herald_subscription_oldest_unacked_age_seconds";
    pub(crate) const SUB_DELIVERED: &str = "herald_subscription_delivered_total";
    pub(crate) const SUB_ACKED: &str = "herald_subscription_acked_total";
    pub(crate) const SUB_NACKED: &str = "herald_subscription_nacked_total";
    pub(crate) const SUB_REDELIVERED: &str = "herald_subscription_redelivered_total";
    pub(crate) const SUB_DEAD_LETTERED: &str = "herald_subscription_dead_lettered_total";
    pub(crate) const CONNECTIONS_OPEN: &str = "herald_grpc_connections_open";
    pub(crate) const STREAMS_OPEN: &str = "herald_grpc_streams_open";
}

/// How long a gauge outlives its last update; see the module docs. Far
/// longer than a collection takes, shorter than any sane scrape interval.
pub(crate) const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency buckets, seconds: 50 µs (an fsync on fast NVMe) to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Why metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot listen for /metrics on {addr}: {source}; pass another --metrics-listen, or off"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {reason}")]
    Recorder { reason: String },
}

/// Installs the process-wide Prometheus recorder, once; later calls return
/// the same handle.
pub(crate) fn install_recorder() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(|reason| MetricsError::Recorder { reason })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(
        PUBLISHED_EVENTS,
        "Events stored by publishes (duplicates excluded)"
    );
    describe_counter!(
        PUBLISHED_BYTES,
        Unit::Bytes,
        "Encoded bytes of events stored by publishes"
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Publish latency: request accepted by the broker until durable"
    );
    describe_histogram!(
        FSYNC_DURATION,
        Unit::Seconds,
        "Duration of one fsync round of a partition log"
    );
    describe_gauge!(
        TOPIC_STORAGE_BYTES,
        Unit::Bytes,
        "Bytes stored for the topic, all partitions"
    );
    describe_gauge!(TOPIC_STORAGE_SEGMENTS, "Segment files of the topic");
    describe_gauge!(
        TOPIC_STORED_EVENTS,
        "Events stored (not yet deleted by retention)"
    );
    describe_gauge!(SUB_BACKLOG_EVENTS, "Events not yet acked, delivered or not");
    describe_gauge!(
        SUB_BACKLOG_BYTES,
        Unit::Bytes,
        "Backlog bytes, estimated from each partition's average stored event size"
    );
    describe_gauge!(SUB_UNACKED, "Events delivered and not yet acked");
    describe_gauge!(SUB_CONSUMERS, "Attached consumers");
    describe_gauge!(
        SUB_OLDEST_UNACKED_AGE,
        Unit::Seconds,
        "Age of the oldest event not yet acked (0 when caught up)"
    );
    describe_counter!(SUB_DELIVERED, "Deliveries, redeliveries included");
    describe_counter!(SUB_ACKED, "Events acknowledged");
    describe_counter!(SUB_NACKED, "Nacks received");
    describe_counter!(SUB_REDELIVERED, "Deliveries with attempt above 1");
    describe_counter!(
        SUB_DEAD_LETTERED,
        "Events published to the dead-letter topic"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Open gRPC (TCP) connections");
    describe_gauge!(
        STREAMS_OPEN,
        "Open gRPC streams by kind: publish, subscribe, read"
    );
}

/// The bound `/metrics` listener, ready to [`serve`](Self::serve).
pub(crate) struct MetricsEndpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
    local_addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Installs the recorder and binds the address, or nothing when off. A
    /// default address that is taken only warns; see [`MetricsListen`].
    pub(crate) async fn bind(listen: MetricsListen) -> Result<Option<Self>, MetricsError> {
        let MetricsListen::On { addr, required } = listen else {
            return Ok(None);
        };
        let handle = install_recorder()?;
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(source) if !required => {
                tracing::warn!(%addr, error = %source, "cannot listen for /metrics on the default address; serving without metrics (set --metrics-listen)");
                return Ok(None);
            }
            Err(source) => return Err(MetricsError::Bind { addr, source }),
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Some(Self {
            listener,
            handle,
            local_addr,
        }))
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `GET /metrics` until `shutdown` is cancelled.
    pub(crate) async fn serve(self, broker: Broker, open: OpenCounts, shutdown: CancellationToken) {
        let handle = self.handle;
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let (broker, open, handle) = (broker.clone(), open.clone(), handle.clone());
                async move {
                    collect(&broker, &open).await;
                    handle.run_upkeep();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                }
            }),
        );
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "metrics endpoint failed");
        }
    }
}

/// Sets every state gauge (and the per-subscription counters) from the
/// broker's stats and the open connection and stream counts.
pub(crate) async fn collect(broker: &Broker, open: &OpenCounts) {
    use metrics::{counter, gauge};
    use names::*;
    open.record();
    for topic in broker.list_topics() {
        let name = topic.name;
        let Ok(stats) = broker.topic_stats(&name) else {
            continue; // deleted meanwhile
        };
        let labels = [("topic", name.clone())];
        let parts = &stats.partitions;
        gauge!(TOPIC_STORAGE_BYTES, &labels).set(parts.iter().map(|p| p.bytes).sum::<u64>() as f64);
        gauge!(TOPIC_STORAGE_SEGMENTS, &labels)
            .set(parts.iter().map(|p| p.segments as u64).sum::<u64>() as f64);
        gauge!(TOPIC_STORED_EVENTS, &labels)
            .set(parts.iter().map(|p| p.records()).sum::<u64>() as f64);
        let Ok(subscriptions) = broker.list_subscriptions(&name) else {
            continue;
        };
        for subscription in subscriptions {
            let Ok(s) = broker.subscription_stats(&name, &subscription.name).await else {
                continue;
            };
            let labels = [("topic", name.clone()), ("subscription", subscription.name)];
            gauge!(SUB_BACKLOG_EVENTS, &labels).set(s.backlog as f64);
            gauge!(SUB_BACKLOG_BYTES, &labels).set(s.backlog_bytes as f64);
            gauge!(SUB_UNACKED, &labels).set(s.unacked as f64);
            gauge!(SUB_CONSUMERS, &labels).set(s.consumers.len() as f64);
            gauge!(SUB_OLDEST_UNACKED_AGE, &labels)
                .set(s.oldest_unacked_age.unwrap_or_default().as_secs_f64());
            counter!(SUB_DELIVERED, &labels).absolute(s.delivered);
            counter!(SUB_ACKED, &labels).absolute(s.acked);
            counter!(SUB_NACKED, &labels).absolute(s.nacked);
            counter!(SUB_REDELIVERED, &labels).absolute(s.redelivered);
            counter!(SUB_DEAD_LETTERED, &labels).absolute(s.dead_lettered);
        }
    }
}
