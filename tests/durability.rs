//! Durability across restarts and crashes, checked against the real files a
//! real `herald` process wrote.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Herald, event};
use herald::v1::{Event, GetTopicStatsRequest};
use herald_server::storage::file::FileStorage;
use herald_server::storage::{LogConfig, Storage};
use prost::Message;

/// (partition, offset) -> event id, for every publish that returned OK.
type Acked = HashMap<(u32, u64), String>;

/// Opens the stopped server's data dir and checks that every acked event is
/// stored at its offset, and that every stored record decodes.
fn verify_on_disk(data_dir: &std::path::Path, topic: &str, partitions: u32, acked: &Acked) -> u64 {
    let storage = FileStorage::open(data_dir).expect("open data dir");
    let mut stored = 0;
    let mut found: HashMap<(u32, u64), String> = HashMap::new();
    for partition in 0..partitions {
        let log = storage
            .open_partition(topic, partition, LogConfig::default())
            .expect("open partition");
        let mut from = 0;
        loop {
            let records = log
                .read(from, 10_000, usize::MAX)
                .expect("every stored record passes its CRC");
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for record in records {
                let event = Event::decode(record.payload.clone())
                    .expect("stored payload decodes as an Event");
                assert_eq!(record.id.as_ref(), event.id.as_bytes());
                found.insert((partition, record.offset), event.id);
                stored += 1;
            }
        }
    }
    for (position, id) in acked {
        assert_eq!(
            found.get(position),
            Some(id),
            "acked event {id} at {position:?} is missing after restart"
        );
    }
    stored
}

#[tokio::test(flavor = "multi_thread")]
async fn acked_events_survive_a_graceful_restart() {
    let (mut server, dir) = Herald::start(&["--default-partitions", "2"]);
    let client = server.client().await;
    let mut acked = Acked::new();
    for batch in 0..20 {
        let events: Vec<Event> = (0..25)
            .map(|i| {
                let mut e = event(&format!("ev-{batch}-{i}"), 100);
                e.key = format!("key-{}", i % 5);
                e
            })
            .collect();
        for result in client.publish("orders", events).await.expect("publish") {
            acked.insert((result.partition, result.offset), result.id);
        }
    }
    assert!(
        server.terminate().success(),
        "graceful shutdown exits 0; logs:\n{}",
        server.logs()
    );

    let server = Herald::start_in(dir.path(), &[]);
    let stats = server
        .client()
        .await
        .admin()
        .get_topic_stats(GetTopicStatsRequest {
            name: "orders".into(),
        })
        .await
        .expect("stats after restart")
        .into_inner();
    assert_eq!(stats.event_count, 500);
    assert_eq!(stats.partitions.len(), 2);
    drop(server);
    assert_eq!(verify_on_disk(dir.path(), "orders", 2, &acked), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_publishing_loses_no_acked_event() {
    let (server, dir) = Herald::start(&["--default-partitions", "2"]);
    let client = server.client().await;
    let acked = Arc::new(std::sync::Mutex::new(Acked::new()));
    let mut publishers = Vec::new();
    for task in 0..4 {
        let client = client.clone();
        let acked = acked.clone();
        publishers.push(tokio::spawn(async move {
            for batch in 0.. {
                let events: Vec<Event> = (0..10)
                    .map(|i| {
                        let mut e = event(&format!("t{task}-b{batch}-{i}"), 200);
                        e.key = format!("k{}", (batch + i) % 7);
                        e
                    })
                    .collect();
                match client.publish("crash", events).await {
                    Ok(results) => {
                        let mut acked = acked.lock().unwrap();
                        for r in results {
                            acked.insert((r.partition, r.offset), r.id);
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = server.restart_after_kill();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load ran: {} events acked",
        acked.len()
    );

    let stats = server
        .client()
        .await
        .admin()
        .get_topic_stats(GetTopicStatsRequest {
            name: "crash".into(),
        })
        .await
        .expect("stats after crash")
        .into_inner();
    assert!(stats.event_count >= acked.len() as u64);
    drop(server);
    let stored = verify_on_disk(dir.path(), "crash", 2, &acked);
    assert!(stored >= acked.len() as u64);
}
