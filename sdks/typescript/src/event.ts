/**
 * Event bindings: a Protobuf message type (a protoc-gen-es schema) bound to
 * its Herald topic, CloudEvents type and source, and ordering key. The
 * `*_herald.ts` files protoc-gen-herald generates call {@link defineEvent}
 * for every message with the `(herald.v1.event)` option.
 *
 * @module
 */
import type { Message, MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, isMessage, toBinary } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { PublishResult } from "./gen/herald/v1/publisher_pb.js";

/** The content type typed producers set on every event. */
export const CONTENT_TYPE_PROTOBUF = "application/protobuf";

/** Topic and subscription names: 1-249 characters of [A-Za-z0-9._-], not "." or "..". */
const NAME_RULE = /^[A-Za-z0-9._-]{1,249}$/;

/** Throws a TypeError naming the rule when `name` is not a valid topic name. */
export function checkTopicName(name: string, what = "topic"): void {
  if (!NAME_RULE.test(name) || name === "." || name === "..") {
    throw new TypeError(
      `invalid ${what} name ${JSON.stringify(name)}: use 1-249 characters of [A-Za-z0-9._-], not "." or ".."`,
    );
  }
}

/** What {@link defineEvent} needs besides the schema. */
export interface EventSpec<T extends Message> {
  /** The topic events of this type go to. */
  topic: string;
  /** The CloudEvents `type`; default the message's full name. */
  type?: string;
  /** The CloudEvents `source` producers set unless told otherwise. */
  source?: string;
  /** Reads the ordering key from an event; keyless when absent. */
  key?: (event: T) => string;
}

/**
 * A message type bound to Herald: everything a producer or consumer needs to
 * turn a `T` into a CloudEvents envelope and back. Build one with
 * {@link defineEvent} (protoc-gen-herald does it for you).
 */
export interface EventBinding<T extends Message> {
  /** The protoc-gen-es schema of `T`. */
  readonly schema: GenMessage<T>;
  /** The topic events of this type go to. */
  readonly topic: string;
  /** The CloudEvents `type`. */
  readonly type: string;
  /** The default CloudEvents `source`. */
  readonly source: string;
  /** The full Protobuf name, e.g. `acme.signup.v1.UserSignedUp` (the `data_schema` of published events). */
  readonly fullName: string;
  /** The event's ordering key ("" when keyless). */
  key(event: T): string;
  /** `event` as a message (an init object is completed with defaults). */
  create(event: MessageInitShape<GenMessage<T>>): T;
  /** Protobuf binary encoding of `event`. */
  encode(event: T): Uint8Array;
  /** Decodes a payload; throws on malformed input. */
  decode(data: Uint8Array): T;
}

/**
 * Binds the message type of `schema` to a topic, CloudEvents type and source,
 * and a key, for {@link HeraldClient.producer} and {@link HeraldClient.subscribe}:
 *
 * ```ts
 * export const UserSignedUpEvent = defineEvent(UserSignedUpSchema, {
 *   topic: "user.signup",
 *   type: "com.example.user.signed_up",
 *   source: "/services/signup",
 *   key: (m) => m.userId,
 * });
 * ```
 *
 * The message type `T` is inferred from the schema and flows into
 * `Producer<T>`, `Consumer<T>` and `Envelope<T>`.
 */
export function defineEvent<T extends Message>(schema: GenMessage<T>, spec: EventSpec<T>): EventBinding<T> {
  checkTopicName(spec.topic);
  const keyOf = spec.key;
  return Object.freeze({
    schema,
    topic: spec.topic,
    type: spec.type !== undefined && spec.type !== "" ? spec.type : schema.typeName,
    source: spec.source ?? "",
    fullName: schema.typeName,
    key: keyOf === undefined ? () => "" : (event: T) => keyOf(event),
    create: (event: MessageInitShape<GenMessage<T>>): T =>
      isMessage(event, schema) ? (event as T) : create(schema, event),
    encode: (event: T) => toBinary(schema, event),
    decode: (data: Uint8Array) => fromBinary(schema, data),
  });
}

/** Where a published event went. */
export interface Receipt {
  /** The event's id (the producer's UUIDv7, or the one given). */
  id: string;
  /** The partition it was stored in. */
  partition: number;
  /** Its offset in the partition (for a duplicate, the original's). */
  offset: bigint;
  /** True when the id was seen within the topic's dedup window: nothing was stored. */
  duplicate: boolean;
  /** When the broker stored it (the original, for a duplicate). */
  publishTime: Date | undefined;
}

/** @internal */
export function receiptOf(result: PublishResult): Receipt {
  return {
    id: result.id,
    partition: result.partition,
    offset: result.offset,
    duplicate: result.duplicate,
    publishTime: dateOf(result.publishTime),
  };
}

/** @internal */
export function dateOf(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}
