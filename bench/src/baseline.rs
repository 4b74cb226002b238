//! The "bare tonic service" yardstick for unary Publish: a server that only
//! answers `grpc.health.v1.Health`, and a load run hammering `Health/Check`
//! with the same driver as `bench publish --mode unary`, so the ratio of the
//! two RPC rates shows what Herald's publish path costs over plain tonic.

use std::future::Future;
use std::net::SocketAddr;

use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::load::{self, LoadOptions, LoadReport};

/// Serves only Health (status SERVING) on `listen`, with the same transport
/// settings as `herald serve`, until `shutdown` completes. `on_bound` gets
/// the address actually bound (useful with port 0).
pub(crate) async fn serve(
    listen: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    on_bound(listener.local_addr()?);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Hammers `Health/Check` as `bench publish --mode unary` hammers Publish.
pub(crate) async fn run_unary(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    opts.validate()?;
    let clients = load::connect_all(&opts)
        .await?
        .into_iter()
        .map(HealthClient::new)
        .collect();
    let call = |mut client: HealthClient<Channel>| async move {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(drop)
    };
    let outcome = load::drive_unary(&opts, clients, call, 1, "rpcs").await?;
    Ok(LoadReport::new("unary-baseline", &opts, 0, 0, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_server_answers_the_unary_driver() {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            "127.0.0.1:0".parse().unwrap(),
            move |addr| {
                let _ = bound_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let addr = bound_rx.await.unwrap();
        let report = run_unary(LoadOptions {
            endpoint: format!("http://{addr}"),
            connections: 1,
            in_flight: 2,
            duration: Duration::from_millis(300),
            rate: None,
            quiet: true,
        })
        .await
        .unwrap();
        assert_eq!(report.errors, 0, "{report}");
        assert!(report.rpcs > 0 && report.events == 0, "{report}");
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    }
}
