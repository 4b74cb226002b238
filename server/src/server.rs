//! Runs the gRPC server: opens storage and the broker, serves Publisher,
//! Subscriber, Admin, health and reflection, and shuts down in order when told.
//!
//! Shutdown (the `shutdown` token is cancelled, e.g. on SIGTERM): health goes
//! NOT_SERVING, streams stop reading and end with UNAVAILABLE, the listener
//! stops accepting, in-flight calls finish (bounded by `shutdown_timeout`),
//! then the broker drains its write queues and fsyncs every log.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::publisher_service::publisher_server::PublisherServer;
use crate::api::subscriber_service::subscriber_server::SubscriberServer;
use herald::v1::admin_server::AdminServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use crate::api::ApiContext;
use crate::api::admin::AdminService;
use crate::api::publisher::PublisherService;
use crate::api::subscriber::SubscriberService;
use crate::broker::{Broker, BrokerError};
use crate::config::ServerConfig;
use crate::metrics::MetricsEndpoint;
use crate::metrics::MetricsError;
use crate::metrics::connections::OpenCounts;
use crate::storage::file::FileStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::{Storage, StorageError};

/// Services reported by health, besides the whole server ("").
const SERVICE_NAMES: [&str; 3] = [
    "herald.v1.Publisher",
    "herald.v1.Subscriber",
    "herald.v1.Admin",
];

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be opened as storage.
    #[error(
        "cannot use data directory {path}: {source}; pass a writable directory with --data-dir (or HERALD_DATA_DIR)"
    )]
    DataDir {
        /// The data directory.
        path: String,
        /// Why storage could not open it.
        #[source]
        source: StorageError,
    },
    /// Another server holds the data directory's lock.
    #[error(
        "{source}; stop that server first, or give this one its own --data-dir (or HERALD_DATA_DIR)"
    )]
    DataDirInUse {
        /// The [`StorageError::Locked`] naming the directory and its holder.
        #[source]
        source: StorageError,
    },
    /// The broker could not open the stored topics and subscriptions.
    #[error("cannot open the stored topics: {0}")]
    Broker(#[from] BrokerError),
    /// The gRPC listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another process using the port? pass --listen")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The `/metrics` endpoint could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The gRPC transport failed while serving.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A server with storage open and its port bound, ready to [`run`](Self::run).
pub struct BoundServer {
    config: ServerConfig,
    broker: Broker,
    listener: TcpListener,
    local_addr: SocketAddr,
    broker_shutdown: CancellationToken,
    /// The bound `/metrics` listener, when metrics are on.
    metrics: Option<MetricsEndpoint>,
}

impl BoundServer {
    /// Opens storage (recovering it), opens the broker and binds the port.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        // First: the broker registers its metric handles as topics open.
        let metrics = MetricsEndpoint::bind(config.metrics).await?;
        // The port first: the data directory's lock then records where this
        // server listens, so a second server refused the directory can say.
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let storage: Arc<dyn Storage> = if config.in_memory {
            Arc::new(MemoryStorage::new())
        } else {
            match crate::storage::file::limits::raise_open_file_limit() {
                Ok((before, after)) if after > before => {
                    tracing::debug!(
                        before,
                        after,
                        "raised the open-file limit to the hard limit"
                    );
                }
                Ok((_, limit)) => tracing::debug!(limit, "open-file limit"),
                Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
            }
            let holder = format!("listening on {local_addr}");
            Arc::new(
                FileStorage::open_as(&config.data_dir, Some(&holder)).map_err(|source| {
                    let path = config.data_dir.display().to_string();
                    match source {
                        StorageError::Locked { .. } => ServerError::DataDirInUse { source },
                        source => ServerError::DataDir { path, source },
                    }
                })?,
            )
        };
        let broker_shutdown = CancellationToken::new();
        let broker = Broker::open(storage, config.broker.clone(), broker_shutdown.clone())?;
        Ok(Self {
            config,
            broker,
            listener,
            local_addr,
            broker_shutdown,
            metrics,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The broker, for in-process use beside the gRPC server.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let BoundServer {
            config,
            broker,
            listener,
            local_addr,
            broker_shutdown,
            metrics,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in std::iter::once("").chain(SERVICE_NAMES) {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(herald::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("embedded descriptor sets are valid");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(herald::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("embedded descriptor sets are valid");

        let api_shutdown = CancellationToken::new();
        let open = OpenCounts::default();
        let ctx = ApiContext {
            broker: broker.clone(),
            tasks: TaskTracker::new(),
            shutdown: api_shutdown.clone(),
            open: open.clone(),
        };
        // Serves through the drain, so the last scrapes see it; stopped
        // once the API has finished.
        let metrics_shutdown = CancellationToken::new();
        let metrics_task = metrics.map(|endpoint| {
            tracing::info!(addr = %endpoint.local_addr(), "metrics on http://{}/metrics", endpoint.local_addr());
            tokio::spawn(endpoint.serve(broker.clone(), open.clone(), metrics_shutdown.clone()))
        });
        let storage_watch = ctx.tasks.spawn(report_storage_health(
            broker.storage_health(),
            health.clone(),
            shutdown.clone(),
        ));
        let max = config.broker.max_request_bytes;
        let publisher = PublisherServer::new(PublisherService::new(ctx.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let subscriber = SubscriberServer::new(SubscriberService::new(ctx.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let admin = AdminServer::new(AdminService::new(ctx.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);

        let stop_accepting = CancellationToken::new();
        let router = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(move |response| {
                crate::api::limits::rewrite_response(response, max)
            }))
            .trace_fn(rpc_span)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(config.keepalive.interval))
            .http2_keepalive_timeout(Some(config.keepalive.timeout))
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(publisher)
            .add_service(subscriber)
            .add_service(admin);
        // The builder's `tcp_nodelay` and `tcp_keepalive` do not apply to an
        // incoming stream we hand over, so set them per accepted socket:
        // small deliveries and answers must not wait for Nagle's algorithm,
        // and a peer whose machine is gone must not hold a connection open.
        let tcp_keepalive = socket2::TcpKeepalive::new()
            .with_time(config.keepalive.interval)
            .with_interval(config.keepalive.interval)
            .with_retries(3);
        let incoming = TcpListenerStream::new(listener).map(move |socket| {
            if let Ok(socket) = &socket {
                let _ = socket.set_nodelay(true);
                let _ = socket2::SockRef::from(socket).set_tcp_keepalive(&tcp_keepalive);
            }
            socket.map(|socket| open.connection(socket))
        });
        let serve =
            router.serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
        if config.in_memory {
            tracing::info!(addr = %local_addr, in_memory = true, "herald listening on {local_addr}");
        } else {
            tracing::info!(addr = %local_addr, data_dir = %config.data_dir.display(), "herald listening on {local_addr}");
        }
        let mut serve = tokio::spawn(serve);

        tokio::select! {
            result = &mut serve => {
                // The transport ended by itself: report it, but still drain.
                stop_metrics(metrics_shutdown, metrics_task).await;
                broker.shutdown().await;
                return match result {
                    Ok(result) => result.map_err(ServerError::from),
                    Err(join) => panic!("server task panicked: {join}"),
                };
            }
            _ = shutdown.cancelled() => {}
        }

        tracing::info!("shutting down: draining");
        // Nothing may report SERVING again from here on.
        let _ = storage_watch.await;
        for name in std::iter::once("").chain(SERVICE_NAMES) {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        if !config.drain_delay.is_zero() {
            tracing::info!(delay = ?config.drain_delay, "reporting NOT_SERVING before draining");
            tokio::time::sleep(config.drain_delay).await;
        }
        api_shutdown.cancel();
        stop_accepting.cancel();
        match tokio::time::timeout(config.shutdown_timeout, &mut serve).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "transport error while draining"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(timeout = ?config.shutdown_timeout, "calls still open after the shutdown timeout; closing them");
                serve.abort();
            }
        }
        ctx.tasks.close();
        let _ = tokio::time::timeout(config.shutdown_timeout, ctx.tasks.wait()).await;
        stop_metrics(metrics_shutdown, metrics_task).await;
        broker.shutdown().await;
        broker_shutdown.cancel();
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Reports the whole server and the Publisher NOT_SERVING while storage
/// cannot write (disk full, I/O errors, a log refusing writes after a
/// failed fsync), and SERVING again once it can; reads, subscriptions and
/// admin calls keep working meanwhile. Ends when `shutdown` is cancelled.
async fn report_storage_health(
    mut state: tokio::sync::watch::Receiver<Option<String>>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut was_failing = false;
    loop {
        let failure = state.borrow_and_update().clone();
        let status = match &failure {
            Some(reason) => {
                tracing::error!(%reason, "storage cannot write: reporting NOT_SERVING");
                ServingStatus::NotServing
            }
            None => {
                if was_failing {
                    tracing::info!("storage writes again: reporting SERVING");
                }
                ServingStatus::Serving
            }
        };
        was_failing = failure.is_some();
        for name in ["", "herald.v1.Publisher"] {
            health.set_service_status(name, status).await;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The span of one gRPC call (a whole stream for streaming calls), named
/// and attributed per the OpenTelemetry RPC conventions. A `traceparent`
/// header from an instrumented client becomes its parent.
fn rpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut carrier = std::collections::HashMap::new();
    if let Some(traceparent) = header("traceparent") {
        carrier.insert("traceparent".to_owned(), traceparent);
        if let Some(state) = header("tracestate") {
            carrier.insert("tracestate".to_owned(), state);
        }
    }
    if !crate::telemetry::sample_event(&carrier) {
        return tracing::Span::none();
    }
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    crate::telemetry::set_parent(&span, &carrier);
    span
}

/// Stops the metrics endpoint and waits for it (an open scrape finishes).
async fn stop_metrics(shutdown: CancellationToken, task: Option<tokio::task::JoinHandle<()>>) {
    shutdown.cancel();
    let Some(mut task) = task else { return };
    match tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "metrics task failed"),
        Err(_) => task.abort(),
    }
}
