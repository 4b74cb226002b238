//! Interop agents (`tests/interop/README.md`) as child processes: every
//! SDK's agent has the same command line and prints JSON Lines, collected
//! here as they come.
//!
//! Languages come from `HERALD_INTEROP_LANGS` (comma-separated, default
//! `rust`); `scripts/test.sh` builds every SDK and sets it to all four.
//! A language named there whose agent is not built fails the test: nothing
//! is skipped silently.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn languages() -> Vec<String> {
    std::env::var("HERALD_INTEROP_LANGS")
        .unwrap_or_else(|_| "rust".into())
        .split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The Rust agent, built once.
fn rust_agent() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        escargot::CargoBuild::new()
            .package("herald-examples")
            .bin("interop")
            .manifest_path(repo().join("Cargo.toml"))
            .run()
            .expect("building the Rust interop agent failed")
            .path()
            .to_path_buf()
    })
    .clone()
}

fn agent_command(lang: &str) -> Command {
    if lang == "rust" {
        return Command::new(rust_agent());
    }
    let script = repo().join("sdks").join(lang).join("interop.sh");
    assert!(
        script.exists(),
        "no interop agent for {lang}: {} is missing (scripts/test.sh builds every SDK first)",
        script.display()
    );
    Command::new(script)
}

/// A running agent whose JSON lines are collected as they come.
pub struct Agent {
    pub lang: String,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    pub fn spawn(lang: &str, args: &[&str]) -> Agent {
        let mut child = agent_command(lang)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {lang} agent: {e}"));
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let (out, collected) = (child.stdout.take().unwrap(), lines.clone());
        let lang_name = lang.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(value) => collected.lock().unwrap().push(value),
                    Err(_) => panic!("{lang_name} agent printed a non-JSON line: {line}"),
                }
            }
        });
        let (err, text) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Agent {
            lang: lang.to_owned(),
            child,
            lines,
            stderr,
        }
    }

    /// Runs to the end; panics with its stderr unless it exits 0 in time.
    pub fn run(lang: &str, args: &[&str], timeout: Duration) -> Vec<Value> {
        let mut agent = Agent::spawn(lang, args);
        let status = agent.wait(timeout);
        assert!(
            status.success(),
            "{lang} agent {args:?} failed ({status}):\n{}",
            agent.stderr()
        );
        // The reader thread may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(50));
        agent.lines()
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} agent did not finish within {timeout:?}:\n{}",
                    self.lang,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("event").is_some())
            .collect()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `pred` holds on the lines printed so far.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.lines()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} agent exited ({status}) before {what}:\n{}",
                    self.lang,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} agent: no {what} within {timeout:?}; printed {:?}\n{}",
                self.lang,
                self.lines(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `SIGSTOP` to freeze it) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
