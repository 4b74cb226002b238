//! Stock gRPC tooling against a real `herald`: grpcurl lists the services
//! through reflection, publishes an event from JSON and reads it back, no
//! .proto files.
//! `scripts/test.sh` installs grpcurl; set GRPCURL to use another binary.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Herald;

fn grpcurl() -> PathBuf {
    if let Ok(path) = std::env::var("GRPCURL") {
        return PathBuf::from(path);
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go/bin")));
    for dir in candidates {
        let path = dir.join("grpcurl");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "grpcurl not found: run scripts/test.sh (it installs grpcurl with `go install`) or set GRPCURL"
    );
}

fn run(args: &[&str]) -> String {
    let output = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn grpcurl_lists_services_publishes_and_reads_an_event() {
    let (server, _dir) = Herald::start(&[]);
    let listed = run(&["-plaintext", &server.addr, "list"]);
    for service in [
        "herald.v1.Admin",
        "herald.v1.Publisher",
        "herald.v1.Subscriber",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{listed}"
        );
    }

    let published = run(&[
        "-plaintext",
        "-d",
        r#"{"topic": "user.signup", "events": [{"id": "evt-1", "source": "/grpcurl", "type": "com.example.user.signed_up", "data": "aGVsbG8="}]}"#,
        &server.addr,
        "herald.v1.Publisher/Publish",
    ]);
    assert!(published.contains("\"id\": \"evt-1\""), "{published}");

    let read = run(&[
        "-plaintext",
        "-d",
        r#"{"topic": "user.signup", "position": {"earliest": {}}}"#,
        &server.addr,
        "herald.v1.Subscriber/Read",
    ]);
    assert!(read.contains("\"id\": \"evt-1\""), "{read}");

    let stats = run(&[
        "-plaintext",
        "-d",
        r#"{"name": "user.signup"}"#,
        &server.addr,
        "herald.v1.Admin/GetTopicStats",
    ]);
    assert!(stats.contains("\"eventCount\": \"1\""), "{stats}");

    let health = run(&["-plaintext", &server.addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
}
