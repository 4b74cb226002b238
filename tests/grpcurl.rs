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

/// grpc-health-probe from `GRPC_HEALTH_PROBE` (scripts/test.sh installs it).
fn health_probe(addr: &str) -> std::process::ExitStatus {
    let probe = std::env::var("GRPC_HEALTH_PROBE").unwrap_or_else(|_| {
        panic!("GRPC_HEALTH_PROBE is not set: run scripts/test.sh (it installs grpc-health-probe with `go install`)")
    });
    Command::new(probe)
        .args([
            &format!("-addr={addr}"),
            "-connect-timeout=2s",
            "-rpc-timeout=2s",
        ])
        .status()
        .expect("run grpc-health-probe")
}

#[test]
fn grpc_health_probe_sees_serving_then_not_serving_while_draining() {
    let (mut server, _dir) = Herald::start(&["--drain-delay", "3s"]);
    let status = health_probe(&server.addr);
    assert!(status.success(), "probe of a running server: {status}");

    server.signal(libc::SIGTERM);
    // The probe exits 4 for NOT_SERVING (2: cannot connect, 3: RPC failed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        let status = health_probe(&server.addr);
        if status.code() == Some(4) {
            last = None;
            break;
        }
        last = Some(status);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        last.is_none(),
        "never NOT_SERVING while draining: {last:?}\n{}",
        server.logs()
    );
    let exit = server.wait_exit(std::time::Duration::from_secs(20));
    assert!(exit.success(), "exit 0 after draining:\n{}", server.logs());
    assert!(
        server
            .logs()
            .contains("reporting NOT_SERVING before draining")
    );
}
