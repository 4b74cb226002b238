"""The examples, run against a real herald."""

from __future__ import annotations

import route_allocation
import signup_consumer
import signup_producer
from conftest import Server


async def test_signup_examples(own_server: Server) -> None:
    receipts = await signup_producer.main(own_server.endpoint, count=3)
    assert [r.offset for r in receipts] == [0, 1, 2]
    welcomed = await signup_consumer.main(own_server.endpoint, count=3)
    assert welcomed == ["user-0", "user-1", "user-2"]


async def test_route_allocation_example(own_server: Server) -> None:
    alerted, dead = await route_allocation.main(own_server.endpoint)
    assert sorted(alerted) == ["route-1", "route-2"]
    assert dead == ["route-3"]
