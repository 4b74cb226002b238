/**
 * {@link Producer}: typed publishing, batched over one `PublishStream`.
 *
 * Calls queue their events; a batch goes out when `maxBatch` events are
 * queued or `lingerMs` after the first, as one numbered request, with at most
 * `maxInFlight` requests unanswered. Each response is split back to the calls
 * of its request. When the broker refuses one event of a request shared by
 * several calls (too large, malformed), only the call that gave it fails; the
 * others are sent again. When the stream breaks (connection lost, broker
 * restarting), every unanswered request is sent again, in order, on a new
 * stream after the reconnect policy's backoff, until each call's deadline;
 * the broker deduplicates event ids, so each event is stored once.
 *
 * @module
 */
import type { Message, MessageInitShape } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { Code } from "@connectrpc/connect";
import type { Context } from "@opentelemetry/api";
import { v7 as uuidv7 } from "uuid";
import { type HeraldClient, describeFailure, reconnectDelay } from "./client.js";
import { ErrorCode, HeraldError } from "./errors.js";
import { CONTENT_TYPE_PROTOBUF, checkTopicName, receiptOf, type EventBinding, type Receipt } from "./event.js";
import type { PublishStreamRequestRaw } from "./gen/herald/sdk/internal/v1/raw_pb.js";
import type { PublishStreamResponse } from "./gen/herald/v1/publisher_pb.js";
import { RequestQueue } from "./queue.js";
import { activeContext, injectContext } from "./tracing.js";
import { encodeEvent } from "./wire.js";

/** Batching and routing settings of a {@link Producer}. */
export interface ProducerOptions {
  /** Publish to this topic instead of the binding's. */
  topic?: string;
  /** The CloudEvents `source` instead of the binding's. */
  source?: string;
  /** How long the first queued event waits for company. Default 1 ms; 0 sends at the next turn of the event loop. */
  lingerMs?: number;
  /** Most events in one request (a larger `publishBatch` still goes whole). Default 1000. */
  maxBatch?: number;
  /** Most requests sent and not yet answered. Default 8. */
  maxInFlight?: number;
  /** Most events queued and not yet sent; past it `publish` waits for room (in call order). Default 10 × maxBatch. */
  maxQueued?: number;
  /**
   * Bound on each publish call, resends after a lost connection included.
   * Default the client's `requestTimeoutMs`.
   */
  requestTimeoutMs?: number;
}

/** Per-publish additions to the envelope. */
export interface PublishOptions {
  /** Extension attributes for this event (`traceparent`/`tracestate` are added from the context). */
  attributes?: Record<string, string>;
  /** CloudEvents `subject`. */
  subject?: string;
  /** The event id instead of a fresh UUIDv7 (the broker deduplicates on ids the producer chose). */
  id?: string;
  /** The ordering key instead of the binding's. */
  key?: string;
  /** CloudEvents `time` instead of now. */
  time?: Date;
  /** The OpenTelemetry context to inject instead of the active one. */
  context?: Context;
  /** Bound on this call (resends included) instead of the producer's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** What a producer has sent so far. */
export interface ProducerStats {
  /** PublishStream requests sent (resends included). */
  requests: number;
  /** Events sent in them (resends included). */
  events: number;
  /** Times the stream broke with requests unanswered, which were then sent again. */
  resends: number;
}

/** One publish or publishBatch call waiting for its answer. */
interface Call {
  /** The events' ids, assigned once (resends carry the same ids). */
  ids: string[];
  /** Encoded herald.v1.Event each. */
  events: Uint8Array[];
  resolve: (receipts: Receipt[]) => void;
  reject: (error: HeraldError) => void;
  timeoutMs: number;
  deadline: number;
  settled: boolean;
}

/** One encoded event and its id. */
interface Encoded {
  id: string;
  bytes: Uint8Array;
}

/** An open PublishStream. */
interface OpenStream {
  requests: RequestQueue<PublishStreamRequestRaw>;
  abort: AbortController;
  ended: Promise<void>;
}

/**
 * Publishes `T` events. Each gets a UUIDv7 `id`, `time` = now, the binding's
 * `type` and `source`, `data_content_type = "application/protobuf"`,
 * `data_schema` = the message's full name, the binding's key, and the
 * active OpenTelemetry context as `traceparent`/`tracestate` attributes.
 *
 * When the connection breaks (broker restart, network, keepalive timeout),
 * every unanswered request is sent again, in order, on a new stream once the
 * broker is reachable (with the client's reconnect backoff), until each
 * call's deadline (`timeoutMs`, else `requestTimeoutMs`). That is safe
 * because the broker deduplicates event ids: an event stored before the
 * break comes back with `duplicate` set and its original offset. A call
 * fails before its deadline only when the broker refuses it (e.g.
 * `EVENT_TOO_LARGE`, `TOPIC_NOT_FOUND`).
 *
 * ```ts
 * const producer = client.producer(UserSignedUpEvent, { lingerMs: 2 });
 * const receipt = await producer.publish({ userId: "u1" });
 * console.log(receipt.partition, receipt.offset);
 * await producer.close();
 * ```
 */
export class Producer<T extends Message> {
  /** The topic published to. */
  readonly topic: string;
  /** The CloudEvents source set on every event. */
  readonly source: string;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  /** Calls waiting for room in the queue (maxQueued). */
  private readonly waiting: Call[] = [];
  private readonly requestTimeoutMs: number;
  private readonly queue: Call[] = [];
  private queuedEvents = 0;
  private readonly inFlight = new Map<number, Call[]>();
  private nextSequence = 0;
  private stream: OpenStream | undefined;
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private due = false;
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private readonly closeListeners: (() => void)[] = [];
  private readonly counters: ProducerStats = { requests: 0, events: 0, resends: 0 };
  /** After a failure: nothing is sent before `retryAt`; `failures` in a row set the backoff. */
  private retryAt = 0;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Why the stream last broke; undefined once it works again. */
  private lastFailure: HeraldError | undefined;

  /** Use {@link HeraldClient.producer}. */
  constructor(
    private readonly client: HeraldClient,
    private readonly binding: EventBinding<T>,
    options: ProducerOptions = {},
  ) {
    this.topic = options.topic ?? binding.topic;
    checkTopicName(this.topic);
    this.source = options.source ?? binding.source;
    this.lingerMs = Math.max(0, options.lingerMs ?? 1);
    this.maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 1000));
    this.maxInFlight = Math.max(1, Math.floor(options.maxInFlight ?? 8));
    this.maxQueued = Math.max(this.maxBatch, Math.floor(options.maxQueued ?? 10 * this.maxBatch));
    this.requestTimeoutMs = options.requestTimeoutMs ?? client.requestTimeoutMs;
  }

  /**
   * Publishes one event (a message or an init object of `T`); resolves with
   * where it was stored once it is durable. Rejects with a HeraldError, e.g.
   * `EVENT_TOO_LARGE` or `TOPIC_NOT_FOUND`, affecting only this call, at
   * once. Across a lost connection the event is sent again until the call's
   * timeout; past it the call rejects with `DEADLINE_EXCEEDED`, the last
   * connection failure in the message and as `cause`, and the event id in
   * `metadata.id` (the event may or may not be stored: publishing it again
   * with `{ id }` is safe).
   */
  async publish(event: MessageInitShape<GenMessage<T>>, options?: PublishOptions): Promise<Receipt> {
    const receipts = await this.send([this.envelope(event, options)], options?.timeoutMs);
    const receipt = receipts[0];
    if (receipt === undefined) {
      throw new HeraldError("the broker returned no result for the event", { grpcCode: Code.Internal });
    }
    return receipt;
  }

  /**
   * Publishes `events` in one request (stored whole or not at all per
   * partition); resolves with their receipts in order.
   */
  async publishBatch(events: MessageInitShape<GenMessage<T>>[], options?: PublishOptions): Promise<Receipt[]> {
    if (events.length === 0) {
      return [];
    }
    return this.send(
      events.map((e) => this.envelope(e, options)),
      options?.timeoutMs,
    );
  }

  /** Waits until every publish made so far is answered. */
  async flush(): Promise<void> {
    this.due = true;
    this.pump();
    if (!this.hasPending()) {
      return;
    }
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Flushes, waits for the answers, then half-closes the stream. Later
   * publishes fail with a HeraldError (FAILED_PRECONDITION).
   */
  async close(): Promise<void> {
    if (this.closing) {
      return this.flush();
    }
    this.closing = true;
    await this.flush();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const stream = this.stream;
    this.stream = undefined;
    if (stream !== undefined) {
      stream.requests.close();
      const timeout = new Promise<void>((resolve) => setTimeout(resolve, 5_000).unref());
      await Promise.race([stream.ended, timeout]);
      stream.abort.abort();
    }
    if (this.sweeper !== undefined) {
      clearInterval(this.sweeper);
    }
    for (const listener of this.closeListeners) {
      listener();
    }
  }

  /** Requests and events sent so far. */
  stats(): ProducerStats {
    return { ...this.counters };
  }

  /** @internal */
  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  /** The encoded wire envelope (`herald.v1.Event`) of `event`, with its id (assigned here, once). */
  private envelope(event: MessageInitShape<GenMessage<T>>, options: PublishOptions | undefined): Encoded {
    const value = this.binding.create(event);
    const attributes: Record<string, string> = { ...options?.attributes };
    injectContext(this.client.propagator, options?.context ?? activeContext(), attributes);
    const ms = options?.time !== undefined ? options.time.getTime() : Date.now();
    if (!Number.isFinite(ms)) {
      throw new TypeError("publish option `time` is an invalid Date");
    }
    const seconds = Math.floor(ms / 1000);
    const id = options?.id ?? uuidv7();
    const bytes = encodeEvent({
      id,
      source: this.source,
      type: this.binding.type,
      subject: options?.subject ?? "",
      timeSeconds: seconds,
      timeNanos: (ms - seconds * 1000) * 1_000_000,
      dataContentType: CONTENT_TYPE_PROTOBUF,
      dataSchema: this.binding.fullName,
      attributes,
      key: options?.key ?? this.binding.key(value),
      data: this.binding.encode(value),
    });
    return { id, bytes };
  }

  private send(events: Encoded[], timeoutMs: number | undefined): Promise<Receipt[]> {
    if (this.closing) {
      return Promise.reject(
        new HeraldError(`the producer for topic ${this.topic} is closed`, { grpcCode: Code.FailedPrecondition }),
      );
    }
    if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      return Promise.reject(new RangeError(`publish option timeoutMs must be a positive number of milliseconds, not ${timeoutMs}`));
    }
    const timeout = timeoutMs ?? this.requestTimeoutMs;
    return new Promise<Receipt[]>((resolve, reject) => {
      const call: Call = {
        ids: events.map((e) => e.id),
        events: events.map((e) => e.bytes),
        resolve,
        reject,
        timeoutMs: timeout,
        deadline: Date.now() + timeout,
        settled: false,
      };
      this.startSweeper();
      if (this.queuedEvents >= this.maxQueued || this.waiting.length > 0) {
        // Bounded queue: wait, in call order, until batches have gone out.
        this.waiting.push(call);
        return;
      }
      this.admit(call);
      if (this.queuedEvents >= this.maxBatch) {
        this.pump();
      }
    });
  }

  /** Queues `call` for the next batch, arming the linger timer. */
  private admit(call: Call): void {
    this.queue.push(call);
    this.queuedEvents += call.events.length;
    if (this.timer === undefined && this.queuedEvents < this.maxBatch) {
      const fire = () => {
        this.timer = undefined;
        this.due = true;
        this.pump();
      };
      this.timer = this.lingerMs === 0 ? setImmediate(fire) : setTimeout(fire, this.lingerMs);
    }
  }

  /**
   * Admits waiting calls while there is room, and sends every batch that is
   * due while the in-flight limit allows (after a failure: once its backoff
   * has passed).
   */
  private pump(): void {
    for (;;) {
      while (this.waiting.length > 0 && this.queuedEvents < this.maxQueued) {
        this.admit(this.waiting.shift() as Call);
      }
      if (
        this.queue.length === 0 ||
        this.inFlight.size >= this.maxInFlight ||
        !(this.due || this.queuedEvents >= this.maxBatch)
      ) {
        break;
      }
      const wait = this.retryAt - Date.now();
      if (wait > 0) {
        // Backing off after a failure: try again then. A referenced timer,
        // so a process waiting for a publish does not exit meanwhile.
        this.retryTimer ??= setTimeout(() => {
          this.retryTimer = undefined;
          this.due = true;
          this.pump();
        }, wait);
        break;
      }
      this.sendBatch();
    }
    if (this.queue.length === 0 && this.waiting.length === 0) {
      this.due = false;
    }
    this.wakeIdle();
  }

  /** Whether any call is still unanswered. */
  private hasPending(): boolean {
    const open = (call: Call) => !call.settled;
    if (this.waiting.some(open) || this.queue.some(open)) {
      return true;
    }
    for (const calls of this.inFlight.values()) {
      if (calls.some(open)) {
        return true;
      }
    }
    return false;
  }

  /** Resolves `flush` waiters once nothing is pending. */
  private wakeIdle(): void {
    if (this.idleWaiters.length === 0 || this.hasPending()) {
      return;
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) {
      wake();
    }
  }

  /** Takes up to maxBatch events (at least one call) off the queue and sends them. */
  private sendBatch(): void {
    const calls: Call[] = [];
    let events: Uint8Array[] = [];
    let taken = 0;
    let count = 0;
    for (; taken < this.queue.length; taken++) {
      const next = this.queue[taken] as Call;
      if (count > 0 && count + next.events.length > this.maxBatch) {
        break;
      }
      this.queuedEvents -= next.events.length;
      if (!next.settled && next.deadline <= Date.now()) {
        fail([next], this.timeoutError(next));
      }
      if (next.settled) {
        continue; // timed out while queued
      }
      calls.push(next);
      count += next.events.length;
    }
    this.queue.splice(0, taken);
    if (calls.length === 1) {
      events = (calls[0] as Call).events;
    } else {
      events = new Array<Uint8Array>(count);
      let at = 0;
      for (const call of calls) {
        for (const event of call.events) {
          events[at++] = event;
        }
      }
    }
    if (calls.length === 0) {
      return;
    }
    const sequence = this.nextSequence++;
    this.counters.requests++;
    this.counters.events += events.length;
    const stream = this.openStream();
    this.inFlight.set(sequence, calls);
    // When the stream is already ending the push is dropped; its end sends
    // the request again (it is in flight).
    stream.requests.push({
      $typeName: "herald.sdk.internal.v1.PublishStreamRequestRaw",
      sequence: BigInt(sequence),
      topic: this.topic,
      events,
    });
  }

  private openStream(): OpenStream {
    if (this.stream !== undefined) {
      return this.stream;
    }
    const requests = new RequestQueue<PublishStreamRequestRaw>();
    const abort = new AbortController();
    const responses = this.client.rawPublisher.publishStream(requests, { signal: abort.signal });
    const stream: OpenStream = { requests, abort, ended: Promise.resolve() };
    stream.ended = (async () => {
      let failure: HeraldError;
      try {
        for await (const response of responses) {
          if (this.stream !== stream) {
            break; // dropped after a failure: its requests went again
          }
          this.answer(response);
        }
        failure = new HeraldError("the broker ended the publish stream", { grpcCode: Code.Unavailable });
      } catch (error) {
        failure = HeraldError.from(error);
      }
      requests.close();
      if (this.stream !== stream) {
        return; // dropped (after a failure, or by close)
      }
      this.stream = undefined;
      if (retryable(failure)) {
        this.broken(failure, []);
      } else {
        // Every request in flight went on this stream (a new one opens only
        // after this one is gone).
        for (const calls of this.inFlight.values()) {
          fail(calls, failure);
        }
        this.inFlight.clear();
      }
      this.pump();
    })();
    this.stream = stream;
    return stream;
  }

  /**
   * A failure that may pass (the stream or the connection broke, the broker
   * is restarting): drops the stream, puts `first` and then every unanswered
   * request's calls, in the order sent, ahead of what is queued, and waits
   * the reconnect delay before sending again.
   */
  private broken(failure: HeraldError, first: Call[]): void {
    const stream = this.stream;
    this.stream = undefined;
    if (stream !== undefined) {
      stream.requests.close();
      stream.abort.abort();
    }
    const again = [...first];
    for (const calls of this.inFlight.values()) {
      again.push(...calls);
    }
    this.inFlight.clear();
    const live = again.filter((call) => !call.settled);
    if (live.length > 0) {
      this.counters.resends++;
      this.queue.unshift(...live);
      this.queuedEvents += live.reduce((n, c) => n + c.events.length, 0);
      this.due = true;
    }
    this.lastFailure = failure;
    const delay = reconnectDelay(this.client.reconnect, this.failures++);
    this.retryAt = Date.now() + delay;
    this.client.logger.debug(
      `herald: the publish stream to ${this.topic} broke (${describeFailure(failure)}); ` +
        `sending ${live.length} unanswered calls again in ${Math.round(delay)} ms`,
    );
  }

  /** What a call gets when its deadline passes unanswered. */
  private timeoutError(call: Call): HeraldError {
    let message = `the broker did not confirm the publish within its timeout (${call.timeoutMs} ms)`;
    const last = this.lastFailure;
    if (last !== undefined) {
      message += `; it has not been reachable (last failure: ${describeFailure(last)})`;
    }
    const [only] = call.ids;
    if (call.ids.length === 1 && only !== undefined) {
      message +=
        `; event ${only} may or may not be stored: publishing it again with { id: ${JSON.stringify(only)} } ` +
        "is safe (the broker drops duplicate ids)";
    } else {
      message +=
        `; the ${call.ids.length} events may or may not be stored: publishing them again with the same ids ` +
        "is safe (the broker drops duplicate ids)";
    }
    return new HeraldError(message, {
      grpcCode: Code.DeadlineExceeded,
      metadata: call.ids.length === 1 && only !== undefined ? { id: only } : { ids: call.ids.join(",") },
      cause: last,
    });
  }

  /** Splits a response back to the calls of its request. */
  private answer(response: PublishStreamResponse): void {
    const sequence = Number(response.sequence);
    const calls = this.inFlight.get(sequence);
    if (calls === undefined) {
      this.client.logger.warn(`herald: publish response for an unknown request ${sequence}`);
      return;
    }
    this.inFlight.delete(sequence);
    if (response.error !== undefined && response.error.grpcCode === Code.Unavailable) {
      // Refused for now (the broker is shutting down): nothing of it was
      // stored; like a broken stream.
      this.broken(HeraldError.fromDetail(response.error), calls);
      this.pump();
      return;
    }
    this.failures = 0;
    this.retryAt = 0;
    this.lastFailure = undefined;
    if (response.error !== undefined) {
      const error = HeraldError.fromDetail(response.error);
      const culprit = culpritOf(error, calls);
      if (culprit === undefined) {
        fail(calls, error);
      } else {
        // Send the other calls again, in order, ahead of what is queued.
        const retry = calls.filter((call, i) => i !== culprit && !call.settled);
        fail([calls[culprit] as Call], error);
        this.queue.unshift(...retry);
        this.queuedEvents += retry.reduce((n, c) => n + c.events.length, 0);
        this.due = true;
      }
    } else {
      let at = 0;
      for (const call of calls) {
        const results = response.results.slice(at, at + call.events.length);
        at += call.events.length;
        if (!call.settled) {
          call.settled = true;
          call.resolve(results.map(receiptOf));
        }
      }
    }
    this.pump();
  }

  /** Fails calls whose requestTimeoutMs passed (checked every 250 ms while any are pending). */
  private startSweeper(): void {
    if (this.sweeper !== undefined) {
      return;
    }
    this.sweeper = setInterval(() => {
      const now = Date.now();
      let pending = 0;
      const check = (call: Call) => {
        if (!call.settled && call.deadline <= now) {
          fail([call], this.timeoutError(call));
        }
        if (!call.settled) {
          pending++;
        }
      };
      this.queue.forEach(check);
      this.waiting.forEach(check);
      for (const calls of this.inFlight.values()) {
        calls.forEach(check);
      }
      if (pending === 0 && this.sweeper !== undefined) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
      this.wakeIdle();
    }, 100);
    this.sweeper.unref();
  }
}

/** Which call of a shared request gave the one event the broker refused (by the `index` metadata). */
function culpritOf(error: HeraldError, calls: Call[]): number | undefined {
  if (calls.length < 2) {
    return undefined;
  }
  if (error.code !== ErrorCode.EVENT_TOO_LARGE && error.code !== ErrorCode.INVALID_EVENT) {
    return undefined;
  }
  const index = Number.parseInt(error.metadata["index"] ?? "", 10);
  if (!Number.isInteger(index)) {
    return undefined;
  }
  let end = 0;
  const found = calls.findIndex((call) => {
    end += call.events.length;
    return index < end;
  });
  return found < 0 ? undefined : found;
}

/**
 * Whether a broken stream's requests go again: a transport failure
 * (connection refused, reset or lost, keepalive timeout, stream reset), or
 * the broker saying "not now" (UNAVAILABLE: shutting down). A refusal by the
 * broker (its ErrorDetail with another code) fails the calls.
 */
function retryable(error: HeraldError): boolean {
  if (error.code !== ErrorCode.UNSPECIFIED) {
    return error.grpcCode === Code.Unavailable;
  }
  return error.transient;
}

function fail(calls: Call[], error: HeraldError): void {
  for (const call of calls) {
    if (!call.settled) {
      call.settled = true;
      call.reject(error);
    }
  }
}
