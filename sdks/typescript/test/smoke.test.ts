import { test } from "node:test";
import assert from "node:assert/strict";
import { HeraldClient } from "@herald/sdk";
import { UserSignedUpEvent } from "../gen/acme/signup/v1/signup_herald.js";
import { HeraldServer } from "./herald.js";

test("smoke", async () => {
  const server = await HeraldServer.start();
  const client = await HeraldClient.connect({ endpoint: server.endpoint });
  try {
    const producer = client.producer(UserSignedUpEvent);
    const r = await producer.publish({ userId: "u1", email: "a@b" });
    console.error(r);
    const consumer = await client.subscribe(UserSignedUpEvent, { subscription: "s", position: "earliest" });
    for await (const env of consumer) {
      console.error(env.value, env.id, env.key, env.attributes);
      assert.equal(env.value.userId, "u1");
      env.ack();
      break;
    }
  } finally {
    await client.close();
    await server.stop();
  }
});
