/**
 * W3C trace context through event attributes: producers inject the active
 * OpenTelemetry context (`traceparent`, `tracestate`) into each event's
 * attributes; consumers extract it and run the handler in a processing span
 * (kind CONSUMER) that is its child, so a consumer's trace id equals the
 * producer's.
 *
 * The spans come from the globally registered tracer provider
 * (`@opentelemetry/api`); with none registered they are no-ops, and
 * propagation still passes the producer's context through.
 *
 * @module
 */
import type { Context, Span, TextMapPropagator } from "@opentelemetry/api";
import { ROOT_CONTEXT, SpanKind, context, defaultTextMapGetter, defaultTextMapSetter, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

/** The tracer name of this SDK's spans. */
export const TRACER_NAME = "@herald/sdk";

/** The default propagator: W3C TraceContext. */
export const defaultPropagator: TextMapPropagator = new W3CTraceContextPropagator();

/** @internal Writes `ctx`'s trace context into `attributes` (no-op without a valid span context). */
export function injectContext(propagator: TextMapPropagator, ctx: Context, attributes: Record<string, string>): void {
  propagator.inject(ctx, attributes, defaultTextMapSetter);
}

/** @internal The context carried by an event's attributes (ROOT when none). */
export function extractContext(propagator: TextMapPropagator, attributes: Record<string, string>): Context {
  return propagator.extract(ROOT_CONTEXT, attributes, defaultTextMapGetter);
}

/** @internal Starts the processing span of one delivery as a child of `parent`. */
export function startProcessSpan(
  parent: Context,
  topic: string,
  subscription: string,
  id: string,
  attempt: number,
): { span: Span; context: Context } {
  const span = trace.getTracer(TRACER_NAME).startSpan(
    `process ${topic}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": "herald",
        "messaging.destination.name": topic,
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "messaging.message.id": id,
        "messaging.consumer.group.name": subscription,
        "messaging.herald.delivery_attempt": attempt,
      },
    },
    parent,
  );
  return { span, context: trace.setSpan(parent, span) };
}

/** @internal The active context (for injecting at publish time). */
export function activeContext(): Context {
  return context.active();
}
