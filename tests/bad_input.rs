//! Every bad input gets a specific status, a message a person can act on and
//! a Herald error code; the server stays up and stored data is untouched.

mod common;

use common::{Herald, event};
use herald::StatusExt;
use herald::v1::*;
use herald_client::Client;

/// Publishes one event to "keep" so each test can check it is untouched.
async fn seed(client: &Client) -> TopicStats {
    client
        .publish("keep", vec![event("seed", 100)])
        .await
        .expect("seed publish");
    stats(client, "keep").await
}

async fn stats(client: &Client, topic: &str) -> TopicStats {
    client
        .admin()
        .get_topic_stats(GetTopicStatsRequest { name: topic.into() })
        .await
        .expect("stats")
        .into_inner()
}

/// The status of a publish that must fail.
async fn publish_error(client: &Client, topic: &str, events: Vec<Event>) -> tonic::Status {
    match client.publish(topic, events).await {
        Err(herald_client::ClientError::Status(status)) => status,
        other => panic!("publish to {topic:?} must fail with a status, got {other:?}"),
    }
}

fn assert_error(status: &tonic::Status, code: tonic::Code, herald_code: ErrorCode, mentions: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.herald_code(), herald_code, "{status:?}");
    assert!(
        status.message().contains(mentions),
        "message {:?} should mention {mentions:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_topic_names_are_refused() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    for name in ["", "..", "a/b", "has space", &"x".repeat(250)] {
        let status = publish_error(&client, name, vec![event("", 1)]).await;
        assert_error(
            &status,
            tonic::Code::InvalidArgument,
            ErrorCode::InvalidTopicName,
            "letters, digits",
        );
    }
    assert_eq!(stats(&client, "keep").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_batch_is_refused() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    let status = publish_error(&client, "keep", vec![]).await;
    assert_error(
        &status,
        tonic::Code::InvalidArgument,
        ErrorCode::EmptyBatch,
        "at least one",
    );
    assert_eq!(stats(&client, "keep").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn event_over_the_topic_limit_is_refused_and_nothing_of_the_batch_is_stored() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    client
        .admin()
        .update_topic(UpdateTopicRequest {
            name: "keep".into(),
            config: Some(TopicConfig {
                max_event_bytes: 1000,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let status = publish_error(
        &client,
        "keep",
        vec![event("small", 10), event("big", 5000)],
    )
    .await;
    assert_error(
        &status,
        tonic::Code::InvalidArgument,
        ErrorCode::EventTooLarge,
        "max_event_bytes",
    );
    assert_eq!(status.herald_detail().unwrap().metadata["index"], "1");
    assert!(
        status.message().contains("event at index 1 (id \"big\")"),
        "{status:?}"
    );
    // Without an id, the message says so rather than quoting "".
    let status = publish_error(&client, "keep", vec![event("", 5000)]).await;
    assert!(
        status.message().contains("event at index 0 (no id)"),
        "{status:?}"
    );
    assert_eq!(stats(&client, "keep").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_over_the_max_message_size_is_resource_exhausted() {
    let (server, _dir) = Herald::start(&["--max-request-bytes", "65536"]);
    let client = server.client().await;
    let before = seed(&client).await;
    let status = publish_error(&client, "keep", vec![event("huge", 100_000)]).await;
    assert_error(
        &status,
        tonic::Code::ResourceExhausted,
        ErrorCode::RequestTooLarge,
        "65536",
    );
    assert!(
        status.message().contains("--max-request-bytes"),
        "{}",
        status.message()
    );
    assert_eq!(stats(&client, "keep").await, before);

    // The same on a pipelined stream: the stream ends with the status.
    let request = PublishStreamRequest {
        sequence: 1,
        topic: "keep".into(),
        events: vec![event("huge", 100_000)],
    };
    let mut responses = client
        .publisher()
        .publish_stream(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let status = match responses.message().await {
        Ok(Some(_)) => panic!("no batch of the oversize request is answered OK"),
        Ok(None) => panic!("the stream must end with an error"),
        Err(status) => status,
    };
    assert_error(
        &status,
        tonic::Code::ResourceExhausted,
        ErrorCode::RequestTooLarge,
        "65536",
    );
    assert_eq!(stats(&client, "keep").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topic_is_not_found_when_auto_create_is_off() {
    let (server, _dir) = Herald::start(&["--auto-create-topics", "false"]);
    let client = server.client().await;
    let status = publish_error(&client, "nope", vec![event("", 1)]).await;
    assert_error(
        &status,
        tonic::Code::NotFound,
        ErrorCode::TopicNotFound,
        "CreateTopic",
    );
    let status = client
        .admin()
        .get_topic(GetTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::NotFound,
        ErrorCode::TopicNotFound,
        "does not exist",
    );
    let listed = client
        .admin()
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.topics.is_empty(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_settings_that_cannot_change_are_refused() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    let mut admin = client.admin();
    let status = admin
        .update_topic(UpdateTopicRequest {
            name: "keep".into(),
            config: Some(TopicConfig {
                partitions: 4,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::FailedPrecondition,
        ErrorCode::PartitionCountChange,
        "per-key order",
    );
    let status = admin
        .update_topic(UpdateTopicRequest {
            name: "keep".into(),
            config: Some(TopicConfig {
                fsync_policy: FsyncPolicy::None as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::FailedPrecondition,
        ErrorCode::ImmutableTopicSetting,
        "fsync_policy",
    );
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "keep".into(),
            config: None,
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::AlreadyExists,
        ErrorCode::TopicAlreadyExists,
        "keep",
    );
    assert_eq!(stats(&client, "keep").await, before);
    let topic = admin
        .get_topic(GetTopicRequest {
            name: "keep".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topic.config.unwrap().partitions, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fsync_policy_and_out_of_range_settings_are_refused() {
    let (server, _dir) = Herald::start(&[]);
    let mut admin = server.client().await.admin();
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            config: Some(TopicConfig {
                fsync_policy: 9,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::InvalidArgument,
        ErrorCode::InvalidTopicConfig,
        "FSYNC_POLICY_BATCH",
    );
    let status = admin
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            config: Some(TopicConfig {
                partitions: 100_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_error(
        &status,
        tonic::Code::InvalidArgument,
        ErrorCode::InvalidTopicConfig,
        "1 to 1024",
    );
    let listed = admin
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.topics.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn overlong_event_id_is_refused() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    let status = publish_error(&client, "keep", vec![event(&"i".repeat(300), 1)]).await;
    assert_error(
        &status,
        tonic::Code::InvalidArgument,
        ErrorCode::InvalidEvent,
        "at most 256",
    );
    assert_eq!(stats(&client, "keep").await, before);
}

/// A generic gRPC client on `server`, ready for calls with any codec.
async fn raw_grpc(server: &Herald) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

/// PublishStream with events given as raw bytes, as a misbehaving
/// producer could send them; answers decoded with the generated type.
async fn raw_publish_stream(
    server: &Herald,
    requests: Vec<herald_server::api::wire::PublishStreamFrame>,
) -> Vec<PublishStreamResponse> {
    let mut grpc = raw_grpc(server).await;
    let codec = tonic_prost::ProstCodec::<
        herald_server::api::wire::PublishStreamFrame,
        PublishStreamResponse,
    >::default();
    let mut answers = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(requests)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/herald.v1.Publisher/PublishStream",
            ),
            codec,
        )
        .await
        .expect("stream opens")
        .into_inner();
    let mut all = Vec::new();
    while let Some(answer) = answers.message().await.expect("stream stays healthy") {
        all.push(answer);
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_event_bytes_refuse_their_request_and_the_stream_goes_on() {
    use herald_server::api::wire::PublishStreamFrame;
    use prost::Message;
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    let good = bytes::Bytes::from(event("", 10).encode_to_vec());
    let cases: [(&[u8], &str); 3] = [
        // `type` (field 3) that is not UTF-8
        (&[0x1a, 0x02, 0xff, 0xfe], "field 3 (type) is not UTF-8"),
        // `id` (field 1) sent as a varint
        (&[0x08, 0x01], "field 1 (id) has wire type Varint"),
        // `data` (field 10) claiming more bytes than the event has
        (&[0x52, 0x09, b'x'], "claims 9 bytes"),
    ];
    let mut requests: Vec<PublishStreamFrame> = cases
        .iter()
        .enumerate()
        .map(|(i, (bad, _))| PublishStreamFrame {
            sequence: i as u64,
            topic: "keep".into(),
            events: vec![good.clone(), bytes::Bytes::from_static(bad)],
        })
        .collect();
    requests.push(PublishStreamFrame {
        sequence: 99,
        topic: "keep".into(),
        events: vec![good.clone()],
    });
    let answers = raw_publish_stream(&server, requests).await;
    assert_eq!(answers.len(), cases.len() + 1, "{answers:?}");
    for (answer, (_, mentions)) in answers.iter().zip(cases) {
        let error = answer.error.as_ref().expect("refused");
        assert_eq!(
            error.grpc_code,
            tonic::Code::InvalidArgument as i32,
            "{error:?}"
        );
        assert_eq!(error.code, ErrorCode::InvalidEvent as i32, "{error:?}");
        assert!(
            error.message.contains("event at index 1 is invalid")
                && error.message.contains(mentions),
            "{:?} should name the event and mention {mentions:?}",
            error.message
        );
        assert!(answer.results.is_empty());
    }
    // The stream went on: the last request was stored, and only it.
    let last = answers.last().unwrap();
    assert_eq!((last.sequence, last.error.as_ref()), (99, None));
    assert_eq!(last.results.len(), 1);
    assert_eq!(
        stats(&client, "keep").await.event_count,
        before.event_count + 1
    );
}

/// A tmpfs of `size` mounted for the test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str, options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}{options}"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill the disk and needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_is_resource_exhausted_and_keeps_acked_events() {
    let disk = Tmpfs::mount("2m", "");
    let server = Herald::start_in(disk.0.path(), &[]);
    let client = server.client().await;
    let mut acked = 0u64;
    let status = loop {
        match client
            .publish("fill", (0..10).map(|_| event("", 10_000)).collect())
            .await
        {
            Ok(results) => acked += results.len() as u64,
            Err(herald_client::ClientError::Status(status)) => break status,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(acked < 100_000, "the 2 MiB disk never filled");
    };
    assert_error(
        &status,
        tonic::Code::ResourceExhausted,
        ErrorCode::StorageFull,
        "free space",
    );
    // The server stays up and keeps what it acknowledged.
    let after = stats(&client, "fill").await;
    assert_eq!(after.event_count, acked);
    // Smaller publishes that fit still fail cleanly or succeed; none corrupts.
    let _ = client.publish("fill", vec![event("", 10)]).await;
    drop(client);
    let server = server.restart_after_kill();
    let restarted = stats(&server.client().await, "fill").await;
    assert!(
        restarted.event_count >= acked,
        "acked events survive: {} < {acked}",
        restarted.event_count
    );
    drop(server);
}

/// The health status of `service` ("" for the whole server).
async fn health_of(server: &Herald, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_that_cannot_write_is_not_serving_until_it_can_again() {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let disk = Tmpfs::mount("2m", "");
    let server = Herald::start_in(disk.0.path(), &[]);
    let client = server.client().await;
    assert_eq!(health_of(&server, "").await, Serving as i32);
    loop {
        match client
            .publish("fill", (0..10).map(|_| event("", 10_000)).collect())
            .await
        {
            Ok(_) => {}
            Err(herald_client::ClientError::Status(status)) => {
                assert_eq!(status.herald_code(), ErrorCode::StorageFull);
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // Health checkers and load balancers see a broker that cannot take
    // publishes; reading and administering still work.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while health_of(&server, "").await != NotServing as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "still SERVING with a full disk"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        health_of(&server, "herald.v1.Publisher").await,
        NotServing as i32
    );
    assert_eq!(
        health_of(&server, "herald.v1.Subscriber").await,
        Serving as i32
    );
    assert_eq!(health_of(&server, "herald.v1.Admin").await, Serving as i32);
    assert!(
        server
            .logs()
            .contains("storage cannot write: reporting NOT_SERVING"),
        "{}",
        server.logs()
    );

    // Deleting the topic frees the space: the server serves again.
    client
        .admin()
        .delete_topic(DeleteTopicRequest {
            name: "fill".into(),
        })
        .await
        .expect("delete");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while health_of(&server, "").await != Serving as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "not SERVING after space was freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client
        .publish("after", vec![event("", 100)])
        .await
        .expect("publishing works again");
    assert_eq!(
        health_of(&server, "herald.v1.Publisher").await,
        Serving as i32
    );
}

/// Field 2 sent as a varint: every request type below expects a message or
/// a string there, so the bytes do not decode. With only `attach` set it is
/// a valid `SubscribeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(message, optional, tag = "1")]
    attach: Option<Attach>,
    #[prost(uint64, optional, tag = "2")]
    bad: Option<u64>,
}

/// Any response, fields ignored.
#[derive(Clone, PartialEq, prost::Message)]
struct AnyMessage {}

/// Sends `messages` on `path` as a stream (the framing of every call type)
/// and returns how many responses came before the status that ended it.
async fn garbage_call(
    server: &Herald,
    path: &'static str,
    messages: Vec<Garbage>,
) -> (usize, tonic::Status) {
    use tokio_stream::StreamExt;
    let mut grpc = raw_grpc(server).await;
    // Held open after the messages, so a server that ignored them would
    // leave the call hanging rather than end it cleanly.
    let requests = tokio_stream::iter(messages).chain(tokio_stream::pending());
    let codec = tonic_prost::ProstCodec::<Garbage, AnyMessage>::default();
    let call = grpc.streaming(
        tonic::Request::new(requests),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    );
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut stream = match call.await {
            Ok(response) => response.into_inner(),
            Err(status) => return (0, status),
        };
        let mut responses = 0;
        loop {
            match stream.message().await {
                Ok(Some(_)) => responses += 1,
                Ok(None) => return (responses, tonic::Status::ok("stream ended with OK")),
                Err(status) => return (responses, status),
            }
        }
    });
    outcome
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer to undecodable bytes within 10 s"))
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_requests_are_invalid_argument_on_every_rpc() {
    let (server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let before = seed(&client).await;
    let garbage = Garbage {
        attach: None,
        bad: Some(1),
    };
    let attach = Garbage {
        attach: Some(Attach {
            topic: "keep".into(),
            subscription: "s".into(),
            consumer_name: "c".into(),
            r#type: SubscriptionType::Shared as i32,
            ..Default::default()
        }),
        bad: None,
    };
    let cases: [(&'static str, Vec<Garbage>, usize); 6] = [
        ("/herald.v1.Publisher/Publish", vec![garbage.clone()], 0),
        (
            "/herald.v1.Publisher/PublishStream",
            vec![garbage.clone()],
            0,
        ),
        ("/herald.v1.Subscriber/Subscribe", vec![garbage.clone()], 0),
        // Attached comes first; the broken second message ends the stream.
        (
            "/herald.v1.Subscriber/Subscribe",
            vec![attach, garbage.clone()],
            1,
        ),
        ("/herald.v1.Subscriber/Read", vec![garbage.clone()], 0),
        ("/herald.v1.Admin/CreateTopic", vec![garbage.clone()], 0),
    ];
    for (path, messages, answered) in cases {
        let (responses, status) = garbage_call(&server, path, messages).await;
        assert_eq!(responses, answered, "{path}: {status:?}");
        assert_error(
            &status,
            tonic::Code::InvalidArgument,
            ErrorCode::InvalidRequest,
            "not a valid Herald message",
        );
        assert!(
            status.message().contains("proto/herald/v1"),
            "{path}: {status:?}"
        );
    }
    assert_eq!(stats(&client, "keep").await, before);
}
