/**
 * Runs the examples (dist/examples) as programs against a real broker and
 * checks what they did through the SDK.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { HeraldClient } from "@herald/sdk";
import { DriverAlertRequestedEvent } from "../gen/acme/transport/v1/transport_herald.js";
import { HeraldServer } from "./herald.js";

const examples = fileURLToPath(new URL("../examples/", import.meta.url));
let server: HeraldServer;

before(async () => {
  server = await HeraldServer.start();
});
after(async () => {
  await server?.stop();
});

function start(example: string, ...args: string[]) {
  const child = spawn(process.execPath, [`${examples}${example}.js`, server.endpoint, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    async done(timeoutMs = 20_000): Promise<{ code: number | null; stdout: string }> {
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return { code, stdout };
    },
  };
}

test("sign-up producer and consumer", async () => {
  const produced = await start("signup-producer", "3").done();
  assert.equal(produced.code, 0);
  assert.match(produced.stdout, /published user-1 at 0:0 .*\npublished user-2 at 0:1 .*\npublished user-3 at 0:2 /);
  const consumed = await start("signup-consumer", "3").done();
  assert.equal(consumed.code, 0);
  for (const n of [1, 2, 3]) {
    assert.match(consumed.stdout, new RegExp(`welcome user-${n}@example.com \\(user user-${n}, attempt 1\\)`));
  }
});

test("route allocation alerts drivers; the allocation without a driver ends in the DLQ", async () => {
  const alerting = start("route-alerting");
  const recorded = await start("route-allocations").done();
  assert.equal(recorded.code, 0);

  const client = await HeraldClient.connect({ endpoint: server.endpoint });
  try {
    const alerts = await client.subscribe(DriverAlertRequestedEvent, { subscription: "check", position: "earliest" });
    const got: string[] = [];
    for await (const alert of alerts) {
      got.push(`${alert.key}:${alert.value.routeId}:${alert.value.message}`);
      alert.ack();
      if (got.length === 2) break;
    }
    assert.deepEqual(got.sort(), [
      "driver-7:route-1:You drive route-1 with van-3",
      "driver-9:route-3:You drive route-3 with truck-1",
    ]);
    const dead = await firstEvent(client, "transport.route-allocations.alerting.dlq");
    assert.equal(dead.key, "route-2");
    assert.equal(dead.attributes["herald_dlq_reason"], "route route-2 has no driver");
    assert.equal(dead.attributes["herald_dlq_attempts"], "3");
  } finally {
    await client.close();
    alerting.child.kill("SIGTERM");
  }
  const stopped = await alerting.done();
  assert.equal(stopped.code, 0, "the alerting service stops cleanly");
  assert.match(stopped.stdout, /alerted driver-7 about route-1/);
});

async function firstEvent(client: HeraldClient, topic: string) {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    try {
      for await (const response of client.subscriber.read({ topic, maxEvents: 1n })) {
        const event = response.events[0]?.event;
        if (event !== undefined) return event;
      }
    } catch {
      // not created yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing arrived on ${topic}`);
}
