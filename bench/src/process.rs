//! Starts a real `herald serve` process and times it until health reports
//! SERVING, as an operator or orchestrator would see it (used by `bench
//! startup` for cold start and recovery).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A `herald serve` child process that has reported SERVING.
pub(crate) struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From spawn to the first SERVING answer.
    pub ready_after: Duration,
}

/// The address in a JSON log line of `herald serve` announcing it listens.
pub(crate) fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = value.get("message")?.as_str()?;
    if !message.starts_with("herald listening on") {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}

/// Spawns `exe serve --listen 127.0.0.1:0 --data-dir data_dir` and waits
/// (at most `timeout`) until `Health/Check` answers SERVING.
pub(crate) async fn spawn_until_serving(
    exe: &Path,
    data_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<ServerProcess> {
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["--log-format", "json", "--log-level", "info", "serve"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", exe.display()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let wait = async {
        let mut seen = Vec::new();
        let addr = loop {
            match lines.next_line().await? {
                Some(line) => match listening_addr(&line) {
                    Some(addr) => break addr,
                    None => seen.push(line),
                },
                None => anyhow::bail!("herald exited before listening:\n{}", seen.join("\n")),
            }
        };
        // Keep draining its logs so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        wait_serving(addr).await?;
        anyhow::Ok(addr)
    };
    let addr = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("herald not SERVING within {timeout:?}"))??;
    Ok(ServerProcess {
        child,
        addr,
        ready_after: started.elapsed(),
    })
}

/// Polls `Health/Check` (whole server) every millisecond until SERVING.
async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(answer) = health.check(request).await
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl ServerProcess {
    /// Its pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks it to shut down (SIGTERM) and waits; kills it after 30 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "herald exited with {status}");
            }
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("herald did not stop within 30 s after SIGTERM; killed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_the_listening_log_line() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"herald listening on 127.0.0.1:4321","addr":"127.0.0.1:4321","in_memory":false,"target":"herald_server::server"}"#;
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            listening_addr(r#"{"message":"storage open","elapsed_ms":3}"#),
            None
        );
        assert_eq!(listening_addr("not json"), None);
    }
}
