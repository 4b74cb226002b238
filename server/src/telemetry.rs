//! Logs and traces of the `herald` process: `tracing-subscriber` writes
//! logs (human or JSON), and when an OTLP endpoint is configured an
//! OpenTelemetry layer exports the same spans — every RPC and every broker
//! step — to any collector. Broker code only creates `tracing` spans; it
//! asks [`exporting`] before paying for anything only a trace needs
//! (decoding an event's `traceparent`, a span per delivery).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once spans are exported; read on hot paths.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// New traces are started for 1 in this many roots (0: none).
static SAMPLE_EVERY: AtomicU64 = AtomicU64::new(1);

/// Roots seen, for the 1-in-N decision.
static ROOTS: AtomicU64 = AtomicU64::new(0);

/// Whether spans leave the process (an OTLP endpoint is configured), so
/// work done only for traces is worth doing.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether to trace a step with no incoming trace context (a new trace):
/// exporting, and this root is one of the sampled 1 in N. Deciding here,
/// before any span exists, makes unsampled work cost nothing but this
/// check (tracing-opentelemetry would build every span and sample it at
/// the end).
pub fn sample_root() -> bool {
    if !exporting() {
        return false;
    }
    match SAMPLE_EVERY.load(Ordering::Relaxed) {
        0 => false,
        1 => true,
        every => ROOTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(every),
    }
}

/// Whether to trace a step about an event with these attributes: follow
/// the producer's sampling decision from its `traceparent`, or decide as
/// for a root when there is none.
pub fn sample_event(attributes: &std::collections::HashMap<String, String>) -> bool {
    use opentelemetry::trace::TraceContextExt;
    if !exporting() {
        return false;
    }
    if !attributes.contains_key("traceparent") {
        return sample_root();
    }
    let context = herald::trace_context::extract(attributes);
    let span = context.span();
    let parent = span.span_context();
    if parent.is_valid() {
        parent.is_sampled()
    } else {
        sample_root()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, fields flattened.
    Json,
}

/// Logging and tracing settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub log_level: String,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (0.0–1.0; taken as 1 in
    /// round(1/ratio) roots); the producer's decision in its
    /// `traceparent` is always followed.
    pub sample_ratio: f64,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The sample ratio is outside 0.0–1.0.
    #[error("trace sample ratio {0} is not between 0 and 1")]
    SampleRatio(f64),
    /// The OTLP exporter cannot be built.
    #[error("cannot set up the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The configured collector endpoint.
        endpoint: String,
        /// Why the exporter cannot be built.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global tracing subscriber is already installed.
    #[error("a logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// The installed exporter; [`Telemetry::shutdown`] flushes the last spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (blocking; call from a blocking
    /// context while the runtime is still alive).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(error) = provider.shutdown() {
                eprintln!("herald: flushing traces failed: {error}");
            }
        }
    }
}

/// Crates whose own spans would trace the exporter's traffic (and every
/// HTTP/2 frame): never exported.
const QUIET_TARGETS: [&str; 7] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
];

/// Colour codes only for a person at a terminal: never in a file or a pipe,
/// and never when `NO_COLOR` is set to anything (<https://no-color.org>).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: logs always, OTLP export when an
/// endpoint is set. Must run inside the tokio runtime (the exporter's
/// channel lives on it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        return Err(TelemetryError::SampleRatio(config.sample_ratio));
    }
    let env_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs());
    let logs = match config.log_format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }
    .with_filter(env_filter);

    let (provider, otel) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let provider = tracer_provider(endpoint)?;
            let targets = QUIET_TARGETS.iter().fold(
                Targets::new().with_default(LevelFilter::INFO),
                |t, target| t.with_target(*target, LevelFilter::OFF),
            );
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("herald"))
                .with_filter(targets);
            (Some(provider), Some(layer))
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if provider.is_some() {
        let every = if config.sample_ratio <= 0.0 {
            0
        } else {
            (1.0 / config.sample_ratio).round().max(1.0) as u64
        };
        SAMPLE_EVERY.store(every, Ordering::Relaxed);
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

/// An OTLP/gRPC batch exporter with Herald's resource attributes; the
/// standard `OTEL_*` variables (service name, resource attributes,
/// headers, timeouts, batch delays) apply on top. Roots are sampled by
/// [`sample_root`] before their spans exist, so the SDK keeps every root
/// it is given and follows the parent's decision otherwise.
fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()),
    ]);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("herald");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource.build())
        .build())
}

/// Makes the context in `attributes` (`traceparent`/`tracestate`) the
/// parent of `span`; nothing when they are missing or malformed.
pub fn set_parent(span: &tracing::Span, attributes: &std::collections::HashMap<String, String>) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = herald::trace_context::extract(attributes);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_follow_the_producers_sampling_decision() {
        EXPORTING.store(true, Ordering::Relaxed);
        SAMPLE_EVERY.store(0, Ordering::Relaxed);
        let with = |flags: &str| {
            std::collections::HashMap::from([(
                "traceparent".to_owned(),
                format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"),
            )])
        };
        assert!(sample_event(&with("01")), "sampled parent");
        assert!(!sample_event(&with("00")), "unsampled parent");
        assert!(!sample_event(&Default::default()), "root with ratio 0");
        SAMPLE_EVERY.store(4, Ordering::Relaxed);
        let sampled = (0..400).filter(|_| sample_root()).count();
        assert_eq!(sampled, 100);
        SAMPLE_EVERY.store(1, Ordering::Relaxed);
        EXPORTING.store(false, Ordering::Relaxed);
        assert!(!sample_root(), "nothing without export");
    }

    #[test]
    fn a_sample_ratio_outside_zero_to_one_is_refused() {
        let config = TelemetryConfig {
            log_format: LogFormat::Human,
            log_level: "info".into(),
            otlp_endpoint: None,
            sample_ratio: 1.5,
        };
        let error = init(&config).err().expect("refused");
        assert!(error.to_string().contains("1.5"), "{error}");
    }
}
