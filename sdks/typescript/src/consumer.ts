/**
 * {@link Consumer}: typed consuming over one `Subscriber.Subscribe` stream,
 * and {@link Envelope}, one delivered event.
 *
 * The consumer attaches (the first message), then reads event batches into
 * a queue and hands them out one by one as decoded envelopes. Every ack or
 * nack frees the delivery's credit; freed credits are granted back in
 * batches (a quarter of the window at a time), so no more than `credits`
 * deliveries are ever outstanding. Closing half-closes the stream and waits
 * for the server to end it, so the last acks are applied. A stream that fails
 * with `UNAVAILABLE` (or another transient error) is re-attached with the
 * client's reconnect policy.
 *
 * @module
 */
import type { Message } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { DurationSchema, EmptySchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { Context, Span } from "@opentelemetry/api";
import { SpanStatusCode, context as otelContext } from "@opentelemetry/api";
import type { HeraldClient } from "./client.js";
import { reconnectDelay } from "./client.js";
import { HeraldError } from "./errors.js";
import { checkTopicName, dateOf, type EventBinding } from "./event.js";
import type {
  Attached,
  DeliveredEvent,
  Position,
  SubscribeRequest,
} from "./gen/herald/v1/subscriber_pb.js";
import type { SubscribeResponseRaw } from "./gen/herald/sdk/internal/v1/raw_pb.js";
import { decodeDelivered } from "./wire.js";
import {
  AttachSchema,
  PositionSchema,
  RedeliveryPolicySchema,
  SubscribeRequestSchema,
  SubscriptionType,
} from "./gen/herald/v1/subscriber_pb.js";
import { RequestQueue } from "./queue.js";
import { extractContext, startProcessSpan } from "./tracing.js";

/** How events are shared among a subscription's consumers (fixed when the subscription is created). */
export type SubscriptionKind = "exclusive" | "shared" | "failover" | "key_shared";

/**
 * Where a new subscription starts: the oldest retained event, only new ones,
 * explicit per-partition offsets (unlisted partitions start at earliest), or
 * the first event published at or after a time.
 */
export type StartPosition =
  | "earliest"
  | "latest"
  | { offsets: Record<number, bigint | number> }
  | { timestamp: Date };

/** Redelivery with exponential backoff and dead-lettering, for a new subscription. Unset fields take the server's defaults. */
export interface RedeliveryOptions {
  /** First redelivery delay (server default 1 s). */
  minBackoffMs?: number;
  /** Longest redelivery delay (server default 60 s). */
  maxBackoffMs?: number;
  /** Delay multiplier per attempt (server default 2). */
  multiplier?: number;
  /** Past this many deliveries the event goes to the dead-letter topic; 0 never dead-letters. */
  maxAttempts?: number;
  /** Default `<topic>.<subscription>.dlq`. */
  deadLetterTopic?: string;
}

/** Failover: whether this consumer holds the active role, as last told by the server. */
export interface ActiveState {
  /** This consumer is active (for `partitions`). */
  active: boolean;
  /** The active consumer's name (of partition 0 when standing by). */
  activeConsumer: string;
  /** Increases on every handover. */
  epoch: bigint;
  /** Partitions this consumer is active for. */
  partitions: number[];
}

/** Settings of a {@link Consumer}. */
export interface ConsumerOptions {
  /** The subscription: 1-249 characters of [A-Za-z0-9._-]. */
  subscription: string;
  /** Default "shared". Must match an existing subscription's type. */
  type?: SubscriptionKind;
  /** Consume this topic instead of the binding's. */
  topic?: string;
  /** Unique in the subscription; default chosen by the server. */
  consumerName?: string;
  /** Failover: lower values are preferred for the active role. Default 0. */
  priority?: number;
  /** Where a new subscription starts. Default "latest" (the server's default). */
  position?: StartPosition;
  /** Most deliveries outstanding at once (the credit window), 1-10,000. Default 100. */
  credits?: number;
  /** Redeliver an event not acked within this time (new subscription). Server default 30 s. */
  ackDeadlineMs?: number;
  /** Redelivery and dead-letter policy (new subscription). */
  redelivery?: RedeliveryOptions;
  /** Re-attach after transient failures (server restart, network). Default true. */
  reconnect?: boolean;
  /** Called whenever the server announces this consumer's failover role. */
  onActiveStatus?: (state: ActiveState) => void;
}

/** Options of {@link Envelope.nack}. */
export interface NackOptions {
  /** Redeliver after this long; default the subscription's backoff. */
  delayMs?: number;
  /** Why; recorded in the dead-letter event's attributes. */
  reason?: string;
}

/** How {@link Consumer.run} stops. */
export interface RunOptions {
  /** Aborting it stops the loop; the consumer then closes (the last acks are applied). */
  signal?: AbortSignal;
}

/** A handler for {@link Consumer.run}: resolve to ack, throw (or reject) to nack with the error's message as the reason. */
export type Handler<T extends Message> = (envelope: Envelope<T>) => void | Promise<void>;

/** Most ack handles merged into one Ack message. */
const MAX_MERGED_HANDLES = 1000;
/** How long closing waits for the server to end the stream. */
const CLOSE_TIMEOUT_MS = 5_000;

/** Sends acks, nacks, deadline extensions and credit grants on one stream. */
class Acker {
  private returned = 0;
  constructor(
    private readonly requests: RequestQueue<SubscribeRequest>,
    private readonly grantAt: number,
  ) {}

  /** Sends `message`, which finishes one delivery, and grants credits back when enough are freed. */
  finish(message: SubscribeRequest): void {
    // A closed stream drops it: the event is redelivered.
    if (!this.requests.push(message)) {
      return;
    }
    if (++this.returned >= this.grantAt) {
      const credits = this.returned;
      this.returned = 0;
      this.requests.push({
        $typeName: "herald.v1.SubscribeRequest",
        request: { case: "credit", value: { $typeName: "herald.v1.Credit", credits } },
      });
    }
  }

  send(message: SubscribeRequest): void {
    this.requests.push(message);
  }
}

/** Joins neighbouring plain acks, and neighbouring credit grants. */
function mergeRequests(a: SubscribeRequest, b: SubscribeRequest): SubscribeRequest | undefined {
  const x = a.request;
  const y = b.request;
  if (x.case === "ack" && y.case === "ack" && !x.value.cumulative && !y.value.cumulative) {
    if (x.value.ackHandles.length + y.value.ackHandles.length > MAX_MERGED_HANDLES) {
      return undefined;
    }
    x.value.ackHandles.push(...y.value.ackHandles);
    return a;
  }
  if (x.case === "credit" && y.case === "credit") {
    x.value.credits += y.value.credits;
    return a;
  }
  return undefined;
}

/**
 * A delivered event: the decoded value, its CloudEvents attributes, where it
 * was stored, and how to settle it. The first of {@link ack} / {@link nack}
 * wins; later calls do nothing. Under {@link Consumer.run} the handler's
 * outcome settles it unless the handler did.
 */
export class Envelope<T extends Message> {
  /** The decoded payload. */
  readonly value: T;
  /** CloudEvents `id`: stable across redeliveries. */
  readonly id: string;
  /** CloudEvents `type`. */
  readonly type: string;
  /** CloudEvents `source`. */
  readonly source: string;
  /** CloudEvents `subject` ("" when unset). */
  readonly subject: string;
  /** CloudEvents `time`: when the producer says it happened. */
  readonly time: Date | undefined;
  /** CloudEvents `datacontenttype`. */
  readonly dataContentType: string;
  /** CloudEvents `dataschema` (the full Protobuf name for typed producers). */
  readonly dataSchema: string;
  /** The ordering key ("" when keyless). */
  readonly key: string;
  /** Extension attributes (e.g. `traceparent`). */
  readonly attributes: Readonly<Record<string, string>>;
  /** The topic it came from. */
  readonly topic: string;
  /** Its partition. */
  readonly partition: number;
  /** Its offset in the partition. */
  readonly offset: bigint;
  /** 1 on first delivery, one higher on each redelivery. */
  readonly deliveryAttempt: number;
  /** When the broker stored it. */
  readonly publishTime: Date | undefined;
  /** Failover: the epoch of the active role it was delivered under. */
  readonly epoch: bigint;
  /** The processing span (kind CONSUMER, child of the producer's trace context); ends when the envelope is settled. */
  readonly span: Span;
  /** The context holding {@link span}: `context.with(envelope.context, ...)` to trace work under it. */
  readonly context: Context;
  readonly #handle: string;
  readonly #acker: Acker;
  #settled = false;

  /** @internal */
  constructor(value: T, delivery: DeliveredEvent, acker: Acker, span: Span, context: Context) {
    const event = delivery.event;
    this.value = value;
    this.id = event?.id ?? "";
    this.type = event?.type ?? "";
    this.source = event?.source ?? "";
    this.subject = event?.subject ?? "";
    this.time = dateOf(event?.time);
    this.dataContentType = event?.dataContentType ?? "";
    this.dataSchema = event?.dataSchema ?? "";
    this.key = event?.key ?? "";
    this.attributes = event?.attributes ?? {};
    this.topic = delivery.topic;
    this.partition = delivery.partition;
    this.offset = delivery.offset;
    this.deliveryAttempt = delivery.deliveryAttempt;
    this.publishTime = dateOf(delivery.publishTime);
    this.epoch = delivery.epoch;
    this.span = span;
    this.context = context;
    this.#handle = delivery.ackHandle;
    this.#acker = acker;
  }

  /** Whether ack or nack was called. */
  get settled(): boolean {
    return this.#settled;
  }

  /** Acknowledges the event: it will not be delivered again. */
  ack(): void {
    if (this.#settled) {
      return;
    }
    this.#settled = true;
    this.#acker.finish({
      $typeName: "herald.v1.SubscribeRequest",
      request: { case: "ack", value: { $typeName: "herald.v1.Ack", ackHandles: [this.#handle], cumulative: false } },
    });
    this.span.end();
  }

  /**
   * Refuses the event: it is redelivered after `delayMs` (the subscription's
   * backoff when unset), and dead-lettered with `reason` after the policy's
   * max attempts.
   */
  nack(options: NackOptions = {}): void {
    if (this.#settled) {
      return;
    }
    this.#settled = true;
    this.#acker.finish(
      create(SubscribeRequestSchema, {
        request: {
          case: "nack",
          value: {
            ackHandles: [this.#handle],
            delay: options.delayMs === undefined ? undefined : durationOf(options.delayMs),
            reason: options.reason ?? "",
          },
        },
      }),
    );
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: options.reason ?? "nacked" });
    this.span.end();
  }

  /** Buys `extensionMs` more time before the ack deadline redelivers the event. */
  extend(extensionMs: number): void {
    if (this.#settled) {
      return;
    }
    this.#acker.send(
      create(SubscribeRequestSchema, {
        request: {
          case: "extendDeadline",
          value: { ackHandles: [this.#handle], extension: durationOf(extensionMs) },
        },
      }),
    );
  }
}

/** One attached Subscribe stream. */
interface Session {
  requests: RequestQueue<SubscribeRequest>;
  responses: AsyncIterator<SubscribeResponseRaw>;
  abort: AbortController;
  acker: Acker;
  /** Deliveries received and not yet handed out. */
  queue: DeliveredEvent[];
  head: number;
  /** The read in progress, shared by whoever waits on the stream. */
  pending: Promise<IteratorResult<SubscribeResponseRaw>> | undefined;
}

/**
 * Consumes `T` events from a subscription.
 *
 * ```ts
 * const consumer = await client.subscribe(UserSignedUpEvent, { subscription: "welcome-email", position: "earliest" });
 * await consumer.run(async (env) => {
 *   console.log(`welcome ${env.value.userId} (attempt ${env.deliveryAttempt})`);
 * }, { signal });
 * ```
 *
 * Or drive it yourself, settling each envelope:
 *
 * ```ts
 * for await (const env of consumer) { ...; env.ack(); }
 * ```
 *
 * A payload that does not decode as `T` is nacked with the decode error as
 * the reason (and logged); it is never handed out.
 */
export class Consumer<T extends Message> implements AsyncIterable<Envelope<T>> {
  /** The topic consumed. */
  readonly topic: string;
  /** The subscription. */
  readonly subscription: string;
  private readonly attachMessage: SubscribeRequest;
  private readonly reconnect: boolean;
  private readonly window: number;
  private session: Session | undefined;
  private attachedInfo: Attached | undefined;
  private active: ActiveState | undefined;
  private readonly activeListeners = new Set<(state: ActiveState) => void>();
  private stopping = false;
  private closed: Promise<void> | undefined;
  private wakeSleep: (() => void) | undefined;
  private readonly closeListeners: (() => void)[] = [];

  /** Use {@link HeraldClient.subscribe}. */
  constructor(
    private readonly client: HeraldClient,
    private readonly binding: EventBinding<T>,
    options: ConsumerOptions,
  ) {
    this.topic = options.topic ?? binding.topic;
    checkTopicName(this.topic);
    this.subscription = options.subscription;
    checkTopicName(this.subscription, "subscription");
    const credits = options.credits ?? 100;
    if (!Number.isInteger(credits) || credits < 1 || credits > 10_000) {
      throw new RangeError(`credits must be an integer from 1 to 10000, not ${credits}`);
    }
    this.window = credits;
    this.reconnect = options.reconnect ?? true;
    if (options.onActiveStatus !== undefined) {
      this.activeListeners.add(options.onActiveStatus);
    }
    const redelivery = options.redelivery;
    this.attachMessage = create(SubscribeRequestSchema, {
      request: {
        case: "attach",
        value: create(AttachSchema, {
          topic: this.topic,
          subscription: this.subscription,
          type: subscriptionType(options.type ?? "shared"),
          consumerName: options.consumerName ?? "",
          priority: options.priority ?? 0,
          initialPosition: options.position === undefined ? undefined : positionOf(options.position),
          initialCredits: credits,
          ackDeadline: options.ackDeadlineMs === undefined ? undefined : durationOf(options.ackDeadlineMs),
          redelivery:
            redelivery === undefined
              ? undefined
              : create(RedeliveryPolicySchema, {
                  minBackoff: redelivery.minBackoffMs === undefined ? undefined : durationOf(redelivery.minBackoffMs),
                  maxBackoff: redelivery.maxBackoffMs === undefined ? undefined : durationOf(redelivery.maxBackoffMs),
                  multiplier: redelivery.multiplier ?? 0,
                  maxDeliveryAttempts: redelivery.maxAttempts ?? 0,
                  deadLetterTopic: redelivery.deadLetterTopic ?? "",
                }),
        }),
      },
    });
  }

  /** What the server answered to the last attach (consumer name, type, partitions). */
  get attached(): Attached | undefined {
    return this.attachedInfo;
  }

  /** Failover: the role as last announced by the server (undefined before any announcement). */
  get activeState(): ActiveState | undefined {
    return this.active;
  }

  /** Calls `listener` on every failover role announcement; returns a function that unsubscribes. */
  onActiveStatus(listener: (state: ActiveState) => void): () => void {
    this.activeListeners.add(listener);
    return () => this.activeListeners.delete(listener);
  }

  /** @internal */
  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  /**
   * Runs `handler` on every event, one at a time, inside the event's
   * processing span, until `signal` aborts or the subscription ends. The
   * handler resolving acks the event; throwing or rejecting nacks it with the
   * error's message as the reason (it is redelivered with backoff and
   * dead-lettered after the policy's max attempts) and logs it; the loop goes
   * on either way. Resolves after closing (final acks applied); rejects with
   * the HeraldError that ended the subscription if it failed for good.
   */
  async run(handler: Handler<T>, options: RunOptions = {}): Promise<void> {
    const { signal } = options;
    const onAbort = () => void this.close();
    if (signal?.aborted) {
      await this.close();
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        const envelope = await this.next();
        if (envelope === undefined) {
          break;
        }
        try {
          await otelContext.with(envelope.context, () => handler(envelope));
          envelope.ack();
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error);
          if (!envelope.settled) {
            envelope.span.recordException(error instanceof Error ? error : String(error));
          }
          this.client.logger.warn(
            `herald: handler failed on event ${envelope.id} (${this.topic}/${this.subscription}, attempt ${envelope.deliveryAttempt}); nacking: ${reason}`,
          );
          envelope.nack({ reason });
        }
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      await this.close();
    }
  }

  /** The envelopes as an async iterator; settle each with ack or nack. Breaking out of the loop closes the consumer. */
  [Symbol.asyncIterator](): AsyncIterator<Envelope<T>> {
    return {
      next: async (): Promise<IteratorResult<Envelope<T>>> => {
        const envelope = await this.next();
        return envelope === undefined ? { value: undefined, done: true } : { value: envelope, done: false };
      },
      return: async (): Promise<IteratorResult<Envelope<T>>> => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /**
   * The next decoded envelope; undefined once the consumer is closed or the
   * server ended the subscription. Rejects with a HeraldError when the
   * stream failed for good (not transient, or reconnect turned off).
   */
  async next(): Promise<Envelope<T> | undefined> {
    for (;;) {
      const delivery = await this.nextDelivery();
      if (delivery === undefined) {
        return undefined;
      }
      const [event, acker] = delivery;
      let value: T;
      try {
        value = this.binding.decode(event.event?.data ?? new Uint8Array());
      } catch (error) {
        const reason = `cannot decode event ${event.event?.id ?? ""} as ${this.binding.fullName}: ${
          error instanceof Error ? error.message : String(error)
        }`;
        this.client.logger.warn(`herald: nacking an event that does not decode: ${reason}`);
        acker.finish(
          create(SubscribeRequestSchema, {
            request: { case: "nack", value: { ackHandles: [event.ackHandle], reason } },
          }),
        );
        continue;
      }
      const parent = extractContext(this.client.propagator, event.event?.attributes ?? {});
      const { span, context } = startProcessSpan(
        parent,
        event.topic,
        this.subscription,
        event.event?.id ?? "",
        event.deliveryAttempt,
      );
      return new Envelope(value, event, acker, span, context);
    }
  }

  /**
   * Half-closes the stream and waits (up to 5 s) for the server to end it,
   * so acks already sent are applied. Envelopes settled later are dropped
   * (and redelivered).
   */
  close(): Promise<void> {
    if (this.closed === undefined) {
      this.stopping = true;
      this.wakeSleep?.();
      this.closed = this.shutdown();
    }
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (session !== undefined) {
      session.requests.close();
      const drain = (async () => {
        try {
          for (;;) {
            const result = await read(session);
            if (result.done) {
              break;
            }
          }
        } catch {
          // Ended with an error: nothing more to apply.
        }
      })();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS, "timeout");
      });
      if ((await Promise.race([drain, timeout])) === "timeout") {
        this.client.logger.warn("herald: the server did not end the subscription stream within 5 s");
      }
      clearTimeout(timer);
      session.abort.abort();
    }
    for (const listener of this.closeListeners) {
      listener();
    }
  }

  /** @internal Opens a stream and waits for Attached (rejects with the server's error). */
  async attach(): Promise<void> {
    const requests = new RequestQueue<SubscribeRequest>(mergeRequests);
    requests.push(this.attachMessage);
    const abort = new AbortController();
    const responses = this.client.rawSubscriber
      .subscribe(requests, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const session: Session = {
      requests,
      responses,
      abort,
      acker: new Acker(requests, Math.max(1, Math.floor(this.window / 4))),
      queue: [],
      head: 0,
      pending: undefined,
    };
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.client.requestTimeoutMs);
    try {
      for (;;) {
        const result = await read(session);
        if (result.done) {
          throw new HeraldError("the server ended the stream before attaching", { grpcCode: Code.Unavailable });
        }
        const message = result.value.response;
        if (message.case === "attached") {
          this.attachedInfo = message.value;
          break;
        }
        if (message.case === "events") {
          pushDecoded(session.queue, message.value.events);
        } else if (message.case === "activeStatus") {
          this.announce(message.value);
        }
      }
    } catch (error) {
      abort.abort();
      requests.close();
      if (timedOut) {
        throw new HeraldError(`no answer to the attach within ${this.client.requestTimeoutMs} ms`, {
          grpcCode: Code.DeadlineExceeded,
          cause: error,
        });
      }
      throw HeraldError.from(error);
    } finally {
      clearTimeout(timer);
    }
    if (this.stopping) {
      // Closed while re-attaching: nothing will read this stream.
      requests.close();
      abort.abort();
      return;
    }
    this.session = session;
  }

  /** The next delivery and the acker of its stream; undefined when stopped or ended. */
  private async nextDelivery(): Promise<[DeliveredEvent, Acker] | undefined> {
    let failures = 0;
    for (;;) {
      if (this.stopping) {
        return undefined;
      }
      const session = this.session;
      if (session === undefined) {
        if (this.closed !== undefined || !this.reconnect) {
          return undefined;
        }
        await this.sleep(reconnectDelay(this.client.reconnect, failures));
        if (this.stopping) {
          return undefined;
        }
        try {
          await this.attach();
          this.client.logger.info(`herald: re-attached to ${this.topic}/${this.subscription}`);
          failures = 0;
        } catch (error) {
          const herald = HeraldError.from(error);
          if (!herald.transient) {
            throw herald;
          }
          this.client.logger.debug(`herald: re-attach failed; retrying: ${herald.message}`);
          failures++;
        }
        continue;
      }
      if (session.head < session.queue.length) {
        const delivery = session.queue[session.head++] as DeliveredEvent;
        if (session.head === session.queue.length) {
          session.queue = [];
          session.head = 0;
        }
        return [delivery, session.acker];
      }
      let result: IteratorResult<SubscribeResponseRaw>;
      try {
        result = await read(session);
      } catch (error) {
        if (this.stopping) {
          return undefined;
        }
        const herald = HeraldError.from(error);
        this.dropSession(session);
        if (this.reconnect && herald.transient) {
          this.client.logger.warn(
            `herald: subscription stream ${this.topic}/${this.subscription} failed; re-attaching: ${herald.message}`,
          );
          continue;
        }
        throw herald;
      }
      if (this.stopping) {
        return undefined;
      }
      if (result.done) {
        this.dropSession(session);
        return undefined;
      }
      const message = result.value.response;
      switch (message.case) {
        case "events":
          pushDecoded(session.queue, message.value.events);
          break;
        case "activeStatus":
          this.announce(message.value);
          break;
        case "error":
          this.client.logger.warn(
            `herald: subscription request refused (${HeraldError.fromDetail(message.value).codeName}): ${message.value.message}`,
          );
          break;
        case "ackResult":
          this.client.logger.debug(
            `herald: acks not applied: ${message.value.invalidHandles.length} invalid, ${message.value.staleHandles.length} stale`,
          );
          break;
        default:
          break;
      }
    }
  }

  private dropSession(session: Session): void {
    if (this.session === session) {
      this.session = undefined;
    }
    session.requests.close();
    session.abort.abort();
  }

  private announce(status: { active: boolean; activeConsumer: string; epoch: bigint; partitions: number[] }): void {
    const state: ActiveState = {
      active: status.active,
      activeConsumer: status.activeConsumer,
      epoch: status.epoch,
      partitions: [...status.partitions],
    };
    this.active = state;
    for (const listener of this.activeListeners) {
      try {
        listener(state);
      } catch (error) {
        this.client.logger.error("herald: onActiveStatus listener threw", error);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleep = done;
    });
  }
}

/** Decodes a batch's encoded deliveries onto `queue`. */
function pushDecoded(queue: DeliveredEvent[], events: Uint8Array[]): void {
  for (const bytes of events) {
    queue.push(decodeDelivered(bytes));
  }
}

/** The next response of `session`, shared by concurrent readers. */
function read(session: Session): Promise<IteratorResult<SubscribeResponseRaw>> {
  if (session.pending === undefined) {
    const pending = session.responses.next();
    session.pending = pending;
    const clear = () => {
      if (session.pending === pending) {
        session.pending = undefined;
      }
    };
    pending.then(clear, clear);
  }
  return session.pending;
}

function subscriptionType(kind: SubscriptionKind): SubscriptionType {
  switch (kind) {
    case "exclusive":
      return SubscriptionType.EXCLUSIVE;
    case "shared":
      return SubscriptionType.SHARED;
    case "failover":
      return SubscriptionType.FAILOVER;
    case "key_shared":
      return SubscriptionType.KEY_SHARED;
    default:
      throw new TypeError(
        `unknown subscription type ${JSON.stringify(kind)}: use "exclusive", "shared", "failover" or "key_shared"`,
      );
  }
}

/** @internal The Position message of `position`. */
export function positionOf(position: StartPosition): Position {
  if (position === "earliest") {
    return create(PositionSchema, { kind: { case: "earliest", value: create(EmptySchema) } });
  }
  if (position === "latest") {
    return create(PositionSchema, { kind: { case: "latest", value: create(EmptySchema) } });
  }
  if (typeof position === "object" && "offsets" in position) {
    const offsets: { [partition: number]: bigint } = {};
    for (const [partition, offset] of Object.entries(position.offsets)) {
      offsets[Number(partition)] = BigInt(offset);
    }
    return create(PositionSchema, { kind: { case: "offsets", value: { offsets } } });
  }
  if (typeof position === "object" && "timestamp" in position) {
    return create(PositionSchema, { kind: { case: "timestamp", value: timestampFromDate(position.timestamp) } });
  }
  throw new TypeError(
    `unknown position ${JSON.stringify(position)}: use "earliest", "latest", { offsets } or { timestamp }`,
  );
}

/** A protobuf Duration of `ms` milliseconds. */
export function durationOf(ms: number): Duration {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`a duration must be a non-negative number of milliseconds, not ${ms}`);
  }
  const whole = Math.floor(ms);
  return create(DurationSchema, {
    seconds: BigInt(Math.floor(whole / 1000)),
    nanos: (whole % 1000) * 1_000_000 + Math.round((ms - whole) * 1_000_000),
  });
}
