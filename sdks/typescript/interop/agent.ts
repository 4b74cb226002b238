/**
 * The TypeScript interop agent (tests/interop/README.md): produce, consume
 * and bad-input against a real broker through the SDK's typed API for
 * herald.interop.v1.InteropEvent. JSON Lines on stdout, logs on stderr.
 */
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { HeraldClient, HeraldError, type SubscriptionKind } from "@herald/sdk";
import { Colour, InteropEventSchema } from "../gen/herald/interop/v1/interop_pb.js";
import { InteropEventEvent, newInteropEventProducer, subscribeInteropEvent } from "../gen/herald/interop/v1/interop_herald.js";

const LANG = "typescript";
/** 2026-01-01T00:00:00Z */
const BASE_SECONDS = 1_767_225_600n;
const U64_MAX = 18_446_744_073_709_551_615n;

class UsageError extends Error {}

function out(line: unknown): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function fatal(reason: string): never {
  process.stderr.write(`interop agent (typescript): ${reason.replace(/\n/g, " ")}\n`);
  process.exit(1);
}

/** A real tracer provider (no exporter) with async context, so spans have ids and the SDK injects them. */
function setUpTracing(): void {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(new BasicTracerProvider());
}

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== "string" || value === "") {
    throw new UsageError(`--${name} is required`);
  }
  return value;
}

function integer(values: Record<string, unknown>, name: string, fallback?: number): number {
  const value = values[name];
  if (value === undefined) {
    if (fallback === undefined) {
      throw new UsageError(`--${name} is required`);
    }
    return fallback;
  }
  const n = Number(value);
  if (!Number.isInteger(n)) {
    throw new UsageError(`--${name} must be an integer, not ${JSON.stringify(value)}`);
  }
  return n;
}

/** The event for `seq`, built exactly as the contract says. */
export function interopEvent(runId: string, seq: number, poisonSeq: number | undefined): MessageInitShape<typeof InteropEventSchema> {
  return {
    runId,
    seq: BigInt(seq),
    producerLang: LANG,
    key: `k${seq % 4}`,
    text: `héllo wörld ✓ ${seq}`,
    blob: new Uint8Array([seq % 256, (seq + 1) % 256, 0, 255]),
    amount: seq * 1.5,
    tags: [LANG, `seq-${seq}`],
    labels: { run: runId, lang: LANG },
    nested: { name: `n${seq}`, value: BigInt(-seq) },
    occurredAt: { seconds: BASE_SECONDS + BigInt(seq), nanos: 0 },
    colour: seq % 2 === 0 ? Colour.GREEN : Colour.RED,
    big: U64_MAX - BigInt(seq),
    poison: poisonSeq !== undefined && seq === poisonSeq,
  };
}

async function produce(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      endpoint: { type: "string" },
      topic: { type: "string" },
      "run-id": { type: "string" },
      count: { type: "string" },
      "lang-tag": { type: "string" },
      "poison-seq": { type: "string" },
    },
  });
  const endpoint = required(values, "endpoint");
  const topic = required(values, "topic");
  const runId = required(values, "run-id");
  const count = integer(values, "count");
  const poisonSeq = values["poison-seq"] === undefined ? undefined : integer(values, "poison-seq");
  setUpTracing();
  const tracer = trace.getTracer("herald-interop-agent");
  const client = await HeraldClient.connect({ endpoint });
  const producer = newInteropEventProducer(client, { topic });
  const published: Promise<void>[] = [];
  for (let seq = 0; seq < count; seq++) {
    published.push(
      tracer.startActiveSpan(`produce ${seq}`, (span) => {
        const traceId = span.spanContext().traceId;
        const receipt = producer.publish(interopEvent(runId, seq, poisonSeq), {
          attributes: { "interop-producer": LANG },
        });
        span.end();
        return receipt.then((r) =>
          out({ seq, partition: r.partition, offset: Number(r.offset), trace_id: traceId, id: r.id }),
        );
      }),
    );
  }
  await Promise.all(published);
  await client.close();
}

async function consume(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      endpoint: { type: "string" },
      topic: { type: "string" },
      subscription: { type: "string" },
      type: { type: "string" },
      count: { type: "string" },
      "consumer-name": { type: "string" },
      priority: { type: "string" },
      position: { type: "string" },
      "timeout-s": { type: "string" },
      "delay-ms": { type: "string" },
      "fail-poison": { type: "boolean" },
      "max-attempts": { type: "string" },
      "dead-letter-topic": { type: "string" },
      "exit-after": { type: "string" },
    },
  });
  const endpoint = required(values, "endpoint");
  const topic = required(values, "topic");
  const subscription = required(values, "subscription");
  const type = required(values, "type");
  if (!["exclusive", "shared", "failover", "key_shared"].includes(type)) {
    throw new UsageError(`--type must be exclusive, shared, failover or key_shared, not ${type}`);
  }
  const count = integer(values, "count");
  const position = values.position ?? "earliest";
  if (position !== "earliest" && position !== "latest") {
    throw new UsageError(`--position must be earliest or latest, not ${position}`);
  }
  const timeoutS = integer(values, "timeout-s", 60);
  const delayMs = integer(values, "delay-ms", 0);
  const exitAfter = values["exit-after"] === undefined ? undefined : integer(values, "exit-after");
  const maxAttempts = values["max-attempts"] === undefined ? undefined : integer(values, "max-attempts");
  const failPoison = values["fail-poison"] === true;

  setUpTracing();
  const client = await HeraldClient.connect({ endpoint });
  let role: boolean | undefined;
  const consumer = await subscribeInteropEvent(client, {
    topic,
    subscription,
    type: type as SubscriptionKind,
    consumerName: values["consumer-name"],
    priority: values.priority === undefined ? undefined : integer(values, "priority"),
    position,
    redelivery:
      maxAttempts === undefined && values["dead-letter-topic"] === undefined
        ? undefined
        : { maxAttempts: maxAttempts ?? 0, deadLetterTopic: values["dead-letter-topic"], minBackoffMs: 100 },
    onActiveStatus: (state) => {
      if (state.active !== role) {
        role = state.active;
        out({ role: state.active ? "active" : "standby" });
      }
    },
  });
  const consumerName = consumer.attached?.consumerName ?? values["consumer-name"] ?? "";
  if (count <= 0) {
    await client.close();
    return;
  }
  const done = new AbortController();
  const seen = new Set<bigint>();
  let printed = 0;
  const timer = setTimeout(() => {
    fatal(`timed out after ${timeoutS} s with ${seen.size} of ${count} events acked`);
  }, timeoutS * 1000);

  await consumer.run(
    async (env) => {
      out({
        event: toJson(InteropEventSchema, env.value),
        id: env.id,
        type: env.type,
        source: env.source,
        data_schema: env.dataSchema,
        key: env.key,
        attributes: env.attributes,
        trace_id: env.span.spanContext().traceId,
        partition: env.partition,
        offset: Number(env.offset),
        attempt: env.deliveryAttempt,
        consumer: consumerName,
      });
      printed++;
      if (exitAfter !== undefined && printed >= exitAfter) {
        process.exit(0); // a crash: nothing acked, nothing flushed
      }
      if (delayMs > 0) {
        await new Promise((r) => setTimeout(r, delayMs));
      }
      if (failPoison && env.value.poison) {
        throw new Error(`poison event ${env.value.seq}`);
      }
      env.ack();
      seen.add(env.value.seq);
      if (seen.size >= count) {
        done.abort();
      }
    },
    { signal: done.signal },
  );
  clearTimeout(timer);
  if (seen.size < count) {
    fatal(`the subscription ended after ${seen.size} of ${count} events`);
  }
  await client.close();
}

async function badInput(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      endpoint: { type: "string" },
      case: { type: "string" },
      topic: { type: "string" },
    },
  });
  const endpoint = required(values, "endpoint");
  const topic = required(values, "topic");
  const which = required(values, "case");
  const client = await HeraldClient.connect({ endpoint });
  let attempt: Promise<unknown>;
  switch (which) {
    case "unknown-topic":
      attempt = newInteropEventProducer(client, { topic }).publish(interopEvent("bad-input", 0, undefined));
      break;
    case "oversize":
      attempt = newInteropEventProducer(client, { topic }).publish({
        ...interopEvent("bad-input", 0, undefined),
        text: "x".repeat(2 * 1024 * 1024),
      });
      break;
    case "wrong-type":
      attempt = client.subscribe(InteropEventEvent, { topic, subscription: "interop-shared", type: "exclusive" });
      break;
    default:
      throw new UsageError(`--case must be unknown-topic, oversize or wrong-type, not ${which}`);
  }
  try {
    await attempt;
  } catch (error) {
    if (!(error instanceof HeraldError)) {
      throw error;
    }
    out({ case: which, error_code: error.codeName, grpc_code: error.grpcCode, message: error.message });
    process.exit(0);
  }
  fatal(`case ${which}: the call succeeded`);
}

async function main(): Promise<void> {
  const [command, ...args] = process.argv.slice(2);
  switch (command) {
    case "produce":
      await produce(args);
      break;
    case "consume":
      await consume(args);
      break;
    case "bad-input":
      await badInput(args);
      break;
    default:
      throw new UsageError("usage: interop.sh produce|consume|bad-input --endpoint URL --topic T ...");
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => fatal(error instanceof Error ? error.message : String(error)),
);
