//! Starting, health, reflection and stopping a real `herald` process.

mod common;

use std::time::Duration;

use common::{Herald, event, herald_bin};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(server: &Herald) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_serving_then_not_serving_during_shutdown() {
    let (mut server, _dir) = Herald::start(&["--shutdown-timeout", "2s"]);
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", "herald.v1.Publisher", "herald.v1.Admin"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    server.signal(libc::SIGTERM);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status change during shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "exit 0 after draining; logs:\n{}",
        server.logs()
    );
    assert!(server.logs().contains("shutdown complete"));
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let (server, _dir) = Herald::start(&[]);
    let channel = channel(&server).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("list services response expected")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "herald.v1.Publisher",
        "herald.v1.Admin",
        "herald.v1.Subscriber",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        responses.next().await.unwrap().unwrap().message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_publishes_and_refuses_new_ones() {
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let mut publishes = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        publishes.push(tokio::spawn(async move {
            client
                .publish("drain", vec![event(&format!("d{i}"), 1000)])
                .await
        }));
    }
    server.signal(libc::SIGTERM);
    let mut ok = 0;
    for publish in publishes {
        match publish.await.unwrap() {
            Ok(_) => ok += 1,
            // Refused by the broker (UNAVAILABLE), or never accepted because
            // the connection was already going away (HTTP/2 GOAWAY, the
            // closed connection, or a write to the socket the server had
            // just closed: "broken pipe"; tonic reports these as transport
            // errors): either way not acked, so nothing is promised about it.
            Err(herald_client::ClientError::Status(status)) => {
                let text = format!("{status:?}");
                assert!(
                    status.code() == tonic::Code::Unavailable
                        || text.contains("GoAway")
                        || text.contains("connection closed")
                        || text.contains("broken pipe"),
                    "a publish caught by shutdown is refused, got {status:?}"
                )
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    // Whatever was acknowledged is there after a restart.
    let server = Herald::start_in(&server.data_dir.clone(), &[]);
    if ok > 0 {
        let stats = server
            .client()
            .await
            .admin()
            .get_topic_stats(herald::v1::GetTopicStatsRequest {
                name: "drain".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(stats.event_count >= ok);
    }
}

#[test]
fn unusable_data_dir_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let output = std::process::Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot use data directory"), "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_server_on_a_data_dir_is_refused_naming_the_holder() {
    let (first, dir) = Herald::start(&["--metrics-listen", "off"]);
    let output = std::process::Command::new(herald_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let holder = format!("pid {}, listening on {}", first.child.id(), first.addr);
    assert!(
        stderr.contains("is in use by another Herald server") && stderr.contains(&holder),
        "{stderr}"
    );
    assert!(stderr.contains("--data-dir"), "{stderr}");
    // Said once, and no colour codes in a pipe.
    assert_eq!(stderr.matches("is in use").count(), 1, "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");

    // The first keeps serving, and a kill -9 leaves no stale lock.
    let client = first.client().await;
    let stored = client
        .publish("locked", vec![event("e1", 10)])
        .await
        .unwrap();
    assert_eq!(stored[0].offset, 0);
    let started = std::time::Instant::now();
    let second = first.restart_after_kill();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stored = second
        .client()
        .await
        .publish("locked", vec![event("e2", 10)])
        .await
        .unwrap();
    assert_eq!(stored[0].offset, 1);
}

#[test]
fn read_only_data_dir_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "mounting a read-only tmpfs needs root (CI runs as root)"
    );
    let output = std::process::Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot use data directory"), "{stderr}");
    assert!(stderr.to_lowercase().contains("read-only"), "{stderr}");
}

#[test]
fn bad_config_file_exits_non_zero_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[topic_defaults]\nfsync = \"sometimes\"\n").unwrap();
    let output = std::process::Command::new(herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("topic_defaults.fsync"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_publish_streams_end_with_unavailable_on_shutdown() {
    use herald::StatusExt;
    let (mut server, _dir) = Herald::start(&[]);
    let client = server.client().await;
    let (requests, outbound) = tokio::sync::mpsc::channel(8);
    let mut responses = client
        .publisher()
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(herald::v1::PublishStreamRequest {
            sequence: 7,
            topic: "live".into(),
            events: vec![event("before-shutdown", 10)],
        })
        .await
        .unwrap();
    let answered = responses.message().await.unwrap().expect("an answer");
    assert_eq!(answered.sequence, 7);
    assert_eq!(answered.results.len(), 1);

    server.signal(libc::SIGTERM);
    // The client keeps its side open; the server must still end the stream.
    let ended = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the server ends the stream during shutdown");
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.herald_code(), herald::v1::ErrorCode::ShuttingDown);
    drop(requests);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_soft_open_file_limit_is_raised_so_topics_are_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // Soft 64, hard 4096: under 64 descriptors the server could not hold
    // the 100 topics below.
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=64:4096")
        .arg(herald_bin())
        .args(["serve", "--metrics-listen", "off", "--listen", &listen])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs herald");
    let client = herald_client::Client::builder()
        .endpoint(&listen)
        .wait_for_server(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );
    for i in 0..100 {
        let name = format!("many.{i}");
        client.publish(&name, vec![event("e", 4)]).await.unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bench_topics_reports_what_idle_topics_cost() {
    // A hard open-file limit of 256 (inherited by the server the bench
    // starts): 300 idle topics fit only if partitions do not each hold a
    // descriptor, and they must not each hold a thread either.
    let mut command = std::process::Command::new("prlimit");
    command
        .arg("--nofile=256:256")
        .arg(herald_bin())
        .args(["bench", "topics", "--topics", "300", "--json"]);
    let output = run_to_success(&mut command);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["topics"], 300, "{report}");
    let files = report["idle_open_files"].as_u64().unwrap();
    assert!(files > 0 && files < 150, "{report}");
    let threads = report["idle_threads"].as_u64().unwrap();
    assert!(threads > 0 && threads <= 64, "{report}");
    assert!(report["restart_ms"].as_f64().unwrap() > 0.0, "{report}");
}

#[tokio::test]
async fn bench_publish_takes_host_port_and_deletes_the_topic_it_created() {
    let (server, _dir) = Herald::start(&[]);
    let endpoint = server.addr.trim_start_matches("http://").to_owned();
    let mut command = std::process::Command::new(herald_bin());
    command
        .args(["bench", "publish", "--endpoint", &endpoint])
        .args(["--duration", "1s", "--create-topic-fsync", "none", "--json"]);
    run_to_success(&mut command);
    let mut admin = herald::v1::admin_client::AdminClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let topics = admin
        .list_topics(herald::v1::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert!(topics.is_empty(), "left behind: {topics:?}");
}

/// Runs `command` to completion, failing the test with its stderr unless it
/// exits successfully.
fn run_to_success(command: &mut std::process::Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
