//! The broker's spans and metric handles, kept apart so the publish and
//! subscription paths read as the semantics they implement.

use super::EncodedEvent;
use super::publish::PublishReceipt;

/// Most producer contexts linked from one publish span besides its parent.
const MAX_PUBLISH_LINKS: usize = 64;

/// The span of one publish (a batch), when traces are exported: a child of
/// the producer's span from the first event's `traceparent` (the
/// CloudEvents distributed-tracing extension), linked to the other
/// producers' spans when a batch mixes several.
pub(super) fn publish_span(
    topic: &str,
    events: &[EncodedEvent],
    receipts: &[PublishReceipt],
) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let mut traced = events.iter().filter(|e| e.traced()).map(|e| e.attributes());
    let first = traced.next();
    let sampled = match &first {
        Some(attributes) => crate::telemetry::sample_event(attributes),
        None => crate::telemetry::sample_root(),
    };
    if !sampled {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "herald.publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "herald",
        messaging.operation = "publish",
        messaging.destination.name = %topic,
        messaging.batch.message_count = events.len(),
        messaging.message.id = tracing::field::Empty,
    );
    if let [only] = receipts {
        span.record("messaging.message.id", only.id.as_str());
    }
    if let Some(first) = first {
        crate::telemetry::set_parent(&span, &first);
        let parent = herald::trace_context::extract(&first);
        let parent_trace = parent.span().span_context().trace_id();
        for attributes in traced.take(MAX_PUBLISH_LINKS) {
            let context = herald::trace_context::extract(&attributes);
            let linked = context.span().span_context().clone();
            if linked.is_valid() && linked.trace_id() != parent_trace {
                span.add_link(linked);
            }
        }
    }
    span
}

/// A topic's publish metrics, registered once when it opens so a publish
/// costs a few atomic adds (no-ops when no recorder is installed).
#[derive(Clone)]
pub(super) struct TopicMetrics {
    pub(super) events: metrics::Counter,
    pub(super) bytes: metrics::Counter,
    pub(super) latency: metrics::Histogram,
}

impl TopicMetrics {
    pub(super) fn register(topic: &str) -> Self {
        use crate::metrics::names;
        let labels = [("topic", topic.to_owned())];
        Self {
            events: metrics::counter!(names::PUBLISHED_EVENTS, &labels),
            bytes: metrics::counter!(names::PUBLISHED_BYTES, &labels),
            latency: metrics::histogram!(names::PUBLISH_DURATION, &labels),
        }
    }
}
