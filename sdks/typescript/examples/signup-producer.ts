// Publishes user sign-ups: node dist/examples/signup-producer.js [ENDPOINT] [COUNT]
import { HeraldClient } from "@herald/sdk";
import { newUserSignedUpProducer } from "../gen/acme/signup/v1/signup_herald.js";

const [endpoint = "http://127.0.0.1:50051", count = "3"] = process.argv.slice(2);
const client = await HeraldClient.connect({ endpoint });
const producer = newUserSignedUpProducer(client);
for (let i = 1; i <= Number(count); i++) {
  const receipt = await producer.publish({ userId: `user-${i}`, email: `user-${i}@example.com` });
  console.log(`published user-${i} at ${receipt.partition}:${receipt.offset} (id ${receipt.id})`);
}
await client.close(); // flushes the producer
