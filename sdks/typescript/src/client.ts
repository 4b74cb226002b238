/**
 * {@link HeraldClient}: one HTTP/2 connection to a Herald broker (gRPC
 * protocol via Connect), shared by every producer and consumer made from it.
 *
 * @module
 */
import type { ClientHttp2Stream, Http2Session, SecureClientSessionOptions } from "node:http2";
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
 * How consumers re-attach, producers resend (and {@link HeraldClient.connect}
 * retries, with `waitForServerMs`) after
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

/**
 * The connection's HTTP/2 keepalive: a PING after `intervalMs` without
 * anything read from the broker, and the connection is dropped when no
 * answer comes within `timeoutMs` more (open streams fail with UNAVAILABLE:
 * consumers re-attach, producers send again). The equivalents of gRPC's
 * `grpc.keepalive_time_ms`, `grpc.keepalive_timeout_ms` and
 * `grpc.keepalive_permit_without_calls`.
 */
export interface KeepaliveOptions {
  /** Idle time before a PING. Default 20 s; 0 turns keepalive off. */
  intervalMs: number;
  /** How long a PING may go unanswered. Default 10 s. */
  timeoutMs: number;
  /** Also ping a connection with no call open. Default true. */
  withoutCalls: boolean;
}

/** The default {@link KeepaliveOptions}: 20 s, 10 s, with or without calls open. */
export const DEFAULT_KEEPALIVE: Readonly<KeepaliveOptions> = Object.freeze({
  intervalMs: 20_000,
  timeoutMs: 10_000,
  withoutCalls: true,
});

/** Settings of a {@link HeraldClient}. */
export interface ClientOptions {
  /**
   * The broker: `host:port` or `http://host:port` (plaintext HTTP/2), or
   * `https://host:port` (TLS, verified against Node's CA store; see `tls`).
   * Without a port, 80 for http and 443 for https.
   */
  endpoint: string;
  /**
   * Bound on one connection attempt of {@link HeraldClient.connect} (TCP, TLS
   * and HTTP/2 handshakes): how long it waits for a server that accepts the
   * connection but does not answer. A refused connection or an unknown host
   * fails `connect` at once (see `waitForServerMs`). Default 5 s.
   */
  connectTimeoutMs?: number;
  /**
   * How long {@link HeraldClient.connect} keeps trying (with the reconnect
   * policy's backoff) while the broker is not reachable yet (connection
   * refused, unknown host), e.g. while it starts beside the application.
   * Default 0: the first refusal fails `connect` with its cause.
   */
  waitForServerMs?: number;
  /**
   * Bound on each unary call and on each publish, including the publish's
   * resends after a lost connection. Default 30 s.
   */
  requestTimeoutMs?: number;
  /** How consumers re-attach and producers resend after failures. Default {@link DEFAULT_RECONNECT}. */
  reconnect?: Partial<ReconnectPolicy>;
  /** HTTP/2 keepalive. Default {@link DEFAULT_KEEPALIVE} (20 s, 10 s, also without calls). */
  keepalive?: Partial<KeepaliveOptions>;
  /** @deprecated Use `keepalive.intervalMs`. */
  pingIntervalMs?: number;
  /** TLS settings for an `https://` endpoint (`ca`, `cert`, `key`, `servername`...), passed to `http2.connect`. */
  tls?: SecureClientSessionOptions;
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
  /** How long `connect` waits for a broker that is not up yet. */
  readonly waitForServerMs: number;
  /** Re-attach and resend policy. */
  readonly reconnect: Readonly<ReconnectPolicy>;
  /** The connection's HTTP/2 keepalive. */
  readonly keepalive: Readonly<KeepaliveOptions>;
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
   * when the endpoint is not `host:port`, `http://host:port` or
   * `https://host:port`.
   */
  constructor(options: ClientOptions) {
    const url = parseEndpoint(options.endpoint);
    this.endpoint = options.endpoint;
    this.requestTimeoutMs = positive(options.requestTimeoutMs, 30_000, "requestTimeoutMs");
    this.connectTimeoutMs = positive(options.connectTimeoutMs, 5_000, "connectTimeoutMs");
    this.waitForServerMs = nonNegative(options.waitForServerMs, 0, "waitForServerMs");
    this.reconnect = Object.freeze({ ...DEFAULT_RECONNECT, ...options.reconnect });
    const keepalive = { ...DEFAULT_KEEPALIVE, ...options.keepalive };
    if (options.pingIntervalMs !== undefined && options.keepalive?.intervalMs === undefined) {
      keepalive.intervalMs = options.pingIntervalMs;
    }
    nonNegative(keepalive.intervalMs, 0, "keepalive.intervalMs");
    positive(keepalive.timeoutMs, 10_000, "keepalive.timeoutMs");
    this.keepalive = Object.freeze(keepalive);
    this.propagator = options.propagator ?? defaultPropagator;
    this.logger = options.logger ?? stderrLogger;
    this.sessions = new GuardedSessionManager(
      url,
      {
        // Connect's "no PING" is an infinite interval.
        pingIntervalMs: keepalive.intervalMs > 0 ? keepalive.intervalMs : Number.POSITIVE_INFINITY,
        pingTimeoutMs: keepalive.timeoutMs,
        pingIdleConnection: keepalive.withoutCalls,
      },
      url.protocol === "https:" ? options.tls : undefined,
    );
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
   * Creates a client and waits until its connection is up. A refused
   * connection, an unknown host or a failed TLS handshake fails at once with
   * a HeraldError (gRPC code UNAVAILABLE) naming the cause, e.g. "connection
   * refused (connect ECONNREFUSED 127.0.0.1:50051)", unless
   * `waitForServerMs` asks to keep trying (with the reconnect policy's
   * backoff) for that long; an attempt at a server that accepts the
   * connection but does not answer fails after `connectTimeoutMs`. Once
   * connected, the connection is re-established by itself when it drops.
   */
  static async connect(options: ClientOptions): Promise<HeraldClient> {
    const client = new HeraldClient(options);
    const started = Date.now();
    const waitMs = client.waitForServerMs;
    let lastError: unknown;
    for (let attempt = 0; ; attempt++) {
      const timeLeft = Math.max(client.connectTimeoutMs, waitMs) - (Date.now() - started);
      let timer: NodeJS.Timeout | undefined;
      const state = await Promise.race([
        client.sessions.connect(),
        new Promise<"timeout">((resolve) => {
          timer = setTimeout(resolve, Math.max(Math.min(client.connectTimeoutMs, timeLeft), 0), "timeout");
        }),
      ]);
      clearTimeout(timer);
      if (state === "open" || state === "idle") {
        return client;
      }
      const elapsed = Date.now() - started;
      if (state === "timeout") {
        client.sessions.abort();
        if (elapsed >= waitMs) {
          const before = lastError === undefined ? "" : `; before that: ${describeFailure(lastError)}`;
          throw new HeraldError(
            `cannot connect to ${client.endpoint}: no answer within the connect timeout (${client.connectTimeoutMs} ms)${before}; ` +
              "is a Herald broker listening there, and is plaintext vs TLS (http:// vs https://) right?",
            { grpcCode: Code.Unavailable, cause: lastError },
          );
        }
        continue;
      }
      lastError = client.sessions.error();
      if (waitMs === 0) {
        client.sessions.abort();
        throw new HeraldError(
          `cannot connect to ${client.endpoint}: ${describeFailure(lastError)}; ${connectHint(lastError)}`,
          { grpcCode: Code.Unavailable, cause: lastError },
        );
      }
      const wait = Math.min(reconnectDelay(client.reconnect, attempt), waitMs - elapsed);
      if (wait <= 0) {
        client.sessions.abort();
        throw new HeraldError(
          `cannot connect to ${client.endpoint}: not reachable within ${waitMs} ms (waitForServerMs); ` +
            `last failure: ${describeFailure(lastError)}`,
          { grpcCode: Code.Unavailable, cause: lastError },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
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

/**
 * Connect's session manager, with its keepalive made safe: its PING timer
 * can fire on a session that was just destroyed (a reset connection, a
 * GOAWAY), and `ClientHttp2Session.ping` then throws synchronously out of
 * the timer, an uncaught exception that ends the process
 * (connectrpc/connect-es#1795, unfixed in 2.1.1). Each session's `ping` is
 * wrapped (on its first request, before any PING timer is armed for it) to
 * do nothing once the session is closed or destroyed; the PING timeout then
 * destroys it again, which is harmless.
 */
class GuardedSessionManager extends Http2SessionManager {
  private readonly guarded = new WeakSet<Http2Session>();

  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session !== undefined && !this.guarded.has(session)) {
      this.guarded.add(session);
      const ping = session.ping;
      session.ping = function guardedPing(this: Http2Session, ...pingArgs: unknown[]): boolean {
        if (this.destroyed || this.closed) {
          return false;
        }
        return (ping as (...a: unknown[]) => boolean).apply(this, pingArgs);
      } as Http2Session["ping"];
    }
    return stream;
  }
}

/**
 * `host:port`, `http://host:port` or `https://host:port` as a URL (bare
 * `host:port` is plaintext); throws a TypeError naming the accepted forms.
 *
 * @internal
 */
export function parseEndpoint(endpoint: string): URL {
  const given = endpoint.trim();
  const invalid = (why: string) =>
    new TypeError(
      `invalid Herald endpoint ${JSON.stringify(endpoint)}: ${why}; give host:port, http://host:port or https://host:port, e.g. 127.0.0.1:50051`,
    );
  if (given === "") {
    throw invalid("it is empty");
  }
  const schemed = /^[a-z][a-z0-9+.-]*:\/\//i.test(given);
  let url: URL;
  try {
    url = new URL(schemed ? given : `http://${given}`);
  } catch {
    throw invalid("not a host and port");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalid("the scheme must be http:// (plaintext HTTP/2) or https:// (TLS)");
  }
  if (url.hostname === "" || url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "" || (url.pathname !== "/" && url.pathname !== "")) {
    throw invalid("only a host and port are allowed (no path, query or user)");
  }
  return url;
}

/**
 * A transport failure in words, leading with what it means: "connection
 * refused (connect ECONNREFUSED 127.0.0.1:1)", "unknown host (getaddrinfo
 * ENOTFOUND ...)".
 *
 * @internal
 */
export function describeFailure(error: unknown): string {
  const chain: unknown[] = [];
  for (let e = error; e instanceof Error && !chain.includes(e); e = e.cause) {
    chain.push(e);
  }
  const meanings: Record<string, string> = {
    ECONNREFUSED: "connection refused",
    ENOTFOUND: "unknown host (DNS lookup failed)",
    EAI_AGAIN: "DNS lookup failed (temporary)",
    ECONNRESET: "connection reset",
    ETIMEDOUT: "connection timed out",
    EHOSTUNREACH: "host unreachable",
    ENETUNREACH: "network unreachable",
    EPIPE: "connection closed by the peer",
  };
  for (const e of chain) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && code in meanings) {
      return `${meanings[code]} (${(e as Error).message.trim()})`;
    }
    if (typeof code === "string" && (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_"))) {
      const reason = (e as { reason?: unknown }).reason;
      return `TLS handshake failed (${typeof reason === "string" ? reason : (e as Error).message.trim()}; ${code})`;
    }
    if (typeof code === "string" && /^(UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|ERR_TLS_CERT)/.test(code)) {
      return `TLS certificate not accepted (${(e as Error).message.trim()}; ${code})`;
    }
  }
  if (error instanceof HeraldError || !(error instanceof Error)) {
    return error instanceof Error ? error.message : String(error);
  }
  const rawMessage = (error as { rawMessage?: unknown }).rawMessage;
  const top = (typeof rawMessage === "string" ? rawMessage : error.message).trim();
  const tail = chain.at(-1);
  const root = tail instanceof Error ? tail.message.trim() : "";
  return root !== "" && root !== top && !top.includes(root) ? `${top} (${root})` : top;
}

/** What to check after a failed connect, by its cause. */
function connectHint(error: unknown): string {
  const described = describeFailure(error);
  if (described.startsWith("TLS")) {
    return "does the broker serve TLS there? (http:// or host:port is plaintext, https:// is TLS)";
  }
  return "is the broker running there? (waitForServerMs waits for one that is starting)";
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a number of milliseconds >= 0, not ${value}`);
  }
  return value;
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
