//! The Rust interop agent of the cross-language matrix: the command line in
//! `tests/interop/README.md`, on the typed client only (`Producer<T>`,
//! `Consumer<T>`), printing JSON Lines the matrix driver checks.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use herald_client::ConsumerSettings;
use herald_client::prelude::*;
use herald_examples::interop::v1::{Colour, InteropEvent, Nested};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

const LANG: &str = "rust";

#[derive(Parser)]
#[command(about = "Herald interop agent (Rust)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish `count` interop events.
    Produce {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        run_id: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        poison_seq: Option<u64>,
    },
    /// Consume interop events and print each.
    Consume {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        subscription: String,
        #[arg(long = "type", value_enum)]
        kind: Kind,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        consumer_name: Option<String>,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[arg(long, value_enum, default_value_t = Start::Earliest)]
        position: Start,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long)]
        fail_poison: bool,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        dead_letter_topic: Option<String>,
        #[arg(long)]
        exit_after: Option<usize>,
    },
    /// Provoke one kind of refusal and print the typed error.
    BadInput {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        case: Case,
        #[arg(long)]
        topic: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

#[derive(Clone, Copy, ValueEnum)]
enum Start {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, ValueEnum)]
enum Case {
    UnknownTopic,
    Oversize,
    WrongType,
}

/// The interop event for `seq`, exactly as the contract defines it.
fn interop_event(run_id: &str, seq: u64, poison: bool) -> InteropEvent {
    InteropEvent {
        run_id: run_id.to_owned(),
        seq: seq as i64,
        producer_lang: LANG.to_owned(),
        key: format!("k{}", seq % 4),
        text: format!("héllo wörld ✓ {seq}"),
        blob: vec![(seq % 256) as u8, ((seq + 1) % 256) as u8, 0, 255],
        amount: seq as f64 * 1.5,
        tags: vec![LANG.to_owned(), format!("seq-{seq}")],
        labels: [
            ("run".to_owned(), run_id.to_owned()),
            ("lang".to_owned(), LANG.to_owned()),
        ]
        .into(),
        nested: Some(Nested {
            name: format!("n{seq}"),
            value: -(seq as i64),
        }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_767_225_600 + seq as i64,
            nanos: 0,
        }),
        colour: if seq.is_multiple_of(2) {
            Colour::Green
        } else {
            Colour::Red
        } as i32,
        big: u64::MAX - seq,
        poison,
    }
}

/// Prints one JSON line, whole, even from concurrent handlers.
fn emit(out: &Mutex<std::io::Stdout>, value: Value) {
    let mut out = out.lock().unwrap();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn current_trace_id() -> String {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

#[tokio::main]
async fn main() {
    // A real tracer provider (no exporter): spans get real trace ids.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("herald-interop")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        );
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("interop (rust): {error:#}");
        std::process::exit(1);
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .endpoint(endpoint)
        .wait_for_server(Duration::from_secs(10))
        .consumer_defaults(ConsumerSettings::default())
        .connect()
        .await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    match cli.command {
        Command::Produce {
            endpoint,
            topic,
            run_id,
            count,
            poison_seq,
        } => {
            let client = connect(&endpoint).await?;
            let producer = client.producer::<InteropEvent>().topic(topic).build();
            let options = PublishOptions::default().attribute("interop-producer", LANG);
            for seq in 0..count {
                let event = interop_event(&run_id, seq, poison_seq == Some(seq));
                let span = tracing::info_span!("interop produce", seq);
                let trace_id = span.context().span().span_context().trace_id().to_string();
                let receipt =
                    tracing::Instrument::instrument(producer.publish_with(&event, &options), span)
                        .await
                        .with_context(|| format!("publishing seq {seq}"))?;
                emit(
                    &out,
                    json!({"seq": seq, "partition": receipt.partition, "offset": receipt.offset,
                           "trace_id": trace_id, "id": receipt.id}),
                );
            }
            producer.close().await;
        }
        Command::Consume {
            endpoint,
            topic,
            subscription,
            kind,
            count,
            consumer_name,
            priority,
            position,
            timeout_s,
            delay_ms,
            fail_poison,
            max_attempts,
            dead_letter_topic,
            exit_after,
        } => {
            let client = connect(&endpoint).await?;
            let mut builder = client
                .consumer::<InteropEvent>(subscription.clone())
                .topic(topic)
                .subscription_type(match kind {
                    Kind::Exclusive => SubscriptionType::Exclusive,
                    Kind::Shared => SubscriptionType::Shared,
                    Kind::Failover => SubscriptionType::Failover,
                    Kind::KeyShared => SubscriptionType::KeyShared,
                })
                .priority(priority)
                .initial_position(match position {
                    Start::Earliest => Position::Earliest,
                    Start::Latest => Position::Latest,
                });
            let consumer_name =
                consumer_name.unwrap_or_else(|| format!("rust-{}", std::process::id()));
            builder = builder.consumer_name(consumer_name.clone());
            if max_attempts.is_some() || dead_letter_topic.is_some() {
                builder = builder.redelivery(Redelivery {
                    min_backoff: Some(Duration::from_millis(50)),
                    max_backoff: Some(Duration::from_millis(200)),
                    max_delivery_attempts: max_attempts.unwrap_or(0),
                    dead_letter_topic: dead_letter_topic.clone(),
                    ..Redelivery::default()
                });
            }
            let consumer = builder.subscribe().await?;

            let mut roles = consumer.active_state();
            let role_out = out.clone();
            tokio::spawn(async move {
                let mut last: Option<bool> = None;
                while roles.changed().await.is_ok() {
                    let active = roles.borrow().as_ref().map(|s| s.active);
                    if let Some(active) = active
                        && last != Some(active)
                    {
                        last = Some(active);
                        emit(
                            &role_out,
                            json!({"role": if active { "active" } else { "standby" }}),
                        );
                    }
                }
            });

            let pool = DescriptorPool::decode(herald_examples::interop::DESCRIPTORS)?;
            let descriptor = pool
                .get_message_by_name("herald.interop.v1.InteropEvent")
                .context("interop descriptor")?;
            let done = CancellationToken::new();
            let acked: Arc<Mutex<HashSet<i64>>> = Arc::default();
            let printed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let handler = {
                let (out, done, acked, printed) =
                    (out.clone(), done.clone(), acked.clone(), printed.clone());
                move |envelope: Envelope<InteropEvent>| {
                    let (out, done, acked, printed, descriptor, consumer_name) = (
                        out.clone(),
                        done.clone(),
                        acked.clone(),
                        printed.clone(),
                        descriptor.clone(),
                        consumer_name.clone(),
                    );
                    async move {
                        let dynamic = DynamicMessage::decode(
                            descriptor,
                            prost::Message::encode_to_vec(&envelope.value).as_slice(),
                        )
                        .map_err(|e| e.to_string())?;
                        emit(
                            &out,
                            json!({
                                "event": serde_json::to_value(&dynamic).map_err(|e| e.to_string())?,
                                "id": envelope.id, "type": envelope.event_type, "source": envelope.source,
                                "data_schema": envelope.data_schema, "key": envelope.key,
                                "attributes": envelope.attributes, "trace_id": current_trace_id(),
                                "partition": envelope.partition, "offset": envelope.offset,
                                "attempt": envelope.delivery_attempt, "consumer": consumer_name,
                            }),
                        );
                        let n = printed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        if exit_after.is_some_and(|k| n >= k) {
                            std::process::exit(0);
                        }
                        if delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        }
                        if fail_poison && envelope.value.poison {
                            return Err(format!("poison event {}", envelope.value.seq));
                        }
                        let mut acked = acked.lock().unwrap();
                        acked.insert(envelope.value.seq);
                        if acked.len() >= count {
                            done.cancel();
                        }
                        Ok(())
                    }
                }
            };
            let run = consumer.run_until(done.clone(), handler);
            match tokio::time::timeout(Duration::from_secs(timeout_s), run).await {
                Ok(result) => result?,
                Err(_) => bail!(
                    "timed out after {timeout_s} s with {} of {count} events acked",
                    acked.lock().unwrap().len()
                ),
            }
            if acked.lock().unwrap().len() < count {
                bail!("the subscription ended before {count} events were acked");
            }
        }
        Command::BadInput {
            endpoint,
            case,
            topic,
        } => {
            let client = connect(&endpoint).await?;
            let (name, result) = match case {
                Case::UnknownTopic => {
                    let producer = client.producer::<InteropEvent>().topic(topic).build();
                    let result = producer
                        .publish(&interop_event("bad", 0, false))
                        .await
                        .map(|_| ());
                    ("unknown-topic", result)
                }
                Case::Oversize => {
                    let producer = client.producer::<InteropEvent>().topic(topic).build();
                    let mut event = interop_event("bad", 0, false);
                    event.text = "x".repeat(2 * 1024 * 1024);
                    ("oversize", producer.publish(&event).await.map(|_| ()))
                }
                Case::WrongType => {
                    let result = client
                        .consumer::<InteropEvent>("interop-shared")
                        .topic(topic)
                        .subscription_type(SubscriptionType::Exclusive)
                        .subscribe()
                        .await
                        .map(|_| ());
                    ("wrong-type", result)
                }
            };
            let error = match result {
                Ok(()) => bail!("{name}: the call succeeded"),
                Err(error) => error,
            };
            emit(
                &out,
                json!({"case": name, "error_code": error.code().as_str_name(),
                       "grpc_code": error.grpc_code() as i32, "message": error.to_string()}),
            );
        }
    }
    Ok(())
}
