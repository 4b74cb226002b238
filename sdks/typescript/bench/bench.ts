/**
 * Producer and consumer throughput against a running broker, 100-byte events:
 *   node dist/bench/bench.js ENDPOINT [EVENTS]
 * Producer: batching publish() calls with up to WINDOW outstanding.
 * Consumer: consumer.run with one ack per event.
 * A third argument `produce` skips the consumer (for profiling).
 */
import { HeraldClient } from "@herald/sdk";
import { UserSignedUpEvent } from "../gen/acme/signup/v1/signup_herald.js";

const [endpoint, eventsArg = "200000", only = "both"] = process.argv.slice(2);
if (endpoint === undefined) {
  console.error("usage: bench.sh ENDPOINT [EVENTS]");
  process.exit(2);
}
const total = Number(eventsArg);
const WINDOW = 2000;
const topic = `bench.ts.${Date.now()}`;
const client = await HeraldClient.connect({ endpoint });

// 100 bytes of payload: user_id (2 + 10) + email (2 + 86).
const email = `${"x".repeat(74)}@example.com`;
const event = (i: number) => ({ userId: `u${String(i).padStart(9, "0")}`, email });
if (UserSignedUpEvent.encode(UserSignedUpEvent.create(event(0))).length !== 100) {
  throw new Error("the bench event is not 100 bytes");
}

const producer = client.producer(UserSignedUpEvent, { topic, maxBatch: 1000, maxInFlight: 8, lingerMs: 1 });
const cpuMs = (from: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(from);
  return (used.user + used.system) / 1000;
};
let cpu = process.cpuUsage();
let started = performance.now();
let next = 0;
async function lane(): Promise<void> {
  while (next < total) {
    const batch: Promise<unknown>[] = [];
    for (let i = 0; i < 500 && next < total; i++) batch.push(producer.publish(event(next++)));
    await Promise.all(batch);
  }
}
await Promise.all(Array.from({ length: WINDOW / 500 }, lane));
let seconds = (performance.now() - started) / 1000;
const stats = producer.stats();
console.log(
  `producer: ${Math.round(total / seconds)} events/s (${total} events in ${seconds.toFixed(2)} s, ${stats.requests} requests; ${Math.round((total / cpuMs(cpu)) * 1000)} events per CPU-second of this process)`,
);
await producer.close();
if (only === "produce") {
  await client.close();
  process.exit(0);
}

const consumer = await client.subscribe(UserSignedUpEvent, {
  topic,
  subscription: "bench",
  type: "exclusive",
  position: "earliest",
  credits: 5000,
});
const stop = new AbortController();
let consumed = 0;
cpu = process.cpuUsage();
started = performance.now();
await consumer.run(
  () => {
    if (++consumed >= total) stop.abort();
  },
  { signal: stop.signal },
);
seconds = (performance.now() - started) / 1000;
console.log(
  `consumer: ${Math.round(consumed / seconds)} events/s (${consumed} events in ${seconds.toFixed(2)} s, ack per event; ${Math.round((consumed / cpuMs(cpu)) * 1000)} events per CPU-second of this process)`,
);
await client.close();
