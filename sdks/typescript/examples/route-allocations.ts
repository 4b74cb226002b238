// Records route allocations; the one with no driver is poison:
// node dist/examples/route-allocations.js [ENDPOINT]
import { HeraldClient } from "@herald/sdk";
import { newRouteAllocationRecordedProducer } from "../gen/acme/transport/v1/transport_herald.js";

const [endpoint = "http://127.0.0.1:50051"] = process.argv.slice(2);
const client = await HeraldClient.connect({ endpoint });
const allocations = newRouteAllocationRecordedProducer(client);
await Promise.all([
  allocations.publish({ routeId: "route-1", driverId: "driver-7", vehicleId: "van-3" }),
  allocations.publish({ routeId: "route-2", driverId: "", vehicleId: "van-4" }), // poison: no driver
  allocations.publish({ routeId: "route-3", driverId: "driver-9", vehicleId: "truck-1" }),
]);
console.log("recorded 3 route allocations");
await client.close();
