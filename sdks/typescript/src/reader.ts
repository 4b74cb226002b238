/**
 * Reading a topic without a subscription (no acks, no credits): event
 * sourcing, audit replay. {@link HeraldClient.read}.
 *
 * @module
 */
import type { Message } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { HeraldClient } from "./client.js";
import { positionOf, type StartPosition } from "./consumer.js";
import { HeraldError } from "./errors.js";
import { checkTopicName, dateOf, type EventBinding } from "./event.js";

/** Settings of {@link HeraldClient.read}. */
export interface ReadOptions {
  /** Read this topic instead of the binding's. */
  topic?: string;
  /** Where to start. Default "earliest". */
  position?: StartPosition;
  /** Partitions to read; default all. */
  partitions?: number[];
  /** Keep going as new events are published (until `signal` aborts). Default false. */
  follow?: boolean;
  /** Stop after this many events. Default no limit. */
  maxEvents?: number;
  /** Aborting it ends the read. */
  signal?: AbortSignal;
}

/** A stored event as read: the decoded value and its envelope. */
export interface Recorded<T extends Message> {
  value: T;
  id: string;
  type: string;
  source: string;
  subject: string;
  time: Date | undefined;
  dataContentType: string;
  dataSchema: string;
  key: string;
  attributes: Readonly<Record<string, string>>;
  topic: string;
  partition: number;
  offset: bigint;
  publishTime: Date | undefined;
}

/** @internal */
export async function* readTopic<T extends Message>(
  client: HeraldClient,
  binding: EventBinding<T>,
  options: ReadOptions,
): AsyncGenerator<Recorded<T>, void, undefined> {
  const topic = options.topic ?? binding.topic;
  checkTopicName(topic);
  const responses = client.subscriber.read(
    {
      topic,
      position: positionOf(options.position ?? "earliest"),
      partitions: options.partitions ?? [],
      follow: options.follow ?? false,
      maxEvents: BigInt(options.maxEvents ?? 0),
    },
    { signal: options.signal },
  );
  try {
    for await (const response of responses) {
      for (const delivered of response.events) {
        const event = delivered.event;
        let value: T;
        try {
          value = binding.decode(event?.data ?? new Uint8Array());
        } catch (error) {
          throw new HeraldError(
            `cannot decode event ${event?.id ?? ""} (${delivered.topic}/${delivered.partition}@${delivered.offset}) as ${binding.fullName}: ${error instanceof Error ? error.message : String(error)}`,
            { grpcCode: Code.DataLoss, cause: error },
          );
        }
        yield {
          value,
          id: event?.id ?? "",
          type: event?.type ?? "",
          source: event?.source ?? "",
          subject: event?.subject ?? "",
          time: dateOf(event?.time),
          dataContentType: event?.dataContentType ?? "",
          dataSchema: event?.dataSchema ?? "",
          key: event?.key ?? "",
          attributes: event?.attributes ?? {},
          topic: delivered.topic,
          partition: delivered.partition,
          offset: delivered.offset,
          publishTime: dateOf(delivered.publishTime),
        };
      }
    }
  } catch (error) {
    if (options.signal?.aborted === true) {
      return;
    }
    throw HeraldError.from(error);
  }
}
