//! The typed client across server restarts, slow starts, concurrency and
//! trace propagation, against in-process brokers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use herald_client::prelude::*;
use herald_client::{ConsumerSettings, v1};
use herald_server::config::ServerConfig;
use herald_server::testing::{start, start_in_memory};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, PartialEq, prost::Message)]
struct Tick {
    #[prost(uint64, tag = "1")]
    n: u64,
}

impl prost::Name for Tick {
    const NAME: &'static str = "Tick";
    const PACKAGE: &'static str = "test.v1";
}

impl Event for Tick {
    const TOPIC: &'static str = "ticks";
    const TYPE: &'static str = "com.example.tick";
    const SOURCE: &'static str = "/tests/ticks";
}

fn quick_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
        jitter: 0.1,
    }
}

/// A port nothing listens on right now.
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_resends_unanswered_events_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        listen: free_port(),
        data_dir: dir.path().to_owned(),
        in_memory: false,
        ..Default::default()
    };
    let server = start(config.clone()).await.expect("start");
    let client = Client::builder()
        .endpoint(server.endpoint())
        .reconnect(quick_reconnect())
        .request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect");
    let producer = client.producer::<Tick>().topic("restart-ticks").build();

    // Publishers keep going while the server stops and starts again.
    let published = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let producer = producer.clone();
        let published = published.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..150u64 {
                let receipt = producer
                    .publish(&Tick { n: task * 1000 + i })
                    .await
                    .unwrap_or_else(|e| panic!("publish {task}/{i} failed: {e}"));
                published.fetch_add(1, Ordering::Relaxed);
                receipts.push(receipt);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            receipts
        }));
    }
    while published.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = start(config)
        .await
        .expect("restart on the same port and data");

    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.expect("publisher task"));
    }
    assert_eq!(receipts.len(), 600);
    assert_stored_exactly_once(&client, "restart-ticks", &receipts).await;
    restarted.shutdown().await;
}

#[tokio::test]
async fn connect_waits_for_a_server_that_starts_late() {
    let addr = free_port();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        start(ServerConfig {
            listen: addr,
            in_memory: true,
            ..Default::default()
        })
        .await
        .expect("start late")
    });
    let client = Client::builder()
        .endpoint(format!("http://{addr}"))
        .reconnect(quick_reconnect())
        .wait_for_server(Duration::from_secs(10))
        .connect()
        .await
        .expect("waited for the server");
    client
        .producer::<Tick>()
        .build()
        .publish(&Tick { n: 1 })
        .await
        .expect("publish");
    starter.await.unwrap().shutdown().await;

    // Without the wait, the same situation fails at once, naming the endpoint.
    let error = Client::builder()
        .endpoint(format!("http://{}", free_port()))
        .connect()
        .await
        .err()
        .expect("nobody listens");
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_runs_handlers_concurrently_up_to_the_client_default() {
    let server = start_in_memory().await;
    let client = Client::builder()
        .endpoint(server.endpoint())
        .consumer_defaults(ConsumerSettings {
            concurrency: 4,
            ..Default::default()
        })
        .connect()
        .await
        .unwrap();
    let producer = client.producer::<Tick>().build();
    for n in 0..12 {
        producer.publish(&Tick { n }).await.unwrap();
    }
    let consumer = client
        .consumer::<Tick>("parallel")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let run = {
        let (now, peak, done, shutdown_handle) =
            (now.clone(), peak.clone(), done.clone(), shutdown.clone());
        tokio::spawn(
            consumer.run_until(shutdown.clone(), move |_e: Envelope<Tick>| {
                let (now, peak, done, shutdown) = (
                    now.clone(),
                    peak.clone(),
                    done.clone(),
                    shutdown_handle.clone(),
                );
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 12 {
                        shutdown.cancel();
                    }
                    Ok::<(), String>(())
                }
            }),
        )
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("all handled")
        .unwrap()
        .unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    assert_eq!(done.load(Ordering::SeqCst), 12);
    // All acked: nothing is left unacked on the subscription.
    let stats = client
        .admin()
        .get_subscription_stats(v1::GetSubscriptionStatsRequest {
            topic: "ticks".into(),
            name: "parallel".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.unacked, 0, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn trace_context_flows_from_the_publishing_span_to_the_handler_span() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let server = start_in_memory().await;
    let client = Client::connect(server.endpoint()).await.unwrap();
    let producer = client.producer::<Tick>().topic("traced").build();

    // Published inside a span of the application's own.
    let publish_span = tracing::info_span!("signup request");
    let trace_id = publish_span.context().span().span_context().trace_id();
    assert_ne!(trace_id, opentelemetry::trace::TraceId::INVALID);
    producer
        .publish(&Tick { n: 7 })
        .instrument_in(&publish_span)
        .await
        .unwrap();

    // Also from a plain OpenTelemetry span, with no tracing span around.
    let otel_span = provider.tracer("test").start("otel publish");
    let otel_trace_id = opentelemetry::trace::Span::span_context(&otel_span).trace_id();
    {
        let _attached = opentelemetry::Context::current_with_span(otel_span).attach();
        producer.publish(&Tick { n: 8 }).await.unwrap();
    }

    let consumer = client
        .consumer::<Tick>("tracing")
        .topic("traced")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        consumer.run_until(shutdown.clone(), move |e: Envelope<Tick>| {
            let tx = tx.clone();
            async move {
                let handler_trace = tracing::Span::current()
                    .context()
                    .span()
                    .span_context()
                    .trace_id();
                tx.send((
                    e.value.n,
                    e.attributes.get("traceparent").cloned(),
                    e.trace_context(),
                    handler_trace,
                ))
                .unwrap();
                Ok::<(), String>(())
            }
        }),
    );
    for (expected_n, expected_trace) in [(7, trace_id), (8, otel_trace_id)] {
        let (n, traceparent, context, handler_trace) = rx.recv().await.unwrap();
        assert_eq!(n, expected_n);
        let traceparent = traceparent.expect("traceparent attribute");
        assert!(
            traceparent.starts_with(&format!("00-{expected_trace}-")),
            "{traceparent}"
        );
        assert_eq!(context.span().span_context().trace_id(), expected_trace);
        assert_eq!(
            handler_trace, expected_trace,
            "the handler span continues the trace"
        );
    }
    shutdown.cancel();
    run.await.unwrap().unwrap();
    server.shutdown().await;
}

/// Runs a future inside a span without moving the span.
trait InstrumentIn: std::future::Future + Sized {
    fn instrument_in(self, span: &tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span.clone())
    }
}

impl<F: std::future::Future> InstrumentIn for F {}

/// Every receipt's event is stored once, where the receipt says, and
/// nothing else is stored.
async fn assert_stored_exactly_once(
    client: &Client,
    topic: &str,
    receipts: &[herald_client::Receipt],
) {
    let stored: Vec<_> = client
        .reader::<Tick>()
        .topic(topic)
        .read()
        .await
        .expect("read")
        .map(|r| r.expect("decodes"))
        .collect()
        .await;
    let ids: HashSet<&str> = stored.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "an event was stored twice");
    assert_eq!(
        stored.len(),
        receipts.len(),
        "stored events and receipts differ"
    );
    for receipt in receipts {
        let at = stored
            .iter()
            .find(|r| r.id == receipt.id)
            .unwrap_or_else(|| panic!("acked event {} is not stored", receipt.id));
        assert_eq!(
            (at.partition, at.offset),
            (receipt.partition, receipt.offset)
        );
    }
}

/// A TCP proxy whose connections can be cut at any moment, like a network
/// failure: the streams through it break with requests in flight.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
}

impl CuttableProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let current = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let token = current.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    /// Drops every open connection; new ones go through.
    fn cut(&self) {
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_resends_in_flight_batches_when_the_connection_breaks() {
    let server = start_in_memory().await;
    let proxy = CuttableProxy::start(server.local_addr()).await;
    let client = Client::builder()
        .endpoint(format!("http://{}", proxy.addr))
        .reconnect(quick_reconnect())
        .connect()
        .await
        .expect("connect");
    let producer = client.producer::<Tick>().topic("cut-ticks").build();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (producer, stop) = (producer.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                let receipt = producer
                    .publish(&Tick {
                        n: task * 1_000_000 + i,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("publish {task}/{i} failed: {e}"));
                receipts.push(receipt);
                i += 1;
            }
            receipts
        }));
    }
    // Cut until a cut caught requests in flight (nearly always the first).
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        proxy.cut();
        if producer.stats().resends >= 1 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.expect("publisher task"));
    }
    assert!(
        producer.stats().resends >= 1,
        "no cut caught a request in flight: {:?}",
        producer.stats()
    );
    assert_stored_exactly_once(&client, "cut-ticks", &receipts).await;
    server.shutdown().await;
}
