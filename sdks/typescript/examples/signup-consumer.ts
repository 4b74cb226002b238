// Sends welcome emails for sign-ups: node dist/examples/signup-consumer.js [ENDPOINT] [COUNT]
// Stops after COUNT events, or on Ctrl-C.
import { HeraldClient } from "@herald/sdk";
import { subscribeUserSignedUp } from "../gen/acme/signup/v1/signup_herald.js";

const [endpoint = "http://127.0.0.1:50051", count = "3"] = process.argv.slice(2);
const client = await HeraldClient.connect({ endpoint, waitForServerMs: 30_000 }); // the broker may still be starting
const consumer = await subscribeUserSignedUp(client, { subscription: "welcome-email", position: "earliest" });
const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
let handled = 0;
await consumer.run(
  async (event) => {
    console.log(`welcome ${event.value.email} (user ${event.value.userId}, attempt ${event.deliveryAttempt})`);
    if (++handled >= Number(count)) stop.abort();
  },
  { signal: stop.signal },
);
await client.close();
