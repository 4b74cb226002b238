/**
 * {@link HeraldClient}: one HTTP/2 connection to a Herald broker (gRPC
 * protocol via Connect), shared by every producer and consumer made from it.
 *
 * @module
 */
import type { Message } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { Code, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import type { TextMapPropagator } from "@opentelemetry/api";
import { Consumer, type ConsumerOptions } from "./consumer.js";
import { HeraldError } from "./errors.js";
import type { EventBinding } from "./event.js";
import { Admin } from "./gen/herald/v1/admin_pb.js";
import { Publisher } from "./gen/herald/v1/publisher_pb.js";
import {
  PublishStreamRequestRawSchema,
  SubscribeResponseRawSchema,
} from "./gen/herald/sdk/internal/v1/raw_pb.js";
import { Subscriber } from "./gen/herald/v1/subscriber_pb.js";
import { Producer, type ProducerOptions } from "./producer.js";
import { type ReadOptions, type Recorded, readTopic } from "./reader.js";
import { defaultPropagator } from "./tracing.js";

/**
 * How consumers re-attach (and {@link HeraldClient.connect} retries) after
 * the connection drops: exponential backoff from `initialMs`, times
 * `multiplier` per attempt, capped at `maxMs`, each delay spread randomly by
 * up to `jitter` (a fraction, 0 to 1) either way.
 */
export interface ReconnectPolicy {
  /** First delay. Default 100 ms. */
  initialMs: number;
  /** Longest delay. Default 10 s. */
  maxMs: number;
  /** Growth per attempt. Default 2. */
  multiplier: number;
  /** Random spread of each delay, as a fraction of it. Default 0.2. */
  jitter: number;
}

/** The default {@link ReconnectPolicy}. */
export const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = Object.freeze({
  initialMs: 100,
  maxMs: 10_000,
  multiplier: 2,
  jitter: 0.2,
});

/** The delay before re-attach attempt `attempt` (0-based), jitter applied. */
export function reconnectDelay(policy: ReconnectPolicy, attempt: number): number {
  const base = Math.min(policy.initialMs * Math.max(policy.multiplier, 1) ** attempt, policy.maxMs);
  const jitter = Math.min(Math.max(policy.jitter, 0), 1);
  return Math.max(0, base * (1 + jitter * (Math.random() * 2 - 1)));
}

/** Where the SDK logs what it handles by itself (re-attaches, handler failures). Default {@link stderrLogger}. */
export interface Logger {
  debug(message: string, ...details: unknown[]): void;
  info(message: string, ...details: unknown[]): void;
  warn(message: string, ...details: unknown[]): void;
  error(message: string, ...details: unknown[]): void;
}

/**
 * Publisher.PublishStream taking requests whose events are already encoded
 * (`herald.sdk.internal.v1.PublishStreamRequestRaw`: the same bytes on the
 * wire as `herald.v1.PublishStreamRequest`); same service path and method.
 */
const rawPublishStream = { ...Publisher.method.publishStream, input: PublishStreamRequestRawSchema };
const RawPublisher = { ...Publisher, methods: [rawPublishStream], method: { publishStream: rawPublishStream } };
/** Subscriber.Subscribe answering `SubscribeResponseRaw` (event batches left encoded, decoded by hand). */
const rawSubscribe = { ...Subscriber.method.subscribe, output: SubscribeResponseRawSchema };
const RawSubscriber = { ...Subscriber, methods: [rawSubscribe], method: { subscribe: rawSubscribe } };

/** The default logger: info, warn and error to stderr (never stdout), debug dropped. */
export const stderrLogger: Logger = {
  debug: () => {},
  info: (message, ...details) => console.error(message, ...details),
  warn: (message, ...details) => console.warn(message, ...details),
  error: (message, ...details) => console.error(message, ...details),
};

/** Settings of a {@link HeraldClient}. */
export interface ClientOptions {
  /** The broker, e.g. `http://127.0.0.1:50051`. */
  endpoint: string;
  /** How long {@link HeraldClient.connect} waits for the connection. Default 5 s. */
  connectTimeoutMs?: number;
  /** Bound on each unary call and on each publish. Default 30 s. */
  requestTimeoutMs?: number;
  /** How consumers re-attach after failures. Default {@link DEFAULT_RECONNECT}. */
  reconnect?: Partial<ReconnectPolicy>;
  /** HTTP/2 keep-alive PING interval. Default 30 s. */
  pingIntervalMs?: number;
  /** Trace context propagator. Default W3C TraceContext. */
  propagator?: TextMapPropagator;
  /** Default {@link stderrLogger}. */
  logger?: Logger;
}

/**
 * The connection to a Herald broker.
 *
 * ```ts
 * const client = await HeraldClient.connect({ endpoint: "http://127.0.0.1:50051" });
 * const producer = client.producer(UserSignedUpEvent);
 * const receipt = await producer.publish({ userId: "u1", email: "a@example.com" });
 * ```
 */
export class HeraldClient {
  /** The endpoint URL. */
  readonly endpoint: string;
  /** Bound on each call. */
  readonly requestTimeoutMs: number;
  /** How long `connect` waits. */
  readonly connectTimeoutMs: number;
  /** Re-attach policy. */
  readonly reconnect: Readonly<ReconnectPolicy>;
  /** @internal */
  readonly propagator: TextMapPropagator;
  /** @internal */
  readonly logger: Logger;
  /** The Publisher service, for what the typed API does not cover. */
  readonly publisher: Client<typeof Publisher>;
  /** @internal PublishStream with pre-encoded events (same wire format). */
  readonly rawPublisher: Client<typeof RawPublisher>;
  /** @internal Subscribe with event batches left encoded. */
  readonly rawSubscriber: Client<typeof RawSubscriber>;
  /** The Subscriber service (Subscribe, Read). */
  readonly subscriber: Client<typeof Subscriber>;
  /** The Admin service: topics, subscriptions, stats, seek. */
  readonly admin: Client<typeof Admin>;
  private readonly sessions: Http2SessionManager;
  private readonly closers = new Set<{ close(): Promise<void> }>();

  /**
   * A client that connects lazily, on the first call. Throws a TypeError
   * when the endpoint is not an `http://` or `https://` URL.
   */
  constructor(options: ClientOptions) {
    let url: URL;
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(options.endpoint)) {
      throw new TypeError(
        `invalid Herald endpoint ${JSON.stringify(options.endpoint)}: give a URL with its scheme, e.g. http://${options.endpoint}`,
      );
    }
    try {
      url = new URL(options.endpoint);
    } catch {
      throw new TypeError(
        `invalid Herald endpoint ${JSON.stringify(options.endpoint)}: give a URL such as http://127.0.0.1:50051`,
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(
        `invalid Herald endpoint ${JSON.stringify(options.endpoint)}: the scheme must be http:// (plaintext HTTP/2) or https://`,
      );
    }
    this.endpoint = options.endpoint;
    this.requestTimeoutMs = positive(options.requestTimeoutMs, 30_000, "requestTimeoutMs");
    this.connectTimeoutMs = positive(options.connectTimeoutMs, 5_000, "connectTimeoutMs");
    this.reconnect = Object.freeze({ ...DEFAULT_RECONNECT, ...options.reconnect });
    this.propagator = options.propagator ?? defaultPropagator;
    this.logger = options.logger ?? stderrLogger;
    this.sessions = new Http2SessionManager(url, {
      pingIntervalMs: options.pingIntervalMs ?? 30_000,
      pingTimeoutMs: 10_000,
    });
    const transport = createGrpcTransport({
      baseUrl: url.toString(),
      sessionManager: this.sessions,
      // Herald's default max request is well above gRPC's 4 MiB default.
      readMaxBytes: 64 * 1024 * 1024,
      writeMaxBytes: 64 * 1024 * 1024,
    });
    this.publisher = createClient(Publisher, transport);
    this.rawPublisher = createClient(RawPublisher, transport);
    this.rawSubscriber = createClient(RawSubscriber, transport);
    this.subscriber = createClient(Subscriber, transport);
    this.admin = createClient(Admin, transport);
  }

  /**
   * Creates a client and waits until its connection is up, retrying with the
   * reconnect policy until `connectTimeoutMs` has passed; then fails with a
   * HeraldError (gRPC code UNAVAILABLE) naming the endpoint.
   */
  static async connect(options: ClientOptions): Promise<HeraldClient> {
    const client = new HeraldClient(options);
    const deadline = Date.now() + client.connectTimeoutMs;
    let lastError: unknown;
    for (let attempt = 0; ; attempt++) {
      const left = deadline - Date.now();
      const state = await Promise.race([
        client.sessions.connect(),
        new Promise<"timeout">((resolve) => setTimeout(resolve, Math.max(left, 0), "timeout").unref()),
      ]);
      if (state === "open" || state === "idle") {
        return client;
      }
      lastError = state === "error" ? client.sessions.error() : undefined;
      const wait = Math.min(reconnectDelay(client.reconnect, attempt), deadline - Date.now());
      if (state === "timeout" || wait <= 0) {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    client.sessions.abort();
    const reason = lastError instanceof Error ? `: ${lastError.message}` : "";
    throw new HeraldError(
      `cannot connect to ${client.endpoint} within ${client.connectTimeoutMs} ms${reason}; is the broker running there?`,
      { grpcCode: Code.Unavailable, cause: lastError },
    );
  }

  /**
   * A batching producer of `binding`'s events (to `binding.topic`, or
   * `options.topic`). Concurrent `publish` calls share requests over one
   * PublishStream.
   */
  producer<T extends Message>(binding: EventBinding<T>, options: ProducerOptions = {}): Producer<T> {
    const producer = new Producer(this, binding, options);
    this.track(producer);
    return producer;
  }

  /**
   * Attaches a consumer of `binding`'s events to a subscription (created on
   * first attach with the type, position and policies given). Resolves once
   * the broker accepted the attach; rejects with a HeraldError such as
   * `SUBSCRIPTION_TYPE_MISMATCH` or `EXCLUSIVE_CONSUMER_ATTACHED`.
   */
  async subscribe<T extends Message>(binding: EventBinding<T>, options: ConsumerOptions): Promise<Consumer<T>> {
    const consumer = new Consumer(this, binding, options);
    await consumer.attach();
    this.track(consumer);
    return consumer;
  }

  /**
   * Reads `binding`'s topic without a subscription (no acks): from
   * `position` (default earliest), optionally following new events.
   *
   * ```ts
   * for await (const r of client.read(UserSignedUpEvent, { maxEvents: 100 })) console.log(r.offset, r.value);
   * ```
   */
  read<T extends Message>(binding: EventBinding<T>, options: ReadOptions = {}): AsyncGenerator<Recorded<T>, void, undefined> {
    return readTopic(this, binding, options);
  }

  /** Closes every producer (flushing) and consumer made from this client, then the connection. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.closers].map((c) => c.close()));
    this.closers.clear();
    this.sessions.abort();
  }

  private track(closer: { close(): Promise<void>; onClose?: (f: () => void) => void }): void {
    this.closers.add(closer);
    closer.onClose?.(() => this.closers.delete(closer));
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number of milliseconds, not ${value}`);
  }
  return value;
}
