"""The route-allocation flow: allocations are recorded; the alerting
service (a shared subscription, so it scales out) asks for a driver alert per
allocation. An allocation without a driver is poison: the handler rejects
it, Herald redelivers it with backoff and, after 3 attempts, moves it to the
dead-letter topic with the reason.

    sdks/python/examples/run.sh route_allocation.py http://127.0.0.1:50551
"""

import asyncio
import sys

from acme.transport.v1.transport_herald import (
    ROUTE_ALLOCATION_RECORDED,
    driver_alert_requested_consumer,
    driver_alert_requested_producer,
    route_allocation_recorded_consumer,
    route_allocation_recorded_producer,
)
from acme.transport.v1.transport_pb2 import DriverAlertRequested, RouteAllocationRecorded

import herald

ALLOCATIONS = [
    RouteAllocationRecorded(route_id="route-1", driver_id="driver-a", vehicle_id="van-7"),
    RouteAllocationRecorded(route_id="route-2", driver_id="driver-b", vehicle_id="van-9"),
    RouteAllocationRecorded(route_id="route-3", driver_id="", vehicle_id="van-3"),  # poison
]
DLQ = f"{ROUTE_ALLOCATION_RECORDED.topic}.alerting.dlq"


async def main(endpoint: str) -> tuple[list[str], list[str]]:
    async with herald.Client(endpoint) as client:
        # The allocation service records allocations.
        async with route_allocation_recorded_producer(client) as allocations:
            for allocation in ALLOCATIONS:
                await allocations.publish(allocation)

        # The alerting service: a shared subscription with a dead-letter policy.
        alerting = route_allocation_recorded_consumer(
            client, "alerting",
            type=herald.SubscriptionType.SHARED,
            initial_position=herald.Position.EARLIEST,
            redelivery=herald.Redelivery(min_backoff=0.1, max_backoff=0.5, max_delivery_attempts=3),
        )
        alerts = driver_alert_requested_producer(client)

        async def on_allocation(event: herald.Envelope[RouteAllocationRecorded]) -> None:
            allocation = event.value
            if not allocation.driver_id:
                raise herald.Reject(f"route {allocation.route_id} has no driver")
            await alerts.publish(DriverAlertRequested(
                driver_id=allocation.driver_id, route_id=allocation.route_id,
                message=f"you drive {allocation.route_id} with {allocation.vehicle_id}"))

        # Drivers' phones get the alerts; operations watch the dead letters.
        alerted: list[str] = []
        dead: list[str] = []
        phones = driver_alert_requested_consumer(client, "phones", initial_position=herald.Position.EARLIEST)
        dead_letters = route_allocation_recorded_consumer(
            client, "operations", topic=DLQ, initial_position=herald.Position.EARLIEST)

        async def on_alert(event: herald.Envelope[DriverAlertRequested]) -> None:
            print(f"alert for {event.value.driver_id}: {event.value.message}")
            alerted.append(event.value.route_id)
            if len(alerted) == 2:
                await phones.close()

        async def on_dead_letter(event: herald.Envelope[RouteAllocationRecorded]) -> None:
            print(f"dead letter {event.value.route_id}: {event.attributes['herald_dlq_reason']}")
            dead.append(event.value.route_id)
            await dead_letters.close()

        running = asyncio.create_task(alerting.run(on_allocation))
        await asyncio.gather(phones.run(on_alert), dead_letters.run(on_dead_letter))
        await alerting.close()
        await running
        await alerts.close()
        return alerted, dead


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:50551"))
