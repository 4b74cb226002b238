// The alerting service: a shared subscription on route allocations that asks
// for a driver alert per allocation. An allocation without a driver fails
// every attempt and ends in the dead-letter topic after 3.
// node dist/examples/route-alerting.js [ENDPOINT] [ALERTS]   (runs until Ctrl-C, or ALERTS alerts)
import { HeraldClient } from "@herald/sdk";
import {
  newDriverAlertRequestedProducer,
  subscribeRouteAllocationRecorded,
} from "../gen/acme/transport/v1/transport_herald.js";

const [endpoint = "http://127.0.0.1:50051", alerts = "Infinity"] = process.argv.slice(2);
// A service started beside the broker: wait up to 30 s for it to come up
// (without waitForServerMs a refused connection fails connect at once).
const client = await HeraldClient.connect({ endpoint, waitForServerMs: 30_000 });
const driverAlerts = newDriverAlertRequestedProducer(client);
const allocations = await subscribeRouteAllocationRecorded(client, {
  subscription: "alerting",
  type: "shared",
  position: "earliest",
  redelivery: { minBackoffMs: 100, maxAttempts: 3, deadLetterTopic: "transport.route-allocations.alerting.dlq" },
});
const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
process.once("SIGTERM", () => stop.abort());
let sent = 0;
await allocations.run(
  async ({ value: allocation }) => {
    if (allocation.driverId === "") throw new Error(`route ${allocation.routeId} has no driver`);
    await driverAlerts.publish({
      driverId: allocation.driverId,
      routeId: allocation.routeId,
      message: `You drive ${allocation.routeId} with ${allocation.vehicleId}`,
    });
    console.log(`alerted ${allocation.driverId} about ${allocation.routeId}`);
    if (++sent >= Number(alerts)) stop.abort();
  },
  { signal: stop.signal },
);
await client.close();
