"""Producer and consumer throughput of the Python SDK against a running
herald: 100-byte events (acme.signup.v1.UserSignedUp payloads), batching
producer (send() with a window of outstanding futures), then a consumer
with one ack per event draining them. Prints events/s."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import deque

from acme.signup.v1.signup_herald import user_signed_up_consumer, user_signed_up_producer
from acme.signup.v1.signup_pb2 import UserSignedUp

import herald


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("endpoint")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--window", type=int, default=20_000, help="outstanding publishes")
    p.add_argument("--max-in-flight", type=int, default=16)
    p.add_argument("--credits", type=int, default=5000)
    args = p.parse_args()
    topic = f"bench.python.{uuid.uuid4().hex[:8]}"
    user = UserSignedUp(user_id="u-0000001", email="x" * 87)
    assert len(user.SerializeToString()) == 100

    async with herald.Client(args.endpoint) as client:
        producer = user_signed_up_producer(client, topic=topic, max_in_flight=args.max_in_flight)
        start = time.perf_counter()
        window: deque[asyncio.Future[herald.Receipt]] = deque()
        for _ in range(args.events):
            window.append(producer.send(user))
            if len(window) >= args.window:
                await window.popleft()  # a sliding window of outstanding publishes
        for future in window:
            await future
        elapsed = time.perf_counter() - start
        await producer.close()
        print(
            f"producer: {args.events} events x 100 B in {elapsed:.2f} s = "
            f"{args.events / elapsed:,.0f} events/s "
            f"({producer.events_sent / producer.requests_sent:.0f} events per request)"
        )

        consumer = user_signed_up_consumer(
            client, "bench", topic=topic, credits=args.credits,
            initial_position=herald.Position.EARLIEST,
        )
        count = 0

        def handler(envelope: herald.Envelope[UserSignedUp]) -> None:
            nonlocal count
            count += 1
            if count == args.events:
                asyncio.get_running_loop().create_task(consumer.close())

        await consumer.start()
        start = time.perf_counter()
        await consumer.run(handler)
        elapsed = time.perf_counter() - start
        print(
            f"consumer: {count} events, one ack each, in {elapsed:.2f} s = "
            f"{count / elapsed:,.0f} events/s"
        )


if __name__ == "__main__":
    asyncio.run(main())
