/**
 * Herald's TypeScript SDK: typed, batching producers and consumers for the
 * Herald event broker over gRPC (Connect, HTTP/2), with W3C trace context
 * propagation through OpenTelemetry.
 *
 * ```ts
 * import { HeraldClient } from "@herald/sdk";
 * import { UserSignedUpEvent } from "./gen/acme/signup/v1/signup_herald.js";
 *
 * const client = await HeraldClient.connect({ endpoint: "http://127.0.0.1:50051" });
 * const producer = client.producer(UserSignedUpEvent);
 * await producer.publish({ userId: "u1", email: "ada@example.com" });
 *
 * const consumer = await client.subscribe(UserSignedUpEvent, { subscription: "welcome" });
 * await consumer.run(async (env) => console.log(env.value.userId));
 * ```
 *
 * @module
 */
export { DEFAULT_KEEPALIVE, DEFAULT_RECONNECT, HeraldClient, reconnectDelay, stderrLogger } from "./client.js";
export type { ClientOptions, KeepaliveOptions, Logger, ReconnectPolicy } from "./client.js";
export { Consumer, Envelope, durationOf } from "./consumer.js";
export type {
  ActiveState,
  ConsumerOptions,
  Handler,
  NackOptions,
  RedeliveryOptions,
  RunOptions,
  StartPosition,
  SubscriptionKind,
} from "./consumer.js";
export { ErrorCode, GrpcCode, HeraldError, errorCodeName } from "./errors.js";
export { CONTENT_TYPE_PROTOBUF, defineEvent } from "./event.js";
export type { EventBinding, EventSpec, Receipt } from "./event.js";
export { Producer } from "./producer.js";
export type { ProducerOptions, ProducerStats, PublishOptions } from "./producer.js";
export type { ReadOptions, Recorded } from "./reader.js";
export { TRACER_NAME, defaultPropagator } from "./tracing.js";
