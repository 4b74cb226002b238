"""W3C trace context: inject the current OpenTelemetry context into event
attributes on publish, extract it on consume and process inside a consumer
span that is its child."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["tracing_off", "has_span", "inject", "extract", "tracer"]

_PROPAGATOR = TraceContextTextMapPropagator()

#: The SDK's tracer (a proxy until the application installs a provider).
tracer = trace.get_tracer("herald")


def tracing_off() -> bool:
    """No tracer provider is installed (or a no-op one): spans would not be recorded."""
    provider = trace.get_tracer_provider()
    return isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def has_span() -> bool:
    """Whether a valid span is current (so there is a context to inject)."""
    if not otel_context.get_current():
        return False  # the empty root context: the common case without tracing
    return trace.get_current_span().get_span_context().is_valid


def inject(carrier: MutableMapping[str, str]) -> None:
    """Adds ``traceparent`` (and ``tracestate``) of the current span, if any."""
    if trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(carrier)


def extract(attributes: Mapping[str, str]) -> otel_context.Context | None:
    """The remote context carried in ``attributes``; ``None`` without a
    ``traceparent``."""
    if "traceparent" not in attributes:
        return None
    return _PROPAGATOR.extract(attributes)
