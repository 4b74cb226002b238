"""Checked by mypy in test.sh (never run): the generated bindings are typed,
so a wrong message type or option is a type error. Each `type: ignore[...]`
below must be needed (strict mode warns about unused ones), so this file
fails the check if the bindings lose their types."""

from acme.signup.v1.signup_herald import USER_SIGNED_UP, user_signed_up_consumer, user_signed_up_producer
from acme.signup.v1.signup_pb2 import UserSignedUp
from acme.transport.v1.transport_pb2 import DriverAlertRequested

import herald


async def typed(client: herald.Client) -> None:
    producer: herald.Producer[UserSignedUp] = user_signed_up_producer(client, linger=0.01)
    await producer.publish(UserSignedUp(user_id="u"))
    await producer.publish(DriverAlertRequested())  # type: ignore[arg-type]
    user_signed_up_producer(client, lingr=0.01)  # type: ignore[call-arg]
    user_signed_up_producer(client, max_batch="10")  # type: ignore[arg-type]

    consumer = user_signed_up_consumer(client, "s", type=herald.SubscriptionType.SHARED)
    async for envelope in consumer:
        user_id: str = envelope.value.user_id
        envelope.value.no_such_field  # type: ignore[attr-defined]
        envelope.nack(0.5, reason=user_id)

    other: herald.Consumer[DriverAlertRequested] = client.consumer(USER_SIGNED_UP, "s")  # type: ignore[arg-type]
    del other
