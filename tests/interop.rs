//! The cross-language matrix: every SDK's interop agent
//! (`tests/interop/README.md`) against a real `herald` process — every
//! ordered producer → consumer pair, one shared subscription with a consumer
//! per language, a failover handover between two languages, a poison event
//! dead-lettered across languages, and bad input through each SDK.
//!
//! Languages come from `HERALD_INTEROP_LANGS` (see `common::agent`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::Herald;
use common::agent::{Agent, languages};
use herald::v1;
use serde_json::{Value, json};

/// The canonical proto3 JSON of the interop event `seq` from `lang`
/// (defaults omitted), as the contract defines it.
fn expected_event(run_id: &str, lang: &str, seq: u64, poison: bool) -> Value {
    let mut event = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        event.insert(k.to_owned(), v);
    };
    put("runId", json!(run_id));
    if seq != 0 {
        put("seq", json!(seq.to_string()));
    }
    put("producerLang", json!(lang));
    put("key", json!(format!("k{}", seq % 4)));
    put("text", json!(format!("héllo wörld ✓ {seq}")));
    let blob = [(seq % 256) as u8, ((seq + 1) % 256) as u8, 0, 255];
    put("blob", json!(base64(&blob)));
    if seq != 0 {
        put("amount", json!(seq as f64 * 1.5));
    }
    put("tags", json!([lang, format!("seq-{seq}")]));
    put("labels", json!({"run": run_id, "lang": lang}));
    let mut nested = json!({"name": format!("n{seq}")});
    if seq != 0 {
        nested["value"] = json!(format!("-{seq}"));
    }
    put("nested", nested);
    put(
        "occurredAt",
        json!(format!("2026-01-01T00:{:02}:{:02}Z", seq / 60, seq % 60)),
    );
    put(
        "colour",
        json!(if seq.is_multiple_of(2) {
            "COLOUR_GREEN"
        } else {
            "COLOUR_RED"
        }),
    );
    put("big", json!((u64::MAX - seq).to_string()));
    if poison {
        put("poison", json!(true));
    }
    Value::Object(event)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Numbers compared as numbers (`3` and `3.0` are the same double).
fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn seq_of(line: &Value) -> u64 {
    let event = &line["event"];
    match &event["seq"] {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap(),
        other => other
            .as_u64()
            .unwrap_or_else(|| panic!("seq {other} in {line}")),
    }
}

/// Checks one consumed line against the event the producer published.
fn check_delivery(line: &Value, run_id: &str, producer: &str, produced: &Value, consumer: &str) {
    let seq = seq_of(line);
    let context = format!("{producer} → {consumer}, seq {seq}");
    assert_eq!(
        normalized(&line["event"]),
        normalized(&expected_event(run_id, producer, seq, false)),
        "{context}: the typed event differs"
    );
    assert_eq!(line["type"], "dev.herald.interop.event", "{context}");
    assert_eq!(line["source"], "/herald/interop", "{context}");
    assert_eq!(
        line["data_schema"], "herald.interop.v1.InteropEvent",
        "{context}"
    );
    assert_eq!(line["key"], json!(format!("k{}", seq % 4)), "{context}");
    assert_eq!(line["id"], produced["id"], "{context}: event id");
    assert_eq!(
        line["attributes"]["interop-producer"],
        json!(producer),
        "{context}"
    );
    let trace_id = produced["trace_id"].as_str().unwrap();
    let traceparent = line["attributes"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: no traceparent in {line}"));
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{context}: traceparent {traceparent} is not from the producer's trace {trace_id}"
    );
    assert_eq!(
        line["trace_id"],
        json!(trace_id),
        "{context}: the consumer's span is not in the producer's trace"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn subscription_stats(server: &Herald, topic: &str, name: &str) -> v1::SubscriptionStats {
    runtime().block_on(async {
        server
            .client()
            .await
            .admin()
            .get_subscription_stats(v1::GetSubscriptionStatsRequest {
                topic: topic.into(),
                name: name.into(),
            })
            .await
            .expect("subscription stats")
            .into_inner()
    })
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn every_producer_consumer_pair_exchanges_typed_events_with_their_trace() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let langs = languages();
    for producer in &langs {
        for consumer in &langs {
            let topic = format!("interop.pair.{producer}.{consumer}");
            let run_id = format!("pair-{producer}-{consumer}");
            let produced = Agent::run(
                producer,
                &[
                    "produce",
                    "--endpoint",
                    &endpoint,
                    "--topic",
                    &topic,
                    "--run-id",
                    &run_id,
                    "--count",
                    "10",
                ],
                MINUTE,
            );
            assert_eq!(produced.len(), 10, "{producer} produced {produced:?}");
            let by_seq: HashMap<u64, &Value> = produced
                .iter()
                .map(|p| (p["seq"].as_u64().unwrap(), p))
                .collect();
            let consumed = Agent::run(
                consumer,
                &[
                    "consume",
                    "--endpoint",
                    &endpoint,
                    "--topic",
                    &topic,
                    "--subscription",
                    "pair",
                    "--type",
                    "exclusive",
                    "--count",
                    "10",
                    "--timeout-s",
                    "30",
                ],
                MINUTE,
            );
            let events: Vec<&Value> = consumed
                .iter()
                .filter(|l| l.get("event").is_some())
                .collect();
            let seqs: Vec<u64> = events.iter().map(|l| seq_of(l)).collect();
            assert_eq!(
                seqs,
                (0..10).collect::<Vec<_>>(),
                "{producer} → {consumer}: order"
            );
            for line in events {
                check_delivery(line, &run_id, producer, by_seq[&seq_of(line)], consumer);
            }
        }
    }
}

#[test]
fn a_shared_subscription_with_a_consumer_per_language_acks_every_event_once() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let langs = languages();
    let topic = "interop.shared";
    let mut consumers: Vec<Agent> = langs
        .iter()
        .map(|lang| {
            Agent::spawn(
                lang,
                &[
                    "consume",
                    "--endpoint",
                    &endpoint,
                    "--topic",
                    topic,
                    "--subscription",
                    "all-languages",
                    "--type",
                    "shared",
                    "--count",
                    "1000000",
                    "--timeout-s",
                    "120",
                    "--consumer-name",
                    &format!("{lang}-consumer"),
                ],
            )
        })
        .collect();
    // Every consumer attached before anything is published.
    let deadline = Instant::now() + MINUTE;
    loop {
        let stats = runtime().block_on(async {
            server
                .client()
                .await
                .admin()
                .get_subscription_stats(v1::GetSubscriptionStatsRequest {
                    topic: topic.into(),
                    name: "all-languages".into(),
                })
                .await
        });
        if stats.is_ok_and(|s| s.into_inner().consumers.len() == langs.len()) {
            break;
        }
        assert!(Instant::now() < deadline, "not every consumer attached");
        std::thread::sleep(Duration::from_millis(50));
    }
    let per_producer = 60u64;
    for lang in &langs {
        Agent::run(
            lang,
            &[
                "produce",
                "--endpoint",
                &endpoint,
                "--topic",
                topic,
                "--run-id",
                "shared",
                "--count",
                &per_producer.to_string(),
            ],
            MINUTE,
        );
    }
    let total = per_producer as usize * langs.len();
    let deadline = Instant::now() + MINUTE;
    loop {
        let stats = subscription_stats(&server, topic, "all-languages");
        let printed: usize = consumers.iter().map(|c| c.events().len()).sum();
        if stats.backlog == 0 && stats.unacked == 0 && printed >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all acked: {stats:?}, {printed} printed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for consumer in &mut consumers {
        consumer.kill();
        for line in consumer.events() {
            let producer = line["event"]["producerLang"].as_str().unwrap().to_owned();
            seen.entry((producer, seq_of(&line)))
                .or_default()
                .push(consumer.lang.clone());
        }
    }
    assert_eq!(seen.len(), total, "some event never reached a consumer");
    for ((producer, seq), by) in &seen {
        assert_eq!(by.len(), 1, "{producer} seq {seq} was delivered to {by:?}");
    }
    if langs.len() > 1 {
        let busy: BTreeSet<&String> = seen.values().flatten().collect();
        assert!(busy.len() > 1, "only {busy:?} received events");
    }
}

/// The failover pair: Go active and Python standby when both are tested.
fn failover_pair(langs: &[String]) -> (String, String) {
    let has = |l: &str| langs.iter().any(|x| x == l);
    if has("go") && has("python") {
        ("go".into(), "python".into())
    } else {
        (langs[0].clone(), langs[langs.len() - 1].clone())
    }
}

#[test]
fn failover_hands_over_to_the_standby_in_another_language_which_continues_in_order() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let (first, second) = failover_pair(&languages());
    let topic = "interop.failover";
    let consume = |lang: &str, priority: &str, extra: &[&str]| {
        let mut args = vec![
            "consume",
            "--endpoint",
            &endpoint,
            "--topic",
            topic,
            "--subscription",
            "pair",
            "--type",
            "failover",
            "--count",
            "1000000",
            "--timeout-s",
            "120",
            "--priority",
            priority,
            "--delay-ms",
            "20",
        ];
        args.extend_from_slice(extra);
        let name = format!("{lang}-{priority}");
        args.extend_from_slice(&["--consumer-name", &name]);
        Agent::spawn(lang, &args)
    };
    let mut active = consume(&first, "0", &["--exit-after", "30"]);
    active.wait_for("the active role", MINUTE, |l| {
        l.iter().any(|l| l["role"] == "active")
    });
    let mut standby = consume(&second, "1", &[]);
    standby.wait_for("the standby role", MINUTE, |l| {
        l.iter().any(|l| l["role"] == "standby")
    });

    Agent::run(
        "rust",
        &[
            "produce",
            "--endpoint",
            &endpoint,
            "--topic",
            topic,
            "--run-id",
            "failover",
            "--count",
            "100",
        ],
        MINUTE,
    );
    // The active consumer crashes after 30 events; the standby takes over.
    active.wait(MINUTE);
    standby.wait_for("the active role after the handover", MINUTE, |l| {
        l.iter().any(|l| l["role"] == "active")
    });
    standby.wait_for("the rest of the events", MINUTE, |l| {
        l.iter()
            .filter(|l| l.get("event").is_some())
            .any(|l| seq_of(l) == 99)
    });
    let first_seqs: Vec<u64> = active.events().iter().map(seq_of).collect();
    let second_seqs: Vec<u64> = standby.events().iter().map(seq_of).collect();
    assert_eq!(
        first_seqs,
        (0..30).collect::<Vec<_>>(),
        "{first} (active) saw {first_seqs:?}"
    );
    // The standby starts at or before the first event the crashed consumer
    // did not ack (at least once) and goes on strictly in order.
    let start = second_seqs[0];
    assert!(start <= 30, "{second} skipped events: starts at {start}");
    assert_eq!(
        second_seqs,
        (start..100).collect::<Vec<_>>(),
        "{second} (after the handover) is not in order"
    );
    // Everything acked in the end (the last ack may trail the last print).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = subscription_stats(&server, topic, "pair");
        if stats.backlog == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "left unacked: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_poison_event_from_one_language_is_dead_lettered_by_a_consumer_in_another() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.endpoint();
    let langs = languages();
    let has = |l: &str| langs.iter().any(|x| x == l);
    let producer = if has("typescript") {
        "typescript"
    } else {
        langs[0].as_str()
    };
    let consumer = if has("go") {
        "go"
    } else {
        langs[langs.len() - 1].as_str()
    };
    let topic = "interop.poison";
    let dlq = "interop.poison.dlq";
    Agent::run(
        producer,
        &[
            "produce",
            "--endpoint",
            &endpoint,
            "--topic",
            topic,
            "--run-id",
            "poison",
            "--count",
            "10",
            "--poison-seq",
            "3",
        ],
        MINUTE,
    );
    let mut consuming = Agent::spawn(
        consumer,
        &[
            "consume",
            "--endpoint",
            &endpoint,
            "--topic",
            topic,
            "--subscription",
            "dlq-test",
            "--type",
            "shared",
            "--count",
            "1000000",
            "--fail-poison",
            "--max-attempts",
            "3",
            "--dead-letter-topic",
            dlq,
            "--timeout-s",
            "120",
        ],
    );
    // The dead-letter topic receives it, with the handler's reason.
    let dead = runtime().block_on(async {
        let deadline = Instant::now() + MINUTE;
        loop {
            let mut stream = server
                .client()
                .await
                .subscriber()
                .read(v1::ReadRequest {
                    topic: dlq.into(),
                    max_events: 1,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner());
            if let Ok(stream) = stream.as_mut()
                && let Ok(Some(response)) = stream.message().await
                && let Some(event) = response.events.into_iter().next()
            {
                return event;
            }
            assert!(Instant::now() < deadline, "nothing reached {dlq}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    consuming.wait_for("the nine good events", MINUTE, |lines| {
        lines
            .iter()
            .filter(|l| l.get("event").is_some() && seq_of(l) != 3)
            .count()
            >= 9
    });
    consuming.kill();
    let attempts: Vec<u64> = consuming
        .events()
        .iter()
        .filter(|l| seq_of(l) == 3)
        .map(|l| l["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "the poison event's deliveries in {consumer}"
    );
    let event = dead.event.expect("event");
    assert_eq!(event.attributes["herald_dlq_reason"], "poison event 3");
    assert_eq!(event.attributes["herald_dlq_attempts"], "3");
    assert_eq!(event.attributes["interop-producer"], producer);
}

#[test]
fn bad_input_through_every_sdk_is_a_typed_error_with_the_herald_code() {
    let (server, _dir) = Herald::start(&["--auto-create-topics", "false"]);
    let endpoint = server.endpoint();
    let topic = "interop.bad-input";
    runtime().block_on(async {
        let mut admin = server.client().await.admin();
        admin
            .create_topic(v1::CreateTopicRequest {
                name: topic.into(),
                config: None,
            })
            .await
            .expect("create topic");
        admin
            .create_subscription(v1::CreateSubscriptionRequest {
                topic: topic.into(),
                name: "interop-shared".into(),
                r#type: v1::SubscriptionType::Shared as i32,
                ..Default::default()
            })
            .await
            .expect("create subscription");
    });
    let cases = [
        (
            "unknown-topic",
            "interop.no-such-topic",
            "ERROR_CODE_TOPIC_NOT_FOUND",
            tonic::Code::NotFound,
        ),
        (
            "oversize",
            topic,
            "ERROR_CODE_EVENT_TOO_LARGE",
            tonic::Code::InvalidArgument,
        ),
        (
            "wrong-type",
            topic,
            "ERROR_CODE_SUBSCRIPTION_TYPE_MISMATCH",
            tonic::Code::FailedPrecondition,
        ),
    ];
    for lang in languages() {
        for (case, case_topic, code, grpc) in cases {
            let lines = Agent::run(
                &lang,
                &[
                    "bad-input",
                    "--endpoint",
                    &endpoint,
                    "--case",
                    case,
                    "--topic",
                    case_topic,
                ],
                MINUTE,
            );
            assert_eq!(lines.len(), 1, "{lang} {case}: {lines:?}");
            let line = &lines[0];
            assert_eq!(line["case"], case, "{lang}: {line}");
            assert_eq!(line["error_code"], code, "{lang} {case}: {line}");
            assert_eq!(line["grpc_code"], grpc as i32, "{lang} {case}: {line}");
            assert!(
                line["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{lang} {case}: no message"
            );
        }
    }
    // The server is still up and nothing was created.
    let topics = runtime().block_on(async {
        server
            .client()
            .await
            .admin()
            .list_topics(v1::ListTopicsRequest::default())
            .await
            .expect("server still up")
            .into_inner()
    });
    let names: Vec<String> = topics.topics.into_iter().map(|t| t.name).collect();
    assert_eq!(names, [topic]);
}
