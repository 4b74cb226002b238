//! W3C trace context in event attributes, shared by the client and the
//! broker: producers write the current OpenTelemetry context into an
//! event's `traceparent`/`tracestate` attributes (the CloudEvents
//! distributed-tracing extension, carried unchanged across hops), and the
//! broker's publish and delivery spans and the consumers' processing spans
//! take it as their parent, so one trace goes from the publishing request
//! to the processing of the event.
//!
//! The format is always W3C Trace Context, whatever global propagator the
//! application set: the attribute names are fixed by the CloudEvents
//! extension, and every Herald SDK reads them the same way.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current trace context as `traceparent` (and `tracestate` when not
/// empty) attribute pairs; empty when there is no sampled-or-not valid span
/// context. The current `tracing` span wins when it is exported through
/// `tracing-opentelemetry`; otherwise the current OpenTelemetry context.
pub fn current_trace_context() -> Vec<(&'static str, String)> {
    let mut context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        context = opentelemetry::Context::current();
        if !context.span().span_context().is_valid() {
            return Vec::new();
        }
    }
    inject(&context)
}

/// `context` as `traceparent` (and `tracestate`) attribute pairs; empty
/// when it holds no valid span context.
pub fn inject(context: &opentelemetry::Context) -> Vec<(&'static str, String)> {
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.0
}

/// The OpenTelemetry context the event's `traceparent`/`tracestate`
/// describe (an empty context when they are missing or malformed).
pub fn extract(attributes: &HashMap<String, String>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Attributes(attributes))
}

/// Collects the injected headers.
#[derive(Default)]
struct Carrier(Vec<(&'static str, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((key, value));
        }
    }
}

/// An event's attributes, read as a propagation carrier.
struct Attributes<'a>(&'a HashMap<String, String>);

impl Extractor for Attributes<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        Span, SpanContext, SpanId, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[test]
    fn no_span_means_no_attributes() {
        assert!(current_trace_context().is_empty());
    }

    #[test]
    fn current_opentelemetry_span_is_injected_and_extracted_back() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let span = tracer.start("publish");
        let expected = span.span_context().clone();
        let _guard = opentelemetry::Context::current_with_span(span).attach();

        let attributes: HashMap<String, String> = current_trace_context()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let traceparent = &attributes["traceparent"];
        assert_eq!(
            traceparent,
            &format!("00-{}-{}-01", expected.trace_id(), expected.span_id())
        );
        let back = extract(&attributes);
        assert_eq!(back.span().span_context().trace_id(), expected.trace_id());
        assert_eq!(back.span().span_context().span_id(), expected.span_id());
        assert!(back.span().span_context().is_remote());
    }

    #[test]
    fn tracestate_is_carried_when_present() {
        let context = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "x1")]).unwrap(),
        );
        let _guard = opentelemetry::Context::new()
            .with_remote_span_context(context)
            .attach();
        let attributes = current_trace_context();
        assert_eq!(
            attributes,
            [
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()
                ),
                ("tracestate", "vendor=x1".to_owned())
            ]
        );
    }

    #[test]
    fn malformed_traceparent_extracts_to_nothing() {
        let attributes = HashMap::from([("traceparent".to_owned(), "garbage".to_owned())]);
        assert!(!extract(&attributes).span().span_context().is_valid());
    }
}
