//! Reading topics over real gRPC: replay from a position, partition filters,
//! following live events, errors, and shutdown of open reads.

mod common;

use std::time::Duration;

use common::{Herald, event};
use herald::StatusExt;
use herald::v1::subscriber_client::SubscriberClient;
use herald::v1::*;
use tonic::transport::Channel;

/// Long enough for anything that should happen; a hang fails the test.
const WAIT: Duration = Duration::from_secs(10);

async fn reader(server: &Herald) -> SubscriberClient<Channel> {
    SubscriberClient::connect(server.endpoint())
        .await
        .expect("connect to herald")
}

fn earliest() -> Option<Position> {
    Some(Position {
        kind: Some(position::Kind::Earliest(())),
    })
}

fn request(topic: &str, position: Option<Position>) -> ReadRequest {
    ReadRequest {
        topic: topic.into(),
        position,
        ..Default::default()
    }
}

/// Every event of a read that ends by itself.
async fn read_all(
    client: &mut SubscriberClient<Channel>,
    request: ReadRequest,
) -> Vec<DeliveredEvent> {
    let mut stream = client.read(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(response) = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a read without follow ends by itself")
        .unwrap()
    {
        events.extend(response.events);
    }
    events
}

/// The status a read fails with (at the call or as the stream's first item).
async fn read_error(client: &mut SubscriberClient<Channel>, request: ReadRequest) -> tonic::Status {
    match client.read(request).await {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("the read fails"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_replays_a_topic_from_earliest_in_order() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut receipts = Vec::new();
    for group in 0..3 {
        let events = (0..4)
            .map(|i| {
                let mut e = event(&format!("e{group}-{i}"), 0);
                e.data = format!("data {group}-{i}").into_bytes().into();
                e
            })
            .collect();
        receipts.extend(client.publish("replay", events).await.unwrap());
    }
    let mut subscriber = reader(&server).await;
    let events = read_all(&mut subscriber, request("replay", earliest())).await;
    assert_eq!(events.len(), receipts.len());
    for (offset, (read, receipt)) in events.iter().zip(&receipts).enumerate() {
        let envelope = read.event.as_ref().unwrap();
        assert_eq!(read.topic, "replay");
        assert_eq!((read.partition, read.offset), (0, offset as u64));
        assert_eq!(receipt.offset, read.offset);
        assert_eq!(envelope.id, receipt.id);
        let (group, i) = (offset / 4, offset % 4);
        assert_eq!(envelope.data, format!("data {group}-{i}").as_bytes());
        assert_eq!(read.publish_time, receipt.publish_time);
        assert_eq!((read.delivery_attempt, read.ack_handle.as_str()), (0, ""));
    }
    // Unset position means earliest; max_events stops early.
    let first_two = read_all(
        &mut subscriber,
        ReadRequest {
            max_events: 2,
            ..request("replay", None)
        },
    )
    .await;
    let ids: Vec<&str> = first_two
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["e0-0", "e0-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_from_a_timestamp_returns_only_later_events() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let first: Vec<Event> = (0..3).map(|i| event(&format!("old-{i}"), 10)).collect();
    client.publish("timed", first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = prost_types::Timestamp::from(std::time::SystemTime::now());
    let second: Vec<Event> = (0..3).map(|i| event(&format!("new-{i}"), 10)).collect();
    client.publish("timed", second).await.unwrap();

    let position = Some(Position {
        kind: Some(position::Kind::Timestamp(since)),
    });
    let events = read_all(&mut reader(&server).await, request("timed", position)).await;
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["new-0", "new-1", "new-2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_of_chosen_partitions_returns_only_theirs() {
    let (server, _dir) = Herald::start(&["--default-partitions", "4"]);
    let client = server.client().await;
    let events: Vec<Event> = (0..40)
        .map(|i| {
            let mut e = event(&format!("k{i}"), 10);
            e.key = format!("key-{i}");
            e
        })
        .collect();
    let receipts = client.publish("parts", events).await.unwrap();
    let mut expected: Vec<&str> = receipts
        .iter()
        .filter(|r| r.partition == 1 || r.partition == 3)
        .map(|r| r.id.as_str())
        .collect();
    assert!(!expected.is_empty());

    let mut subscriber = reader(&server).await;
    let read = read_all(
        &mut subscriber,
        ReadRequest {
            partitions: vec![1, 3],
            ..request("parts", earliest())
        },
    )
    .await;
    assert!(read.iter().all(|e| e.partition == 1 || e.partition == 3));
    for partition in [1, 3] {
        let offsets: Vec<u64> = read
            .iter()
            .filter(|e| e.partition == partition)
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }
    let mut ids: Vec<&str> = read
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.as_str())
        .collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn following_read_receives_events_published_after_it_started() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    client
        .publish("live", vec![event("before", 10)])
        .await
        .unwrap();
    let mut stream = reader(&server)
        .await
        .read(ReadRequest {
            follow: true,
            ..request("live", earliest())
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the stored event");
    assert_eq!(first.events[0].event.as_ref().unwrap().id, "before");

    client
        .publish("live", vec![event("after-1", 10), event("after-2", 10)])
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let response = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("the follower receives new events")
            .unwrap()
            .expect("the stream stays open");
        ids.extend(response.events.into_iter().map(|e| e.event.unwrap().id));
    }
    assert_eq!(ids, ["after-1", "after-2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_of_an_unknown_topic_is_not_found() {
    let (server, _dir) = Herald::start(&[]);
    let status = read_error(&mut reader(&server).await, request("nowhere", earliest())).await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(status.herald_code(), ErrorCode::TopicNotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_of_a_partition_out_of_range_is_invalid_argument() {
    let (server, _dir) = Herald::start(&["--default-partitions", "2"]);
    let client = server.client().await;
    client.publish("two", vec![event("x", 10)]).await.unwrap();
    let status = read_error(
        &mut reader(&server).await,
        ReadRequest {
            partitions: vec![0, 5],
            ..request("two", earliest())
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("0-1"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn following_read_ends_with_unavailable_on_shutdown() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    client
        .publish("tail", vec![event("one", 10)])
        .await
        .unwrap();
    let mut stream = reader(&server)
        .await
        .read(ReadRequest {
            follow: true,
            ..request("tail", earliest())
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the stored event");

    server.signal(libc::SIGTERM);
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the server ends the read during shutdown");
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.herald_code(), ErrorCode::ShuttingDown);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
}
