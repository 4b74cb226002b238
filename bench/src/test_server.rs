//! An in-memory broker on 127.0.0.1:0 for the end-to-end tests of the
//! gRPC benchmarks.

use herald_server::config::ServerConfig;
use herald_server::server::{BoundServer, ServerError};
use tokio_util::sync::CancellationToken;

/// A running in-process server; [`stop`](Self::stop) it at the end.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let server = BoundServer::bind(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            in_memory: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let endpoint = format!("http://{}", server.local_addr());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run(shutdown.clone()));
        Self {
            endpoint,
            shutdown,
            running,
        }
    }

    /// Shuts it down and checks it stopped cleanly.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.running.await.unwrap().unwrap();
    }
}
