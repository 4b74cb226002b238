/**
 * The SDK against a real broker ($HERALD_BIN): typed round trip, trace
 * context, redelivery and dead-lettering, decode failures, handler
 * exceptions, typed errors, failover status, re-attach after a restart.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { SpanKind, context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import {
  type ActiveState,
  type Consumer,
  type Envelope,
  ErrorCode,
  GrpcCode,
  HeraldClient,
  HeraldError,
  defineEvent,
  reconnectDelay,
} from "@herald/sdk";
import { UserSignedUpSchema, type UserSignedUp } from "../gen/acme/signup/v1/signup_pb.js";
import { UserSignedUpEvent, newUserSignedUpProducer, subscribeUserSignedUp } from "../gen/acme/signup/v1/signup_herald.js";
import { HeraldServer, catchError } from "./herald.js";
import { EventSchema } from "../src/gen/herald/v1/event_pb.js";
import { fromBinary } from "@bufbuild/protobuf";
import { decodeDelivered, encodeEvent } from "../src/wire.js";
import { RequestQueue } from "../src/queue.js";
import { DeliveredEventSchema } from "../src/gen/herald/v1/subscriber_pb.js";

const spans = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
const tracer = trace.getTracer("sdk-test");

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

let server: HeraldServer;
let client: HeraldClient;
let topicCounter = 0;
/** A fresh topic per test. */
function freshTopic(label: string): string {
  return `ts.${label}.${process.pid}.${++topicCounter}`;
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `consumer` in the background; returns what it saw and a stop function. */
function runInBackground(
  consumer: Consumer<UserSignedUp>,
  handler: (env: Envelope<UserSignedUp>) => Promise<void> | void = () => {},
) {
  const seen: Envelope<UserSignedUp>[] = [];
  const stop = new AbortController();
  const done = consumer.run(
    async (env) => {
      seen.push(env);
      await handler(env);
    },
    { signal: stop.signal },
  );
  return {
    seen,
    async stop() {
      stop.abort();
      await done;
    },
  };
}

before(async () => {
  server = await HeraldServer.start();
  client = await HeraldClient.connect({ endpoint: server.endpoint, logger: quiet });
});

after(async () => {
  await client?.close();
  await server?.stop();
});

describe("typed round trip", () => {
  test("publish and consume UserSignedUp with every envelope field", async () => {
    const topic = freshTopic("roundtrip");
    const producer = newUserSignedUpProducer(client, { topic });
    const signedUpAt = new Date("2026-03-04T05:06:07.089Z");
    const before = Date.now();
    const receipts = await Promise.all(
      ["u1", "u2", "u3"].map((userId) =>
        producer.publish({ userId, email: `${userId}@example.com`, signedUpAt: timestampFromDate(signedUpAt) }),
      ),
    );
    const batch = await producer.publishBatch([
      create(UserSignedUpSchema, { userId: "u4" }),
      { userId: "u5", email: "five@example.com" },
    ]);
    assert.deepEqual(
      [...receipts, ...batch].map((r) => [r.partition, r.offset, r.duplicate]),
      [0n, 1n, 2n, 3n, 4n].map((o) => [0, o, false]),
    );
    for (const r of [...receipts, ...batch]) {
      assert.match(r.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "UUIDv7 id");
      assert.ok(r.publishTime instanceof Date);
    }
    await producer.close();

    const consumer = await subscribeUserSignedUp(client, {
      topic,
      subscription: "roundtrip",
      type: "exclusive",
      position: "earliest",
    });
    const got: Envelope<UserSignedUp>[] = [];
    for await (const env of consumer) {
      got.push(env);
      env.ack();
      if (got.length === 5) {
        break;
      }
    }
    assert.deepEqual(
      got.map((e) => [e.value.userId, e.key, e.offset]),
      [
        ["u1", "u1", 0n],
        ["u2", "u2", 1n],
        ["u3", "u3", 2n],
        ["u4", "u4", 3n],
        ["u5", "u5", 4n],
      ],
    );
    const first = got[0]!;
    const value: UserSignedUp = first.value; // inferred, no cast
    assert.equal(value.email, "u1@example.com");
    assert.equal(value.signedUpAt?.seconds, BigInt(Math.floor(signedUpAt.getTime() / 1000)));
    assert.equal(value.signedUpAt?.nanos, 89_000_000);
    assert.equal(first.id, receipts[0]!.id);
    assert.equal(first.type, "com.example.user.signed_up");
    assert.equal(first.source, "/services/signup");
    assert.equal(first.dataSchema, "acme.signup.v1.UserSignedUp");
    assert.equal(first.dataContentType, "application/protobuf");
    assert.equal(first.topic, topic);
    assert.equal(first.partition, 0);
    assert.equal(first.deliveryAttempt, 1);
    assert.ok(first.time !== undefined && first.time.getTime() >= before - 1000 && first.time.getTime() <= Date.now());
    assert.ok(first.publishTime instanceof Date);
    assert.equal(first.settled, true);
  });

  test("a bounded queue makes publishes wait for room and keeps their order", async () => {
    const topic = freshTopic("bounded");
    const producer = newUserSignedUpProducer(client, { topic, maxBatch: 10, maxQueued: 10, maxInFlight: 1 });
    const receipts = await Promise.all(Array.from({ length: 200 }, (_, i) => producer.publish({ userId: `u${i}` })));
    assert.deepEqual(
      receipts.map((r) => r.offset),
      Array.from({ length: 200 }, (_, i) => BigInt(i)),
    );
    assert.ok(producer.stats().requests >= 20, `${producer.stats().requests} requests of at most 10 events`);
    await producer.close();
  });

  test("publish options set subject, id, key and source; a repeated id is a duplicate", async () => {
    const topic = freshTopic("options");
    const producer = client.producer(UserSignedUpEvent, { topic, source: "/tests/options" });
    const r1 = await producer.publish({ userId: "u1" }, { id: "fixed-id", subject: "users/u1", key: "custom-key" });
    const r2 = await producer.publish({ userId: "u1" }, { id: "fixed-id" });
    assert.equal(r1.id, "fixed-id");
    assert.equal(r2.duplicate, true);
    assert.equal(r2.offset, r1.offset);
    const consumer = await client.subscribe(UserSignedUpEvent, { topic, subscription: "s", position: "earliest" });
    const { value: env } = await consumer[Symbol.asyncIterator]().next();
    assert.ok(env !== undefined);
    assert.equal(env.subject, "users/u1");
    assert.equal(env.key, "custom-key");
    assert.equal(env.source, "/tests/options");
    env.ack();
    await consumer.close();
    await producer.close();
  });
});

describe("read", () => {
  test("reads a topic from a position without a subscription", async () => {
    const topic = freshTopic("read");
    await newUserSignedUpProducer(client, { topic }).publishBatch([{ userId: "a" }, { userId: "b" }, { userId: "c" }]);
    const all: string[] = [];
    for await (const r of client.read(UserSignedUpEvent, { topic })) {
      all.push(`${r.offset}:${r.value.userId}:${r.key}`);
    }
    assert.deepEqual(all, ["0:a:a", "1:b:b", "2:c:c"]);
    const tail: string[] = [];
    for await (const r of client.read(UserSignedUpEvent, { topic, position: { offsets: { 0: 1 } }, maxEvents: 1 })) {
      tail.push(r.value.userId);
    }
    assert.deepEqual(tail, ["b"]);
    const error = await catchError(
      (async () => {
        for await (const _ of client.read(UserSignedUpEvent, { topic: freshTopic("read-missing") })) {
          // nothing
        }
      })(),
    );
    assert.equal(error.code, ErrorCode.TOPIC_NOT_FOUND);
  });
});

describe("flow control", () => {
  test("credits are granted back as events are settled, so a small window drains a long topic", async () => {
    const topic = freshTopic("credits");
    await newUserSignedUpProducer(client, { topic }).publishBatch(
      Array.from({ length: 50 }, (_, i) => ({ userId: `u${i}` })),
    );
    const consumer = await subscribeUserSignedUp(client, { topic, subscription: "s", position: "earliest", credits: 2 });
    let outstanding = 0;
    let most = 0;
    const run = runInBackground(consumer, async () => {
      most = Math.max(most, ++outstanding);
      await new Promise((r) => setTimeout(r, 1));
      outstanding--;
    });
    await waitFor("all 50 events", () => run.seen.length === 50);
    await run.stop();
    assert.equal(new Set(run.seen.map((e) => e.value.userId)).size, 50);
    assert.equal(most, 1, "the handler runs one event at a time");
  });

  test("queued acks and credit grants are merged into one message when the stream is busy", async () => {
    const queue = new RequestQueue<{ kind: string; items: string[] }>((a, b) =>
      a.kind === "ack" && b.kind === "ack" ? { kind: "ack", items: [...a.items, ...b.items] } : undefined,
    );
    queue.push({ kind: "ack", items: ["1"] });
    queue.push({ kind: "ack", items: ["2"] });
    queue.push({ kind: "nack", items: ["3"] });
    queue.push({ kind: "ack", items: ["4"] });
    queue.close();
    assert.equal(queue.push({ kind: "ack", items: ["late"] }), false, "closed queues refuse");
    const got = [];
    for await (const message of queue) {
      got.push(`${message.kind}:${message.items.join(",")}`);
    }
    assert.deepEqual(got, ["ack:1,2", "nack:3", "ack:4"]);
  });
});

describe("trace context", () => {
  test("attributes and traceparent round trip; the processing span is a child of the producer's", async () => {
    const topic = freshTopic("trace");
    const producer = newUserSignedUpProducer(client, { topic });
    const { traceId, spanId } = await tracer.startActiveSpan("signup request", async (span) => {
      await producer.publish({ userId: "traced" }, { attributes: { tenant: "acme", "x-retry": "no" } });
      span.end();
      return span.spanContext();
    });
    const consumer = await subscribeUserSignedUp(client, { topic, subscription: "tracer", position: "earliest" });
    let activeInHandler: string | undefined;
    const run = runInBackground(consumer, () => {
      activeInHandler = trace.getActiveSpan()?.spanContext().traceId;
    });
    await waitFor("the traced event", () => run.seen.length === 1);
    await run.stop();
    const env = run.seen[0]!;
    assert.equal(env.attributes["tenant"], "acme");
    assert.equal(env.attributes["x-retry"], "no");
    assert.match(env.attributes["traceparent"] ?? "", new RegExp(`^00-${traceId}-${spanId}-01$`));
    assert.equal(activeInHandler, traceId, "the handler runs inside the processing span");
    const processed = spans.getFinishedSpans().find((s) => s.name === `process ${topic}`);
    assert.ok(processed !== undefined, "a processing span was recorded");
    assert.equal(processed.kind, SpanKind.CONSUMER);
    assert.equal(processed.spanContext().traceId, traceId);
    assert.equal(processed.parentSpanContext?.spanId, spanId);
    assert.deepEqual(
      {
        system: processed.attributes["messaging.system"],
        destination: processed.attributes["messaging.destination.name"],
        operation: processed.attributes["messaging.operation"],
        id: processed.attributes["messaging.message.id"],
        group: processed.attributes["messaging.consumer.group.name"],
      },
      { system: "herald", destination: topic, operation: "process", id: env.id, group: "tracer" },
    );
    await producer.close();
  });

  test("without an active span no traceparent is added", async () => {
    const topic = freshTopic("untraced");
    const producer = newUserSignedUpProducer(client, { topic });
    await producer.publish({ userId: "plain" });
    const consumer = await subscribeUserSignedUp(client, { topic, subscription: "s", position: "earliest" });
    const { value: env } = await consumer[Symbol.asyncIterator]().next();
    assert.equal(env?.attributes["traceparent"], undefined);
    env?.ack();
    await consumer.close();
  });
});

describe("failures in consumers", () => {
  test("a handler error is redelivered with backoff, then dead-lettered with its reason", async () => {
    const topic = freshTopic("dlq");
    await newUserSignedUpProducer(client, { topic }).publish({ userId: "doomed" });
    const consumer = await subscribeUserSignedUp(client, {
      topic,
      subscription: "mailer",
      position: "earliest",
      redelivery: { minBackoffMs: 50, maxBackoffMs: 100, maxAttempts: 3, deadLetterTopic: `${topic}.dlq` },
    });
    const run = runInBackground(consumer, () => {
      throw new Error("smtp refused the message");
    });
    await waitFor("three attempts", () => run.seen.length === 3);
    const dlq = await subscribeUserSignedUp(client, { topic: `${topic}.dlq`, subscription: "inspect", position: "earliest" });
    const { value: dead } = await dlq[Symbol.asyncIterator]().next();
    await run.stop();
    assert.deepEqual(
      run.seen.map((e) => e.deliveryAttempt),
      [1, 2, 3],
    );
    assert.ok(dead !== undefined);
    assert.equal(dead.value.userId, "doomed");
    assert.equal(dead.attributes["herald_dlq_reason"], "smtp refused the message");
    assert.equal(dead.attributes["herald_dlq_attempts"], "3");
    assert.equal(dead.attributes["herald_dlq_subscription"], "mailer");
    dead.ack();
    await dlq.close();
  });

  test("an event that does not decode is nacked with the decode error and never reaches the handler", async () => {
    const topic = freshTopic("decode");
    // Raw API on purpose: a typed producer cannot publish a bad payload.
    await client.publisher.publish({
      topic,
      events: [{ id: "garbage-1", type: "x", data: new Uint8Array([0x0a, 0xff, 0xff, 0xff]) }],
    });
    await newUserSignedUpProducer(client, { topic }).publish({ userId: "fine" });
    const consumer = await subscribeUserSignedUp(client, {
      topic,
      subscription: "s",
      position: "earliest",
      redelivery: { maxAttempts: 1, deadLetterTopic: `${topic}.dlq` },
    });
    const run = runInBackground(consumer);
    // The dead event's payload does not decode either, so read it raw.
    const raw = await readRaw(`${topic}.dlq`);
    await waitFor("the good event", () => run.seen.length === 1);
    await run.stop();
    assert.deepEqual(
      run.seen.map((e) => e.value.userId),
      ["fine"],
    );
    assert.equal(raw.id, "garbage-1");
    assert.match(raw.attributes["herald_dlq_reason"] ?? "", /^cannot decode event garbage-1 as acme\.signup\.v1\.UserSignedUp: /);
  });

  test("a handler that throws unexpectedly is nacked and the loop goes on", async () => {
    const topic = freshTopic("exception");
    const producer = newUserSignedUpProducer(client, { topic });
    await producer.publishBatch([{ userId: "boom" }, { userId: "ok-1" }, { userId: "ok-2" }]);
    const consumer = await subscribeUserSignedUp(client, {
      topic,
      subscription: "s",
      position: "earliest",
      redelivery: { minBackoffMs: 50, maxBackoffMs: 50 },
    });
    const handled: string[] = [];
    const run = runInBackground(consumer, (env) => {
      if (env.value.userId === "boom" && env.deliveryAttempt === 1) {
        const missing = undefined as unknown as { field: string };
        void missing.field; // TypeError
      }
      handled.push(`${env.value.userId}#${env.deliveryAttempt}`);
    });
    await waitFor("the redelivered event", () => handled.includes("boom#2"));
    await run.stop();
    assert.deepEqual(handled.sort(), ["boom#2", "ok-1#1", "ok-2#1"]);
  });

  test("nack with a delay and extend from inside the handler", async () => {
    const topic = freshTopic("nack");
    await newUserSignedUpProducer(client, { topic }).publish({ userId: "later" });
    const consumer = await subscribeUserSignedUp(client, { topic, subscription: "s", position: "earliest" });
    const times: number[] = [];
    const run = runInBackground(consumer, (env) => {
      times.push(Date.now());
      env.extend(10_000);
      if (env.deliveryAttempt === 1) {
        env.nack({ delayMs: 300, reason: "not yet" });
      }
    });
    await waitFor("the second attempt", () => times.length === 2);
    await run.stop();
    assert.ok(times[1]! - times[0]! >= 250, `redelivered after ${times[1]! - times[0]!} ms`);
  });
});

/** The first event of `topic`, without decoding (Subscriber.Read). */
async function readRaw(topic: string) {
  for (let i = 0; i < 200; i++) {
    for await (const response of client.subscriber.read({ topic, maxEvents: 1n })) {
      const event = response.events[0]?.event;
      if (event !== undefined) {
        return event;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing arrived on ${topic}`);
}

describe("typed errors", () => {
  test("an oversize event fails only its own publish with EVENT_TOO_LARGE", async () => {
    const topic = freshTopic("oversize");
    const producer = newUserSignedUpProducer(client, { topic, lingerMs: 20 });
    const results = await Promise.allSettled([
      producer.publish({ userId: "small-1" }),
      producer.publish({ userId: "huge", email: "x".repeat(2 * 1024 * 1024) }),
      producer.publish({ userId: "small-2" }),
    ]);
    assert.equal(results[0]!.status, "fulfilled");
    assert.equal(results[2]!.status, "fulfilled");
    assert.equal(results[1]!.status, "rejected");
    const error = (results[1] as PromiseRejectedResult).reason as HeraldError;
    assert.ok(error instanceof HeraldError);
    assert.equal(error.code, ErrorCode.EVENT_TOO_LARGE);
    assert.equal(error.codeName, "ERROR_CODE_EVENT_TOO_LARGE");
    assert.equal(error.grpcCode, GrpcCode.InvalidArgument);
    assert.match(error.message, /max_event_bytes/);
    assert.equal(producer.stats().requests >= 2, true, "the others were sent again");
  });

  test("attaching with the wrong subscription type fails with SUBSCRIPTION_TYPE_MISMATCH", async () => {
    const topic = freshTopic("wrongtype");
    const shared = await subscribeUserSignedUp(client, { topic, subscription: "jobs", type: "shared" });
    const error = await catchError(subscribeUserSignedUp(client, { topic, subscription: "jobs", type: "exclusive" }));
    assert.equal(error.code, ErrorCode.SUBSCRIPTION_TYPE_MISMATCH);
    assert.equal(error.grpcCode, GrpcCode.FailedPrecondition);
    await shared.close();
  });

  test("a second exclusive consumer fails with EXCLUSIVE_CONSUMER_ATTACHED", async () => {
    const topic = freshTopic("exclusive");
    const first = await subscribeUserSignedUp(client, { topic, subscription: "one", type: "exclusive" });
    const error = await catchError(subscribeUserSignedUp(client, { topic, subscription: "one", type: "exclusive" }));
    assert.equal(error.code, ErrorCode.EXCLUSIVE_CONSUMER_ATTACHED);
    await first.close();
  });

  test("an unknown topic with auto-create off fails with TOPIC_NOT_FOUND", async () => {
    const strict = await HeraldServer.start({ autoCreateTopics: false });
    const strictClient = await HeraldClient.connect({ endpoint: strict.endpoint, logger: quiet });
    try {
      const error = await catchError(newUserSignedUpProducer(strictClient, { topic: "missing" }).publish({ userId: "u" }));
      assert.equal(error.code, ErrorCode.TOPIC_NOT_FOUND);
      assert.equal(error.grpcCode, GrpcCode.NotFound);
      assert.equal(error.metadata["topic"] ?? "missing", "missing");
      // Unary calls carry the same detail in grpc-status-details-bin.
      const unary = await catchError(strictClient.admin.getTopic({ name: "missing" }).catch((e) => Promise.reject(HeraldError.from(e))));
      assert.equal(unary.code, ErrorCode.TOPIC_NOT_FOUND);
    } finally {
      await strictClient.close();
      await strict.stop();
    }
  });

  test("bad settings are refused before anything is sent", async () => {
    assert.throws(() => new HeraldClient({ endpoint: "ftp://host:1" }), /the scheme must be http:\/\//);
    assert.throws(() => new HeraldClient({ endpoint: "http://bad host" }), /invalid Herald endpoint/);
    assert.throws(() => new HeraldClient({ endpoint: "" }), /invalid Herald endpoint "": it is empty/);
    assert.throws(
      () => new HeraldClient({ endpoint: "http://127.0.0.1:50051/herald" }),
      /only a host and port are allowed.*give host:port, http:\/\/host:port or https:\/\/host:port/,
    );
    assert.throws(() => new HeraldClient({ endpoint: "127.0.0.1:notaport" }), /invalid Herald endpoint/);
    assert.throws(() => new HeraldClient({ endpoint: "http://x", waitForServerMs: -1 }), /waitForServerMs must be/);
    assert.throws(() => new HeraldClient({ endpoint: "http://x", keepalive: { timeoutMs: 0 } }), /keepalive.timeoutMs must be/);
    assert.throws(() => new HeraldClient({ endpoint: "http://x", requestTimeoutMs: -1 }), /requestTimeoutMs must be a positive/);
    assert.throws(() => defineEvent(UserSignedUpSchema, { topic: "no spaces" }), /invalid topic name "no spaces"/);
    assert.throws(() => client.producer(UserSignedUpEvent, { topic: ".." }), /invalid topic name/);
    await assert.rejects(client.subscribe(UserSignedUpEvent, { subscription: "a/b" }), /invalid subscription name/);
    await assert.rejects(client.subscribe(UserSignedUpEvent, { subscription: "s", credits: 0 }), /credits must be an integer/);
    await assert.rejects(
      client.subscribe(UserSignedUpEvent, { subscription: "s", type: "fanout" as "shared" }),
      /unknown subscription type "fanout"/,
    );
  });

  test("connecting to a port with no broker fails at once with UNAVAILABLE and the cause", async () => {
    const started = Date.now();
    const error = await catchError(HeraldClient.connect({ endpoint: "http://127.0.0.1:1" }));
    assert.equal(error.grpcCode, GrpcCode.Unavailable);
    assert.match(error.message, /cannot connect to http:\/\/127\.0\.0\.1:1: connection refused \(connect ECONNREFUSED 127\.0\.0\.1:1\)/);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });

  test("a closed producer refuses publishes", async () => {
    const producer = newUserSignedUpProducer(client, { topic: freshTopic("closed") });
    await producer.close();
    const error = await catchError(producer.publish({ userId: "late" }));
    assert.equal(error.grpcCode, GrpcCode.FailedPrecondition);
  });
});

describe("failover", () => {
  test("consumers are told when they become active or stand by", async () => {
    const topic = freshTopic("failover");
    const rolesA: ActiveState[] = [];
    const rolesB: ActiveState[] = [];
    const a = await subscribeUserSignedUp(client, {
      topic,
      subscription: "fo",
      type: "failover",
      consumerName: "a",
      priority: 0,
      onActiveStatus: (s) => rolesA.push(s),
    });
    const runA = runInBackground(a);
    await waitFor("a active", () => rolesA.some((s) => s.active));
    const b = await subscribeUserSignedUp(client, {
      topic,
      subscription: "fo",
      type: "failover",
      consumerName: "b",
      priority: 1,
      onActiveStatus: (s) => rolesB.push(s),
    });
    const runB = runInBackground(b);
    await waitFor("b standing by", () => rolesB.length > 0);
    assert.equal(rolesB.at(-1)?.active, false);
    assert.equal(rolesB.at(-1)?.activeConsumer, "a");
    await runA.stop();
    await waitFor("b active after a left", () => rolesB.at(-1)?.active === true);
    assert.equal(b.activeState?.active, true);
    assert.equal(b.activeState?.activeConsumer, "b");
    await runB.stop();
  });
});

describe("re-attach", () => {
  test("a running consumer re-attaches after the server restarts and goes on", async () => {
    const own = await HeraldServer.start();
    const logged: string[] = [];
    const ownClient = await HeraldClient.connect({
      endpoint: own.endpoint,
      logger: { ...quiet, info: (m: string) => logged.push(m), warn: (m: string) => logged.push(m) },
      reconnect: { initialMs: 50, maxMs: 500 },
    });
    try {
      const topic = "restart";
      const producer = newUserSignedUpProducer(ownClient, { topic });
      await producer.publishBatch([{ userId: "before-1" }, { userId: "before-2" }]);
      const consumer = await subscribeUserSignedUp(ownClient, {
        topic,
        subscription: "survivor",
        type: "exclusive",
        position: "earliest",
      });
      const run = runInBackground(consumer);
      await waitFor("events before the restart", () => run.seen.length === 2);
      await own.restart(700); // re-attach attempts fail while it is down
      // The producer's stream broke with the old process; the next publish reopens it.
      let published = false;
      for (let i = 0; i < 50 && !published; i++) {
        try {
          await producer.publishBatch([{ userId: "after-1" }, { userId: "after-2" }]);
          published = true;
        } catch (error) {
          assert.ok(error instanceof HeraldError && error.transient, String(error));
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await waitFor("events after the restart", () => run.seen.some((e) => e.value.userId === "after-2"), 20_000);
      await run.stop();
      const users = new Set(run.seen.map((e) => e.value.userId));
      assert.deepEqual([...users].sort(), ["after-1", "after-2", "before-1", "before-2"]);
      assert.ok(logged.some((m) => m.includes("failed; re-attaching")), logged.join("\n"));
      assert.ok(logged.some((m) => m.includes("re-attached to restart/survivor")), logged.join("\n"));
      await producer.close();
    } finally {
      await ownClient.close();
      await own.stop();
    }
  });
});

describe("helpers", () => {
  test("reconnect delays grow, are capped, and are jittered within bounds", () => {
    const policy = { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.2 };
    for (let i = 0; i < 50; i++) {
      const d0 = reconnectDelay(policy, 0);
      const d3 = reconnectDelay(policy, 3);
      const d10 = reconnectDelay(policy, 10);
      assert.ok(d0 >= 80 && d0 <= 120, `attempt 0: ${d0}`);
      assert.ok(d3 >= 640 && d3 <= 960, `attempt 3: ${d3}`);
      assert.ok(d10 >= 800 && d10 <= 1200, `attempt 10: ${d10}`);
    }
  });

  test("the binding encodes with the generated schema", () => {
    const bytes = UserSignedUpEvent.encode(UserSignedUpEvent.create({ userId: "k" }));
    assert.deepEqual(bytes, toBinary(UserSignedUpSchema, create(UserSignedUpSchema, { userId: "k" })));
    assert.equal(UserSignedUpEvent.key(UserSignedUpEvent.decode(bytes)), "k");
    assert.equal(UserSignedUpEvent.fullName, "acme.signup.v1.UserSignedUp");
  });

  test("the hand-written event encoding decodes with protobuf-es to the same fields", () => {
    const fields = {
      id: "01a2-ünïcode-✓",
      source: "/s",
      type: "t",
      subject: "",
      timeSeconds: 1_767_225_600,
      timeNanos: 123_000_000,
      dataContentType: "application/protobuf",
      dataSchema: "acme.signup.v1.UserSignedUp",
      attributes: { traceparent: "00-abc-def-01", "ключ": "värde", empty: "" },
      key: "k".repeat(300),
      data: new Uint8Array(200).fill(7),
    };
    const event = fromBinary(EventSchema, encodeEvent(fields));
    assert.equal(event.id, fields.id);
    assert.equal(event.source, "/s");
    assert.equal(event.type, "t");
    assert.equal(event.subject, "");
    assert.equal(event.time?.seconds, 1_767_225_600n);
    assert.equal(event.time?.nanos, 123_000_000);
    assert.equal(event.dataContentType, fields.dataContentType);
    assert.equal(event.dataSchema, fields.dataSchema);
    assert.deepEqual({ ...event.attributes }, fields.attributes);
    assert.equal(event.key, fields.key);
    assert.deepEqual(Uint8Array.from(event.data), fields.data);
    const old = fromBinary(EventSchema, encodeEvent({ ...fields, timeSeconds: -5, timeNanos: 0, attributes: {}, data: new Uint8Array() }));
    assert.equal(old.time?.seconds, -5n);
    assert.equal(old.data.length, 0);
  });

  test("the hand-written delivery decoding matches protobuf-es", () => {
    const delivered = create(DeliveredEventSchema, {
      event: {
        id: "id-✓",
        source: "/s",
        type: "t",
        subject: "sub",
        time: { seconds: -62135596800n, nanos: 999_999_999 },
        dataContentType: "application/protobuf",
        dataSchema: "x.Y",
        attributes: { a: "1", "ü": "" },
        key: "k",
        data: new Uint8Array([0, 1, 2, 255]),
      },
      topic: "t.opic",
      partition: 1023,
      offset: 18_446_744_073_709_551_615n,
      publishTime: { seconds: 1_767_225_600n, nanos: 5 },
      deliveryAttempt: 7,
      ackHandle: "h-1",
      epoch: 42n,
    });
    const decoded = decodeDelivered(toBinary(DeliveredEventSchema, delivered));
    assert.deepEqual(
      toBinary(DeliveredEventSchema, create(DeliveredEventSchema, decoded)),
      toBinary(DeliveredEventSchema, delivered),
    );
    assert.equal(decoded.offset, 18_446_744_073_709_551_615n);
    assert.equal(decoded.event?.attributes["ü"], "");
    const empty = decodeDelivered(new Uint8Array(0));
    assert.equal(empty.event, undefined);
    assert.equal(empty.ackHandle, "");
  });
});
