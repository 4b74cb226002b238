"""Sends a welcome email (prints) for each acme.signup.v1.UserSignedUp.

    sdks/python/examples/run.sh signup_consumer.py http://127.0.0.1:50551 [COUNT]
"""

import asyncio
import sys

from acme.signup.v1.signup_herald import user_signed_up_consumer
from acme.signup.v1.signup_pb2 import UserSignedUp

import herald


async def main(endpoint: str, count: int = 3) -> list[str]:
    welcomed: list[str] = []
    async with herald.Client(endpoint) as client:
        consumer = user_signed_up_consumer(
            client, "welcome-email", initial_position=herald.Position.EARLIEST
        )

        async def welcome(event: herald.Envelope[UserSignedUp]) -> None:
            print(f"welcome {event.value.email} (attempt {event.delivery_attempt})")
            welcomed.append(event.value.user_id)
            if len(welcomed) == count:
                await consumer.close()  # acks this one, then stops run()

        await consumer.run(welcome)
    return welcomed


if __name__ == "__main__":
    endpoint = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:50551"
    asyncio.run(main(endpoint, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
