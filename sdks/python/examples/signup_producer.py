"""Publishes a few acme.signup.v1.UserSignedUp events.

    sdks/python/examples/run.sh signup_producer.py http://127.0.0.1:50551
"""

import asyncio
import sys

from acme.signup.v1.signup_herald import user_signed_up_producer
from acme.signup.v1.signup_pb2 import UserSignedUp
from google.protobuf.timestamp_pb2 import Timestamp

import herald


async def main(endpoint: str, count: int = 3) -> list[herald.Receipt]:
    async with herald.Client(endpoint) as client, user_signed_up_producer(client) as producer:
        receipts = []
        for i in range(count):
            signed_up_at = Timestamp()
            signed_up_at.GetCurrentTime()
            user = UserSignedUp(user_id=f"user-{i}", email=f"user{i}@example.com", signed_up_at=signed_up_at)
            receipt = await producer.publish(user)
            print(f"published {user.user_id} at partition {receipt.partition} offset {receipt.offset}")
            receipts.append(receipt)
        return receipts


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:50551"))
