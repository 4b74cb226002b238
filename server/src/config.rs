//! Server configuration: a TOML file, overridden by environment variables,
//! overridden by flags; every setting has a default that works with no
//! configuration at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::{BrokerConfig, Fsync, TopicSettings};

/// Everything `herald serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Where topics are stored.
    pub data_dir: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    pub in_memory: bool,
    /// How long shutdown waits for open calls and streams before closing them.
    pub shutdown_timeout: Duration,
    /// On shutdown, how long to report NOT_SERVING while still serving, so
    /// health checkers and load balancers move traffic away before calls
    /// are refused.
    pub drain_delay: Duration,
    /// Broker behaviour.
    pub broker: BrokerConfig,
    /// Where Prometheus scrapes `/metrics`. Off in `Default` (in-process
    /// servers: tests, embedding); `herald serve` resolves to
    /// [`DEFAULT_METRICS_LISTEN`] unless told otherwise.
    pub metrics: MetricsListen,
    /// How the server finds peers that vanished or froze.
    pub keepalive: Keepalive,
}

/// Liveness checks on every client connection: an HTTP/2 PING every
/// `interval`, and the connection is closed when one is not answered within
/// `timeout` (TCP keepalive probes, at the same interval, also cover a peer
/// whose machine is gone). A consumer that vanished or froze (SIGSTOP, a
/// VM paused, a cable pulled) is therefore detached, and its partitions
/// and unacked events handed over, within `interval + timeout`: 30 s by
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between PINGs on a connection.
    pub interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The address `herald serve` serves `/metrics` on when nothing is configured
/// (the port OpenTelemetry's Prometheus exporter uses by convention).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// Whether and where `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// No endpoint, no recorder: metric calls in the broker are no-ops.
    Off,
    /// Serve on this address. `required` is false for the built-in default:
    /// a second Herald on the same machine (or any other exporter on 9464)
    /// then only costs a warning, while an address the operator chose that
    /// cannot be bound stops the server at start, like `--listen`.
    On {
        /// The address to serve on.
        addr: SocketAddr,
        /// Whether failing to bind `addr` stops the server; when false it
        /// only logs a warning.
        required: bool,
    },
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    /// `off` or a socket address.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(MetricsListen::Off);
        }
        text.parse()
            .map(|addr| MetricsListen::On {
                addr,
                required: true,
            })
            .map_err(|e| {
                format!("{text:?} is neither \"off\" nor an address such as 127.0.0.1:9464 ({e})")
            })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("herald-data"),
            in_memory: false,
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            broker: BrokerConfig::default(),
            metrics: MetricsListen::Off,
            keepalive: Keepalive::default(),
        }
    }
}

/// The TOML file's shape. Every key is optional.
///
/// ```toml
/// listen = "127.0.0.1:50051"
/// data_dir = "./herald-data"
/// auto_create_topics = true
/// max_request_bytes = 16777216
/// shutdown_timeout = "10s"
/// drain_delay = "0s"
/// retention_check_interval = "1m"
/// metrics_listen = "127.0.0.1:9464"   # or "off"
/// keepalive_interval = "10s"
/// keepalive_timeout = "20s"
///
/// [topic_defaults]
/// partitions = 1
/// fsync = "batch"          # batch | interval | none
/// fsync_interval = "1s"
/// dedup_window = "2m"
/// retention_age = "7days"  # unset: keep forever
/// retention_bytes = 10737418240
/// max_event_bytes = 1048576
/// segment_bytes = 134217728
///
/// [subscriptions]
/// cursor_flush_interval = "100ms"
/// cursor_flush_acks = 1000
/// max_unacked_per_consumer = 10000
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// gRPC listen address; default `127.0.0.1:50051`.
    pub listen: Option<SocketAddr>,
    /// Where topics are stored; default `herald-data`.
    pub data_dir: Option<PathBuf>,
    /// Keep everything in memory (nothing survives a restart); default false.
    pub in_memory: Option<bool>,
    /// Create a topic on its first publish instead of answering NOT_FOUND;
    /// default true.
    pub auto_create_topics: Option<bool>,
    /// Largest request the transport accepts, in bytes (at least 1024);
    /// default 16 MiB.
    pub max_request_bytes: Option<usize>,
    /// How long shutdown waits for open calls and streams, as a duration
    /// (e.g. "10s"); default 10s.
    pub shutdown_timeout: Option<String>,
    /// How long shutdown reports NOT_SERVING while still serving, as a
    /// duration; default 0s.
    pub drain_delay: Option<String>,
    /// How often retention runs over every partition, as a duration;
    /// default 1m.
    pub retention_check_interval: Option<String>,
    /// `/metrics` address, or "off".
    pub metrics_listen: Option<String>,
    /// Time between HTTP/2 PINGs on each connection.
    pub keepalive_interval: Option<String>,
    /// How long a PING may go unanswered.
    pub keepalive_timeout: Option<String>,
    /// The `[topic_defaults]` table.
    #[serde(default)]
    pub topic_defaults: TopicDefaults,
    /// The `[subscriptions]` table.
    #[serde(default)]
    pub subscriptions: SubscriptionSettingsFile,
}

/// `[subscriptions]`: cursor persistence and consumer limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettingsFile {
    /// Persist a changed cursor at least this often (e.g. "100ms").
    pub cursor_flush_interval: Option<String>,
    /// ...or once this many acks piled up.
    pub cursor_flush_acks: Option<u64>,
    /// Most unacked events one consumer may hold.
    pub max_unacked_per_consumer: Option<u64>,
}

/// `[topic_defaults]`: settings of topics created without explicit ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    /// Partitions per topic, 1 to 1024; default 1.
    pub partitions: Option<u32>,
    /// When a publish counts as durable: `batch`, `interval` or `none`;
    /// default `batch`.
    pub fsync: Option<String>,
    /// How often an `interval` topic fsyncs, as a duration; default 1s.
    pub fsync_interval: Option<String>,
    /// How long event ids are remembered for dedup, as a duration (zero
    /// disables dedup); default 2m.
    pub dedup_window: Option<String>,
    /// Delete segments whose newest event is older than this, as a
    /// duration; unset keeps events forever.
    pub retention_age: Option<String>,
    /// Delete a partition's oldest segments while it holds more than this
    /// many bytes; unset means no limit.
    pub retention_bytes: Option<u64>,
    /// Largest accepted encoded event, in bytes; default 1 MiB, lowered to
    /// `max_request_bytes` when that is smaller.
    pub max_event_bytes: Option<u32>,
    /// Segment roll size, in bytes (at least 1 MiB); default 128 MiB.
    pub segment_bytes: Option<u64>,
}

/// Settings given on the command line or in the environment; they win over
/// the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// gRPC listen address (file key `listen`).
    pub listen: Option<SocketAddr>,
    /// Where topics are stored (file key `data_dir`).
    pub data_dir: Option<PathBuf>,
    /// Keep everything in memory (file key `in_memory`).
    pub in_memory: Option<bool>,
    /// Create topics on first publish (file key `auto_create_topics`).
    pub auto_create_topics: Option<bool>,
    /// Largest accepted request, in bytes (file key `max_request_bytes`).
    pub max_request_bytes: Option<usize>,
    /// How long shutdown waits for open calls (file key `shutdown_timeout`).
    pub shutdown_timeout: Option<Duration>,
    /// How long shutdown reports NOT_SERVING first (file key `drain_delay`).
    pub drain_delay: Option<Duration>,
    /// Partitions of topics created without explicit settings (file key
    /// `topic_defaults.partitions`).
    pub default_partitions: Option<u32>,
    /// Fsync policy of topics created without explicit settings (file key
    /// `topic_defaults.fsync`).
    pub default_fsync: Option<Fsync>,
    /// Whether and where `/metrics` is served (file key `metrics_listen`).
    pub metrics_listen: Option<MetricsListen>,
    /// Time between HTTP/2 PINGs on each connection (file key
    /// `keepalive_interval`).
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered (file key `keepalive_timeout`).
    pub keepalive_timeout: Option<Duration>,
}

/// A configuration problem, naming the setting and what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type.
    #[error("config file {path} is not valid: {source}")]
    Parse {
        /// The config file.
        path: String,
        /// The TOML error, naming the key or position.
        #[source]
        source: toml::de::Error,
    },
    /// A setting's value is not accepted.
    #[error("setting {setting}: {reason}")]
    Invalid {
        /// The setting, as its file key (e.g. `topic_defaults.fsync`).
        setting: &'static str,
        /// What is wrong with the value and what is accepted.
        reason: String,
    },
}

fn duration(setting: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
        setting,
        reason: format!(
            "{text:?} is not a duration ({e}); write e.g. \"500ms\", \"10s\", \"7days\""
        ),
    })
}

impl ServerConfig {
    /// Defaults, then the file at `path` (if any), then `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, overrides)
    }

    /// Merges a parsed file with overrides over the defaults.
    pub fn resolve(file: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = ServerConfig::default();
        let d = &file.topic_defaults;
        let t: &mut TopicSettings = &mut c.broker.topic_defaults;
        if let Some(v) = d.partitions {
            t.partitions = v;
        }
        if let Some(v) = &d.fsync {
            t.fsync = v.parse().map_err(|reason| ConfigError::Invalid {
                setting: "topic_defaults.fsync",
                reason,
            })?;
        }
        if let Some(v) = &d.fsync_interval {
            t.fsync_interval = duration("topic_defaults.fsync_interval", v)?;
        }
        if let Some(v) = &d.dedup_window {
            t.dedup_window = duration("topic_defaults.dedup_window", v)?;
        }
        if let Some(v) = &d.retention_age {
            t.retention_age = Some(duration("topic_defaults.retention_age", v)?);
        }
        if let Some(v) = d.retention_bytes {
            t.retention_bytes = Some(v);
        }
        if let Some(v) = d.max_event_bytes {
            t.max_event_bytes = v;
        }
        if let Some(v) = d.segment_bytes {
            t.segment_bytes = v;
        }
        if let Some(v) = o.default_partitions {
            t.partitions = v;
        }
        if let Some(v) = o.default_fsync {
            t.fsync = v;
        }

        c.listen = o.listen.or(file.listen).unwrap_or(c.listen);
        c.data_dir = o.data_dir.clone().or(file.data_dir).unwrap_or(c.data_dir);
        c.in_memory = o.in_memory.or(file.in_memory).unwrap_or(c.in_memory);
        c.broker.auto_create_topics = o
            .auto_create_topics
            .or(file.auto_create_topics)
            .unwrap_or(c.broker.auto_create_topics);
        c.broker.max_request_bytes = o
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(c.broker.max_request_bytes);
        if let Some(v) = &file.shutdown_timeout {
            c.shutdown_timeout = duration("shutdown_timeout", v)?;
        }
        if let Some(v) = o.shutdown_timeout {
            c.shutdown_timeout = v;
        }
        if let Some(v) = &file.drain_delay {
            c.drain_delay = duration("drain_delay", v)?;
        }
        if let Some(v) = o.drain_delay {
            c.drain_delay = v;
        }
        if let Some(v) = &file.retention_check_interval {
            c.broker.retention_check_interval = duration("retention_check_interval", v)?;
        }
        c.metrics = MetricsListen::On {
            addr: DEFAULT_METRICS_LISTEN,
            required: false,
        };
        if let Some(v) = &file.metrics_listen {
            c.metrics = v.parse().map_err(|reason| ConfigError::Invalid {
                setting: "metrics_listen",
                reason,
            })?;
        }
        if let Some(v) = o.metrics_listen {
            c.metrics = v;
        }
        if let Some(v) = &file.keepalive_interval {
            c.keepalive.interval = duration("keepalive_interval", v)?;
        }
        if let Some(v) = o.keepalive_interval {
            c.keepalive.interval = v;
        }
        if let Some(v) = &file.keepalive_timeout {
            c.keepalive.timeout = duration("keepalive_timeout", v)?;
        }
        if let Some(v) = o.keepalive_timeout {
            c.keepalive.timeout = v;
        }
        for (setting, value) in [
            ("keepalive_interval", c.keepalive.interval),
            ("keepalive_timeout", c.keepalive.timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: format!(
                        "{} is too short to tell a slow peer from a dead one; use at least 100ms",
                        humantime::format_duration(value)
                    ),
                });
            }
        }
        // A server with a small request limit should still start with the
        // default event limit: clamp it unless the file set it explicitly.
        if d.max_event_bytes.is_none() {
            let t = &mut c.broker.topic_defaults;
            t.max_event_bytes = t.max_event_bytes.min(c.broker.max_request_bytes as u32);
        }
        let subs = &file.subscriptions;
        let tasks = &mut c.broker.subscription_tasks;
        if let Some(v) = &subs.cursor_flush_interval {
            tasks.cursor_flush_interval = duration("subscriptions.cursor_flush_interval", v)?;
        }
        if let Some(v) = subs.cursor_flush_acks {
            tasks.cursor_flush_acks = v.max(1);
        }
        if let Some(v) = subs.max_unacked_per_consumer {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    setting: "subscriptions.max_unacked_per_consumer",
                    reason: "0 would deliver nothing; use at least 1".into(),
                });
            }
            tasks.max_unacked_per_consumer = v;
        }
        if c.broker.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid {
                setting: "max_request_bytes",
                reason: format!(
                    "{} is too small; use at least 1024",
                    c.broker.max_request_bytes
                ),
            });
        }
        c.broker
            .topic_defaults
            .validate(c.broker.max_request_bytes)
            .map_err(|e| ConfigError::Invalid {
                setting: "topic_defaults",
                reason: e.to_string(),
            })?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_config_gives_working_defaults() {
        let c = ServerConfig::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.data_dir, PathBuf::from("herald-data"));
        assert!(c.broker.auto_create_topics);
        assert_eq!(c.broker.topic_defaults.fsync, Fsync::Batch);
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:6000"
            auto_create_topics = false
            [topic_defaults]
            fsync = "none"
            partitions = 4
            retention_age = "7days"
            "#,
        )
        .unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            default_partitions: Some(2),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file, &overrides).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert!(!c.broker.auto_create_topics);
        assert_eq!(c.broker.topic_defaults.fsync, Fsync::None);
        assert_eq!(c.broker.topic_defaults.partitions, 2);
        assert_eq!(
            c.broker.topic_defaults.retention_age,
            Some(Duration::from_secs(7 * 86400))
        );
    }

    #[test]
    fn drain_delay_comes_from_the_file_or_the_flag() {
        let file = || toml::from_str::<FileConfig>("drain_delay = \"2s\"").unwrap();
        let c = ServerConfig::resolve(file(), &Overrides::default()).unwrap();
        assert_eq!(c.drain_delay, Duration::from_secs(2));
        let flag = Overrides {
            drain_delay: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file(), &flag).unwrap();
        assert_eq!(c.drain_delay, Duration::from_millis(500));
        let bad: FileConfig = toml::from_str("drain_delay = \"soon\"").unwrap();
        let error = ServerConfig::resolve(bad, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("drain_delay"), "{error}");
    }

    #[test]
    fn subscription_settings_come_from_the_file() {
        let file: FileConfig = toml::from_str(
            "[subscriptions]\ncursor_flush_interval = \"250ms\"\ncursor_flush_acks = 10\nmax_unacked_per_consumer = 5",
        )
        .unwrap();
        let c = ServerConfig::resolve(file, &Overrides::default()).unwrap();
        let t = &c.broker.subscription_tasks;
        assert_eq!(t.cursor_flush_interval, Duration::from_millis(250));
        assert_eq!((t.cursor_flush_acks, t.max_unacked_per_consumer), (10, 5));
        let zero: FileConfig =
            toml::from_str("[subscriptions]\nmax_unacked_per_consumer = 0").unwrap();
        assert!(ServerConfig::resolve(zero, &Overrides::default()).is_err());
    }

    #[test]
    fn metrics_listen_defaults_to_9464_and_yields_to_file_env_and_flag() {
        let c = ServerConfig::resolve(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(
            c.metrics,
            MetricsListen::On {
                addr: DEFAULT_METRICS_LISTEN,
                required: false
            }
        );
        let file = || toml::from_str::<FileConfig>("metrics_listen = \"0.0.0.0:9100\"").unwrap();
        let c = ServerConfig::resolve(file(), &Overrides::default()).unwrap();
        assert_eq!(
            c.metrics,
            MetricsListen::On {
                addr: "0.0.0.0:9100".parse().unwrap(),
                required: true
            }
        );
        // The flag (or HERALD_METRICS_LISTEN, which clap folds into it) wins.
        let off = Overrides {
            metrics_listen: Some("OFF".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            ServerConfig::resolve(file(), &off).unwrap().metrics,
            MetricsListen::Off
        );
        let off_in_file: FileConfig = toml::from_str("metrics_listen = \"off\"").unwrap();
        let c = ServerConfig::resolve(off_in_file, &Overrides::default()).unwrap();
        assert_eq!(c.metrics, MetricsListen::Off);
        let bad: FileConfig = toml::from_str("metrics_listen = \"9464\"").unwrap();
        let error = ServerConfig::resolve(bad, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("metrics_listen"), "{error}");
        // In-process servers serve no metrics unless asked.
        assert_eq!(ServerConfig::default().metrics, MetricsListen::Off);
    }

    #[test]
    fn keepalive_defaults_to_10s_and_20s_and_yields_to_file_and_flag() {
        let c = ServerConfig::resolve(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(
            c.keepalive,
            Keepalive {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(20)
            }
        );
        let file = || {
            toml::from_str::<FileConfig>("keepalive_interval = \"5s\"\nkeepalive_timeout = \"7s\"")
                .unwrap()
        };
        let c = ServerConfig::resolve(file(), &Overrides::default()).unwrap();
        assert_eq!(c.keepalive.interval, Duration::from_secs(5));
        assert_eq!(c.keepalive.timeout, Duration::from_secs(7));
        let flag = Overrides {
            keepalive_timeout: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        let c = ServerConfig::resolve(file(), &flag).unwrap();
        assert_eq!(c.keepalive.timeout, Duration::from_secs(3));
        let zero = Overrides {
            keepalive_interval: Some(Duration::ZERO),
            ..Default::default()
        };
        let error = ServerConfig::resolve(FileConfig::default(), &zero).unwrap_err();
        assert!(
            error.to_string().contains("keepalive_interval") && error.to_string().contains("100ms"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<FileConfig>("listn = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let file: FileConfig = toml::from_str("[topic_defaults]\nfsync = \"sometimes\"").unwrap();
        let err = ServerConfig::resolve(file, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("batch, interval or none"), "{err}");
    }
}
