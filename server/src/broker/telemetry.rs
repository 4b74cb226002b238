//! The broker's spans, per-event debug lines and metric handles, kept
//! apart so the publish and subscription paths read as the semantics they
//! implement.

use ahash::AHashMap;
use bytes::Bytes;

use super::EncodedEvent;
use super::publish::PublishReceipt;
use super::subscription::SubscriptionInfo;
use super::subscription::dispatch::{AckHandle, EventRef};

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

/// The per-event debug lines of a subscription ("event delivered", "event
/// acked", ...) and its deliver/settle spans. The id, type and attempt of
/// each delivered, unfinished event are kept only while debug logging is
/// on, so ack and nack lines can name the event.
#[derive(Default)]
pub(super) struct DeliveryLog {
    delivered: AHashMap<EventRef, (String, String, u32)>,
}

impl DeliveryLog {
    /// When traces are exported or debug logging is on: a `deliver` (or
    /// `redeliver`) span whose parent is the producer's context from the
    /// event's `traceparent`, and the per-event log line. Costs nothing
    /// otherwise (the event is only parsed for these).
    pub(super) fn delivered(
        &mut self,
        info: &SubscriptionInfo,
        payload: &Bytes,
        event: EventRef,
        attempt: u32,
    ) {
        let exporting = crate::telemetry::exporting();
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        if !exporting && !debug {
            return;
        }
        let Ok(parsed) = EncodedEvent::parse(payload.clone()) else {
            return;
        };
        let operation = if attempt > 1 { "redeliver" } else { "deliver" };
        let attributes = parsed.attributes();
        if exporting && crate::telemetry::sample_event(&attributes) {
            let span = tracing::info_span!(
                "herald.deliver",
                otel.name = %format_args!("{operation} {}", info.topic),
                otel.kind = "producer",
                messaging.system = "herald",
                messaging.operation = operation,
                messaging.destination.name = %info.topic,
                messaging.destination.partition.id = event.0,
                messaging.consumer.group.name = %info.name,
                messaging.message.id = %parsed.id(),
                herald.offset = event.1,
                herald.delivery_attempt = attempt,
            );
            crate::telemetry::set_parent(&span, &attributes);
            drop(span.entered());
        }
        if debug {
            tracing::debug!(
                message_id = %parsed.id(),
                topic = %info.topic,
                subscription = %info.name,
                event_type = %parsed.event_type(),
                status = if attempt > 1 { "redelivered" } else { "delivered" },
                attempt,
                partition = event.0,
                offset = event.1,
                "event delivered"
            );
            self.delivered.insert(
                event,
                (
                    parsed.id().to_owned(),
                    parsed.event_type().to_owned(),
                    attempt,
                ),
            );
        }
    }

    /// The per-event debug line of an ack or nack, for events delivered
    /// while debug logging was on.
    pub(super) fn finished(
        &mut self,
        info: &SubscriptionInfo,
        handles: &[String],
        status: &str,
        reason: Option<&str>,
    ) {
        if self.delivered.is_empty() {
            return;
        }
        for handle in handles {
            let Ok(handle) = handle.parse::<AckHandle>() else {
                continue;
            };
            if let Some((id, event_type, attempt)) =
                self.delivered.remove(&(handle.partition, handle.offset))
            {
                tracing::debug!(
                    message_id = %id,
                    topic = %info.topic,
                    subscription = %info.name,
                    event_type = %event_type,
                    status,
                    attempt,
                    reason,
                    "event {status}"
                );
            }
        }
    }

    /// Forgets an event that left the subscription another way (dead-lettered).
    pub(super) fn forget(&mut self, event: EventRef) {
        self.delivered.remove(&event);
    }
}

/// The span of one ack or nack request, when traces are exported.
pub(super) fn settle_span(
    info: &SubscriptionInfo,
    operation: &'static str,
    events: usize,
) -> tracing::Span {
    if !crate::telemetry::sample_root() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "herald.settle",
        otel.name = %format_args!("{operation} {}", info.topic),
        messaging.system = "herald",
        messaging.operation = operation,
        messaging.destination.name = %info.topic,
        messaging.consumer.group.name = %info.name,
        messaging.batch.message_count = events,
        herald.reason = tracing::field::Empty,
    )
}

/// The span of publishing a dead letter, a child of the producer's span.
pub(super) fn dead_letter_span(
    info: &SubscriptionInfo,
    dead: &EncodedEvent,
    attempts: u32,
    reason: &str,
) -> tracing::Span {
    let attributes = dead.attributes();
    if !crate::telemetry::sample_event(&attributes) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "herald.dead_letter",
        otel.name = %format_args!("dead-letter {}", info.topic),
        messaging.system = "herald",
        messaging.operation = "dead_letter",
        messaging.destination.name = %info.topic,
        messaging.consumer.group.name = %info.name,
        messaging.message.id = %dead.id(),
        herald.dead_letter_topic = %info.settings.dead_letter_topic,
        herald.delivery_attempt = attempts,
        herald.reason = %reason,
    );
    crate::telemetry::set_parent(&span, &attributes);
    span
}
