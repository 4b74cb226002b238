//! A whole Herald server inside a test: in-memory storage, an ephemeral
//! port, shut down when dropped. One line per test, no external process.
//!
//! Metrics are off (`ServerConfig::default()`): the Prometheus recorder is
//! process-wide, so test servers never install it or bind a metrics port
//! unless a test sets `metrics` in its config.
//!
//! ```no_run
//! # async fn demo() {
//! let server = herald_server::testing::start_in_memory().await;
//! let endpoint = server.endpoint(); // "http://127.0.0.1:<port>"
//! # }
//! ```

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::server::{BoundServer, ServerError};

/// A running in-process server. Dropping it cancels the server; call
/// [`TestServer::shutdown`] to also wait until it has stopped.
pub struct TestServer {
    /// The bound address.
    addr: SocketAddr,
    /// Cancelled on drop or shutdown.
    shutdown: CancellationToken,
    /// The serving task, awaited by `shutdown`.
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

/// The broker named by the `var` environment variable (an endpoint such as
/// `http://127.0.0.1:50051`), or else a fresh in-memory one: examples and
/// demos run against a real deployment when told, and stand alone when not.
/// Keep the returned server alive for as long as the endpoint is used.
pub async fn endpoint_from_env_or_in_memory(var: &str) -> (Option<TestServer>, String) {
    match std::env::var(var) {
        Ok(endpoint) => (None, endpoint),
        Err(_) => {
            let server = start_in_memory().await;
            let endpoint = server.endpoint();
            (Some(server), endpoint)
        }
    }
}

/// Starts an in-memory server on `127.0.0.1:0` with the default settings.
///
/// # Panics
/// If the server cannot bind (a test setup failure).
pub async fn start_in_memory() -> TestServer {
    start(ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        in_memory: true,
        ..ServerConfig::default()
    })
    .await
    .expect("start the in-memory test server")
}

/// Starts a server with `config` (e.g. a fixed `listen` address to restart
/// on, or broker settings).
pub async fn start(config: ServerConfig) -> Result<TestServer, ServerError> {
    let server = BoundServer::bind(config).await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Ok(TestServer {
        addr,
        shutdown,
        task: Some(task),
    })
}

impl TestServer {
    /// The URI clients connect to, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "test server stopped with an error"),
                Err(error) => tracing::warn!(%error, "test server task failed"),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
