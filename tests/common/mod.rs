//! The end-to-end harness: builds the real `herald` binary once, starts it
//! on a free port with a temp data dir, and stops it gently or with kill -9.
#![allow(dead_code)]

pub mod agent;
pub mod consumer;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herald_client::Client;

/// Path of the `herald` binary, built (incrementally) on first use.
pub fn herald_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("HERALD_BIN") {
            return PathBuf::from(path);
        }
        let build = escargot::CargoBuild::new()
            .package("herald-cli")
            .bin("herald")
            .manifest_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        let build = if cfg!(debug_assertions) {
            build
        } else {
            build.release()
        };
        build
            .run()
            .expect("building the herald binary failed")
            .path()
            .to_path_buf()
    })
    .clone()
}

/// A running `herald serve` process.
pub struct Herald {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// Every stderr line so far (logs), for assertions and failure output.
    pub logs: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
}

impl Herald {
    /// Starts a server with a fresh temp data dir.
    pub fn start(extra_args: &[&str]) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self::start_in(dir.path(), extra_args);
        (server, dir)
    }

    /// Starts a server on `data_dir` (e.g. again after a stop).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::try_start_in(data_dir, extra_args)
            .unwrap_or_else(|logs| panic!("herald did not start:\n{logs}"))
    }

    /// Starts a server, or returns its output if it exits before listening.
    pub fn try_start_in(data_dir: &Path, extra_args: &[&str]) -> Result<Self, String> {
        Self::try_start_with_env(data_dir, extra_args, &[])
    }

    /// Starts a server with a fresh temp data dir and extra environment
    /// (`HERALD_LOG_FORMAT` and `HERALD_LOG_LEVEL` there replace the
    /// harness's human/info logs).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self::try_start_with_env(dir.path(), extra_args, env)
            .unwrap_or_else(|logs| panic!("herald did not start:\n{logs}"));
        (server, dir)
    }

    /// [`Herald::try_start_in`] with extra environment variables.
    pub fn try_start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let lookup = |name: &str, default: &'static str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| default.to_owned())
        };
        let mut child = Command::new(herald_bin())
            .args([
                "--log-format",
                &lookup("HERALD_LOG_FORMAT", "human"),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .env("HERALD_LOG_LEVEL", lookup("HERALD_LOG_LEVEL", "info"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("herald listening on ").nth(1) {
                        // Human and JSON lines alike: the address runs up to
                        // the first character that cannot be in one.
                        let addr: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_hexdigit() || ":.[]".contains(*c))
                            .collect();
                        let _ = addr_tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(logs.lock().unwrap().join("\n"));
            }
        };
        Ok(Self {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            logs,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// `http://addr`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoint())
            .await
            .expect("connect to herald")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "herald did not exit within {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops this process (kill -9) and starts a new one on the same data dir.
    pub fn restart_after_kill(mut self) -> Self {
        self.kill9();
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        Self::start_in(&self.data_dir, &args)
    }

    /// The logs so far, one string.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An event of `size` bytes of data, with `id` (empty: broker-assigned).
pub fn event(id: &str, size: usize) -> herald::v1::Event {
    herald::v1::Event {
        id: id.to_owned(),
        source: "/tests".into(),
        r#type: "test.event".into(),
        data: vec![b'x'; size].into(),
        ..Default::default()
    }
}
