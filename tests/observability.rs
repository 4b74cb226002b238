//! Traces and logs of a real `herald` process: a test OTLP receiver (the
//! OTLP trace service from `opentelemetry-proto`, served by tonic) gets the
//! spans of the broker and of an in-process client, and one publish +
//! consume round trip must form one trace — producer span → broker publish
//! → delivery → consumer processing — with the messaging attributes set.
//! JSON logs of a consume scenario carry the fields operators search by,
//! and never a payload.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Herald;
use herald_client::prelude::*;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, PartialEq, prost::Message)]
struct SignedUp {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    note: String,
}

impl prost::Name for SignedUp {
    const NAME: &'static str = "SignedUp";
    const PACKAGE: &'static str = "test.v1";
}

impl Event for SignedUp {
    const TOPIC: &'static str = "traced.signups";
    const TYPE: &'static str = "com.example.signed_up";
    const SOURCE: &'static str = "/tests/observability";
}

/// One received span, flattened.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// A collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    resources: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

fn flatten(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource = flatten(
                resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            self.resources.lock().unwrap().push(resource);
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    self.spans.lock().unwrap().push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: flatten(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    async fn start(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// Waits until `pred` holds on the spans received so far.
    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s; received: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name, &s.trace_id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// Current-thread: the test's tracing subscriber is thread-local, and the
// client's tasks must run where it is installed.
#[tokio::test]
async fn one_trace_runs_from_the_producer_through_the_broker_to_the_consumer() {
    let receiver = Receiver::default();
    let collector = receiver.clone().start().await;
    let (server, _dir) = Herald::start_with_env(
        &["--otlp-endpoint", &collector],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );

    // The application: its own spans exported to the same collector.
    let exporter = {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&collector)
            .build()
            .unwrap()
    };
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("signup-service")
                .build(),
        )
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let client = server.client().await;
    let producer = client.producer::<SignedUp>().build();
    let request_span = tracing::info_span!("signup request");
    let trace_id = request_span
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string();
    let producer_span_id = request_span
        .context()
        .span()
        .span_context()
        .span_id()
        .to_string();
    let receipt = tracing::Instrument::instrument(
        producer.publish(&SignedUp {
            user_id: "u1".into(),
            note: "hello".into(),
        }),
        request_span,
    )
    .await
    .expect("publish");

    let consumer = client
        .consumer::<SignedUp>("welcome")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(
        consumer.run_until(shutdown.clone(), move |_e: Envelope<SignedUp>| {
            let tx = tx.clone();
            async move {
                let current = tracing::Span::current().context();
                tx.send(current.span().span_context().trace_id().to_string())
                    .unwrap();
                Ok::<(), String>(())
            }
        }),
    );
    let handler_trace = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        handler_trace, trace_id,
        "the handler span continues the producer's trace"
    );
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;

    let spans = receiver
        .wait_for(
            "producer, publish, deliver and process spans in one trace",
            |spans| {
                let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
                [
                    "signup request",
                    "publish traced.signups",
                    "deliver traced.signups",
                    "process traced.signups",
                ]
                .iter()
                .all(|name| in_trace.iter().any(|s| s.name == *name))
            },
        )
        .await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"))
            .clone()
    };
    let publish = find("publish traced.signups");
    assert_eq!(publish.service, "herald");
    assert_eq!(
        publish.parent_span_id, producer_span_id,
        "publish is a child of the producer's span"
    );
    assert_eq!(publish.attributes["messaging.system"], "herald");
    assert_eq!(publish.attributes["messaging.operation"], "publish");
    assert_eq!(
        publish.attributes["messaging.destination.name"],
        "traced.signups"
    );
    assert_eq!(publish.attributes["messaging.message.id"], receipt.id);
    let deliver = find("deliver traced.signups");
    assert_eq!(deliver.service, "herald");
    assert_eq!(deliver.attributes["messaging.operation"], "deliver");
    assert_eq!(
        deliver.attributes["messaging.consumer.group.name"],
        "welcome"
    );
    assert_eq!(deliver.attributes["messaging.message.id"], receipt.id);
    let process = find("process traced.signups");
    assert_eq!(process.service, "signup-service");
    assert_eq!(process.attributes["messaging.operation"], "process");
    assert_eq!(process.attributes["messaging.message.id"], receipt.id);

    // The storage write is traced too, linked to the publish (own trace).
    receiver
        .wait_for("a persist span", |spans| {
            spans
                .iter()
                .any(|s| s.service == "herald" && s.name == "persist")
        })
        .await;
    // And every RPC: the Subscribe stream's span.
    receiver
        .wait_for("an RPC span", |spans| {
            spans
                .iter()
                .any(|s| s.service == "herald" && s.name == "herald.v1.Subscriber/Subscribe")
        })
        .await;
    let resources = receiver.resources.lock().unwrap().clone();
    let herald = resources
        .iter()
        .find(|r| r.get("service.name").map(String::as_str) == Some("herald"))
        .expect("herald's resource");
    assert!(herald.contains_key("service.version"), "{herald:?}");
    assert!(herald.contains_key("service.instance.id"), "{herald:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_event_fields_and_never_the_payload() {
    let (server, _dir) = Herald::start_with_env(
        &[],
        &[
            ("HERALD_LOG_FORMAT", "json"),
            ("HERALD_LOG_LEVEL", "info,herald_server=debug"),
        ],
    );
    let client = server.client().await;
    let producer = client.producer::<SignedUp>().topic("logged").build();
    const SECRET: &str = "PAYLOAD-MUST-NOT-BE-LOGGED";
    for i in 0..5 {
        producer
            .publish(&SignedUp {
                user_id: format!("u{i}"),
                note: SECRET.into(),
            })
            .await
            .unwrap();
    }
    let consumer = client
        .consumer::<SignedUp>("mailer")
        .topic("logged")
        .initial_position(Position::Earliest)
        .redelivery(Redelivery {
            min_backoff: Some(Duration::from_millis(20)),
            max_backoff: Some(Duration::from_millis(40)),
            max_delivery_attempts: 2,
            ..Default::default()
        })
        .subscribe()
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let seen = Arc::new(Mutex::new(0usize));
    let run = {
        let (seen, stop) = (seen.clone(), shutdown.clone());
        tokio::spawn(
            consumer.run_until(shutdown.clone(), move |e: Envelope<SignedUp>| {
                let (seen, stop) = (seen.clone(), stop.clone());
                async move {
                    let mut seen = seen.lock().unwrap();
                    *seen += 1;
                    // 4 acks, and u0 fails twice: nacked, then dead-lettered.
                    if *seen >= 6 {
                        stop.cancel();
                    }
                    if e.value.user_id == "u0" {
                        Err("mailbox full".to_owned())
                    } else {
                        Ok(())
                    }
                }
            }),
        )
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The dead-letter line is logged once the DLQ publish is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.logs().contains("event dead-lettered") {
        assert!(
            Instant::now() < deadline,
            "no dead-letter line:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let logs = server.logs();
    assert!(
        !logs.contains(SECRET),
        "a payload reached the logs:\n{logs}"
    );
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with_message = |message: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    // (The dead-letter topic's own publish is logged too.)
    let published: Vec<_> = with_message("event published")
        .into_iter()
        .filter(|l| l["topic"] == "logged")
        .collect();
    assert_eq!(published.len(), 5, "{logs}");
    for line in &published {
        for field in ["message_id", "topic", "event_type", "status"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        assert_eq!(line["status"], "stored");
        assert_eq!(line["event_type"], "com.example.signed_up");
    }
    let delivered = with_message("event delivered");
    assert_eq!(delivered.len(), 6, "5 deliveries and 1 redelivery:\n{logs}");
    for line in lines.iter().filter(|l| {
        [
            "event delivered",
            "event acked",
            "event nacked",
            "event dead-lettered",
        ]
        .contains(&l["message"].as_str().unwrap_or(""))
    }) {
        for field in [
            "message_id",
            "topic",
            "subscription",
            "event_type",
            "status",
            "attempt",
        ] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    assert_eq!(with_message("event acked").len(), 4, "{logs}");
    let nacked = with_message("event nacked");
    assert_eq!(nacked.len(), 2, "{logs}");
    assert_eq!(nacked[0]["reason"], "mailbox full");
    let dead = with_message("event dead-lettered");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["status"], "dead_lettered");
    assert_eq!(dead[0]["attempt"], 2);
}

/// An SDK in another language continues the trace the broker exported:
/// the Rust agent publishes inside its own span, the broker's publish and
/// delivery spans reach the collector in that trace, and the consumer
/// agent (Python, else Go, else TypeScript, else Rust) reports its
/// processing span in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_consumer_continues_the_trace_the_broker_exported() {
    use common::agent::{Agent, languages};
    let langs = languages();
    let consumer = ["python", "go", "typescript", "rust"]
        .into_iter()
        .find(|l| langs.iter().any(|x| x == l))
        .unwrap_or("rust");
    let receiver = Receiver::default();
    let collector = receiver.clone().start().await;
    let (server, _dir) = Herald::start_with_env(
        &["--otlp-endpoint", &collector],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let endpoint = server.endpoint();
    let produced = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            Agent::run(
                "rust",
                &[
                    "produce",
                    "--endpoint",
                    &endpoint,
                    "--topic",
                    "traced.interop",
                    "--run-id",
                    "t",
                    "--count",
                    "1",
                ],
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    let trace_id = produced[0]["trace_id"].as_str().unwrap().to_owned();
    let consumed = tokio::task::spawn_blocking(move || {
        Agent::run(
            consumer,
            &[
                "consume",
                "--endpoint",
                &endpoint,
                "--topic",
                "traced.interop",
                "--subscription",
                "s",
                "--type",
                "exclusive",
                "--count",
                "1",
                "--timeout-s",
                "30",
            ],
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    let line = consumed
        .iter()
        .find(|l| l.get("event").is_some())
        .expect("one event");
    assert_eq!(
        line["trace_id"],
        trace_id.as_str(),
        "the {consumer} consumer's span is in the producer's trace"
    );
    receiver
        .wait_for(
            "the broker's publish and deliver spans in the producer's trace",
            |spans| {
                ["publish traced.interop", "deliver traced.interop"]
                    .iter()
                    .all(|name| {
                        spans.iter().any(|s| {
                            s.service == "herald" && s.name == *name && s.trace_id == trace_id
                        })
                    })
            },
        )
        .await;
}

#[test]
fn unusable_trace_settings_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Herald::try_start_with_env(dir.path(), &["--otlp-endpoint", "not a url"], &[])
        .err()
        .expect("a malformed collector address is refused");
    assert!(
        logs.contains("cannot set up the OTLP exporter for not a url"),
        "{logs}"
    );
    let logs = Herald::try_start_with_env(dir.path(), &["--trace-sample-ratio", "2"], &[])
        .err()
        .expect("a ratio above 1 is refused");
    assert!(
        logs.contains("trace sample ratio 2 is not between 0 and 1"),
        "{logs}"
    );
}
