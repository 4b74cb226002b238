//! Publishing over real gRPC: receipts, dedup, keys, pipelined streams and
//! topic administration.

mod common;

use common::{Herald, event};
use herald::v1::*;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn publish_returns_offsets_and_repeated_ids_are_deduplicated() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let first = client
        .publish("dedup", vec![event("a", 10), event("b", 10)])
        .await
        .unwrap();
    assert_eq!((first[0].offset, first[1].offset), (0, 1));
    assert!(!first[0].duplicate && !first[1].duplicate);
    let again = client
        .publish("dedup", vec![event("b", 10), event("c", 10)])
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].offset, 1);
    assert_eq!(again[1].offset, 2);
    let stats = client
        .admin()
        .get_topic_stats(GetTopicStatsRequest {
            name: "dedup".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.event_count, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_assigns_ids_and_keys_pick_stable_partitions() {
    let (server, _dir) = Herald::start(&["--default-partitions", "4"]);
    let client = server.client().await;
    let keyed = |key: &str| {
        let mut e = event("", 10);
        e.key = key.into();
        e
    };
    let results = client
        .publish(
            "keys",
            vec![keyed("alice"), keyed("bob"), keyed("alice"), keyed("alice")],
        )
        .await
        .unwrap();
    assert!(results.iter().all(|r| uuid::Uuid::parse_str(&r.id).is_ok()));
    assert_eq!(results[0].partition, results[2].partition);
    assert!(results[0].offset < results[2].offset && results[2].offset < results[3].offset);
    let later = client.publish("keys", vec![keyed("alice")]).await.unwrap();
    assert_eq!(later[0].partition, results[0].partition);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_stream_answers_every_request_and_keeps_order() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let requests: Vec<PublishStreamRequest> = (0..300u64)
        .map(|sequence| PublishStreamRequest {
            sequence,
            topic: "stream".into(),
            // Request 150 is refused; the stream goes on.
            events: if sequence == 150 {
                vec![]
            } else {
                (0..10)
                    .map(|i| event(&format!("s{sequence}-{i}"), 50))
                    .collect()
            },
        })
        .collect();
    let mut responses = client
        .publisher()
        .publish_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut first_offset = std::collections::BTreeMap::new();
    while let Some(response) = responses.next().await {
        let response = response.expect("stream stays healthy");
        if response.sequence == 150 {
            let error = response
                .error
                .expect("empty batch is answered with an error");
            assert_eq!(error.code, ErrorCode::EmptyBatch as i32);
            continue;
        }
        assert_eq!(response.results.len(), 10);
        first_offset.insert(response.sequence, response.results[0].offset);
    }
    assert_eq!(first_offset.len(), 299);
    let offsets: Vec<u64> = first_offset.values().copied().collect();
    assert!(
        offsets.windows(2).all(|w| w[0] + 10 == w[1]),
        "batches are stored in the order sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_are_created_listed_updated_and_deleted() {
    let (server, _dir) = Herald::start(&[]);
    let mut admin = server.client().await.admin();
    let created = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                partitions: 3,
                fsync_policy: FsyncPolicy::Interval as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let config = created.config.unwrap();
    assert_eq!(config.partitions, 3);
    assert_eq!(config.fsync_policy, FsyncPolicy::Interval as i32);
    assert_eq!(config.max_event_bytes, 1024 * 1024);

    let got = admin
        .get_topic(GetTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.config.unwrap().partitions, 3);
    let updated = admin
        .update_topic(UpdateTopicRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                retention_bytes: 1 << 30,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.config.unwrap().retention_bytes, 1 << 30);

    let listed = admin
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["orders"]
    );
    let stats = admin
        .get_topic_stats(GetTopicStatsRequest {
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.partitions.len(), 3);

    admin
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap();
    let gone = admin
        .get_topic(GetTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let again = admin
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_keyless_event_is_deduplicated_on_a_partitioned_topic() {
    let (server, _dir) = Herald::start(&["--default-partitions", "8"]);
    let client = server.client().await;
    let first = client
        .publish("retries", vec![event("order-42", 10)])
        .await
        .unwrap();
    // Other publishes move the round-robin on; the retry must still be found.
    for i in 0..5 {
        client
            .publish("retries", vec![event("", 10), event(&format!("x{i}"), 10)])
            .await
            .unwrap();
    }
    let retry = client
        .publish("retries", vec![event("order-42", 10)])
        .await
        .unwrap();
    assert!(retry[0].duplicate);
    assert_eq!(
        (retry[0].partition, retry[0].offset),
        (first[0].partition, first[0].offset)
    );
}
