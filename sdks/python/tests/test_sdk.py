"""The SDK against a real herald server (see conftest.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
import pytest
from acme.signup.v1 import signup_herald
from acme.signup.v1.signup_pb2 import UserSignedUp
from conftest import Server, eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import herald
from herald.v1 import (
    errors_pb2,
    event_pb2,
    publisher_pb2,
    publisher_pb2_grpc,
    subscriber_pb2,
    subscriber_pb2_grpc,
)

EARLIEST = herald.Position.EARLIEST


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def take(consumer: herald.Consumer[UserSignedUp], n: int) -> list[herald.Envelope[UserSignedUp]]:
    """The next n envelopes, acked."""
    out: list[herald.Envelope[UserSignedUp]] = []

    async def go() -> None:
        async for envelope in consumer:
            envelope.ack()
            out.append(envelope)
            if len(out) == n:
                return

    await asyncio.wait_for(go(), 10)
    return out


async def test_typed_round_trip(client: herald.Client, topic: str) -> None:
    sent = UserSignedUp(user_id="u-1", email="u1@example.com")
    sent.signed_up_at.FromDatetime(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        before = dt.datetime.now(dt.timezone.utc)
        receipt = await producer.publish(sent, subject="users/u-1")
        batch = await producer.publish_batch(
            [UserSignedUp(user_id="u-2"), UserSignedUp(user_id="u-3")]
        )
    assert (receipt.partition, receipt.offset, receipt.duplicate) == (0, 0, False)
    assert [r.offset for r in batch] == [1, 2]
    assert len(receipt.id) == 36 and receipt.id[14] == "7"  # a UUIDv7

    async with signup_herald.user_signed_up_consumer(
        client, "round-trip", topic=topic, initial_position=EARLIEST
    ) as consumer:
        envelopes = await take(consumer, 3)
    first = envelopes[0]
    assert first.value == sent
    assert isinstance(first.value, UserSignedUp)
    assert first.id == receipt.id
    assert first.type == "com.example.user.signed_up"
    assert first.source == "/services/signup"
    assert first.subject == "users/u-1"
    assert first.data_schema == "acme.signup.v1.UserSignedUp"
    assert first.data_content_type == "application/protobuf"
    assert first.key == "u-1"
    assert first.topic == topic and first.partition == 0 and first.offset == 0
    assert first.delivery_attempt == 1
    assert first.time is not None and before - dt.timedelta(seconds=1) <= first.time
    assert first.publish_time is not None
    assert [e.value.user_id for e in envelopes] == ["u-1", "u-2", "u-3"]


async def test_attributes_and_trace_context_round_trip(
    client: herald.Client, topic: str, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("signup") as parent:
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="t-1"), attributes={"tenant": "acme"})
    parent_ctx = parent.get_span_context()

    seen: dict[str, object] = {}
    consumer = signup_herald.user_signed_up_consumer(
        client, "tracing", topic=topic, initial_position=EARLIEST
    )

    async def handler(envelope: herald.Envelope[UserSignedUp]) -> None:
        seen["attributes"] = dict(envelope.attributes)
        seen["span"] = trace.get_current_span().get_span_context()
        seen["id"] = envelope.id
        await consumer.close()

    spans.clear()
    await asyncio.wait_for(consumer.run(handler), 10)
    attributes = seen["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["tenant"] == "acme"
    assert attributes["traceparent"].startswith(f"00-{parent_ctx.trace_id:032x}-{parent_ctx.span_id:016x}-")
    span_ctx = seen["span"]
    assert isinstance(span_ctx, trace.SpanContext)
    assert span_ctx.trace_id == parent_ctx.trace_id
    (process,) = [s for s in spans.get_finished_spans() if s.name == f"process {topic}"]
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == parent_ctx.span_id
    assert dict(process.attributes or {}) == {
        "messaging.system": "herald",
        "messaging.destination.name": topic,
        "messaging.operation": "process",
        "messaging.message.id": seen["id"],
        "messaging.consumer.group.name": "tracing",
    }


async def dead_letters(
    client: herald.Client, topic: str, n: int
) -> list[herald.Envelope[UserSignedUp]]:
    async with signup_herald.user_signed_up_consumer(
        client, "dlq-reader", topic=topic, initial_position=EARLIEST
    ) as dlq:
        return await take(dlq, n)


async def test_handler_rejection_is_redelivered_then_dead_lettered_with_reason(
    client: herald.Client, topic: str
) -> None:
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        await producer.publish(UserSignedUp(user_id="bad"))
    attempts: list[int] = []
    consumer = signup_herald.user_signed_up_consumer(
        client, "rejecting", topic=topic, initial_position=EARLIEST,
        redelivery=herald.Redelivery(min_backoff=0.05, max_backoff=0.1, max_delivery_attempts=3),
    )

    async def handler(envelope: herald.Envelope[UserSignedUp]) -> None:
        attempts.append(envelope.delivery_attempt)
        raise herald.Reject(f"no such user {envelope.value.user_id}")

    running = asyncio.create_task(consumer.run(handler))
    (dead,) = await dead_letters(client, f"{topic}.rejecting.dlq", 1)
    await consumer.close()
    await running
    assert attempts == [1, 2, 3]
    assert dead.value.user_id == "bad"
    assert dead.attributes["herald_dlq_reason"] == "no such user bad"
    assert dead.attributes["herald_dlq_attempts"] == "3"


async def test_undecodable_event_is_nacked_with_the_decode_error(
    client: herald.Client, topic: str
) -> None:
    # A foreign producer publishes bytes that are not a UserSignedUp.
    stub = publisher_pb2_grpc.PublisherStub(client.channel)
    await stub.Publish(
        publisher_pb2.PublishRequest(
            topic=topic,
            events=[event_pb2.Event(id="garbage-1", type="x", data=b"\xff\xff\xff\xff")],
        )
    )
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        await producer.publish(UserSignedUp(user_id="good"))
    handled: list[str] = []
    consumer = signup_herald.user_signed_up_consumer(
        client, "decoding", topic=topic, initial_position=EARLIEST,
        redelivery=herald.Redelivery(max_delivery_attempts=1),
    )

    async def handler(envelope: herald.Envelope[UserSignedUp]) -> None:
        handled.append(envelope.value.user_id)

    running = asyncio.create_task(consumer.run(handler))
    # The dead letter keeps the undecodable payload: read it with the raw stub.
    async def read_dead_letter() -> event_pb2.Event:
        while True:  # the dead-letter topic appears with its first event
            reads = subscriber_pb2_grpc.SubscriberStub(client.channel).Read(
                subscriber_pb2.ReadRequest(topic=f"{topic}.decoding.dlq", follow=True, max_events=1)
            )
            try:
                batch = await reads.read()
                return batch.events[0].event
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
                await asyncio.sleep(0.05)

    dead = await asyncio.wait_for(read_dead_letter(), 10)
    await eventually(lambda: handled == ["good"])
    await consumer.close()
    await running
    assert dead.id == "garbage-1"
    assert dead.attributes["herald_dlq_reason"].startswith(
        "cannot decode event garbage-1 as acme.signup.v1.UserSignedUp"
    )


async def test_handler_exception_is_logged_and_nacked_and_the_loop_goes_on(
    client: herald.Client, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        for user in ("boom", "ok-1", "ok-2"):
            await producer.publish(UserSignedUp(user_id=user))
    handled: list[tuple[str, int]] = []
    consumer = signup_herald.user_signed_up_consumer(
        client, "exploding", topic=topic, initial_position=EARLIEST,
        redelivery=herald.Redelivery(min_backoff=0.05, max_backoff=0.1),
    )

    def handler(envelope: herald.Envelope[UserSignedUp]) -> None:  # a plain function works too
        handled.append((envelope.value.user_id, envelope.delivery_attempt))
        if envelope.value.user_id == "boom" and envelope.delivery_attempt == 1:
            raise RuntimeError("kaboom")

    with caplog.at_level(logging.ERROR, logger="herald.consumer"):
        running = asyncio.create_task(consumer.run(handler))
        await eventually(lambda: len(handled) == 4)
        await consumer.close()
        await running
    assert handled[:3] == [("boom", 1), ("ok-1", 1), ("ok-2", 1)]
    assert handled[3] == ("boom", 2)
    assert "event handler raised" in caplog.text and "kaboom" in caplog.text


async def test_unknown_topic_with_auto_create_off(strict_server: Server) -> None:
    async with herald.Client(strict_server.endpoint) as client:
        async with signup_herald.user_signed_up_producer(client, topic="nowhere") as producer:
            with pytest.raises(herald.HeraldError) as raised:
                await producer.publish(UserSignedUp(user_id="x"))
    error = raised.value
    assert error.code == herald.ErrorCode.TOPIC_NOT_FOUND
    assert error.code.proto_name == "ERROR_CODE_TOPIC_NOT_FOUND"
    assert error.grpc_code == grpc.StatusCode.NOT_FOUND
    assert "nowhere" in error.message


async def test_oversize_event_fails_only_its_own_call(client: herald.Client, topic: str) -> None:
    async with signup_herald.user_signed_up_producer(client, topic=topic, linger=0.05) as producer:
        small = producer.send(UserSignedUp(user_id="small-1"))
        big = producer.send(UserSignedUp(user_id="big", email="x" * (2 * 1024 * 1024)))
        small2 = producer.send(UserSignedUp(user_id="small-2"))
        results = await asyncio.gather(small, big, small2, return_exceptions=True)
    assert isinstance(results[0], herald.Receipt) and isinstance(results[2], herald.Receipt)
    error = results[1]
    assert isinstance(error, herald.HeraldError)
    assert error.code == herald.ErrorCode.EVENT_TOO_LARGE
    assert error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert producer.requests_sent >= 2  # the shared request was refused and resent


async def test_wrong_subscription_type_is_a_typed_error(client: herald.Client, topic: str) -> None:
    async with signup_herald.user_signed_up_consumer(
        client, "shared-sub", topic=topic, type=herald.SubscriptionType.SHARED
    ):
        pass
    consumer = signup_herald.user_signed_up_consumer(
        client, "shared-sub", topic=topic, type=herald.SubscriptionType.EXCLUSIVE
    )
    with pytest.raises(herald.HeraldError) as raised:
        await consumer.start()
    assert raised.value.code == herald.ErrorCode.SUBSCRIPTION_TYPE_MISMATCH
    assert raised.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION


async def test_second_exclusive_consumer_is_refused(client: herald.Client, topic: str) -> None:
    kw: herald.ConsumerOptions = {"topic": topic, "type": herald.SubscriptionType.EXCLUSIVE}
    async with signup_herald.user_signed_up_consumer(client, "solo", **kw):
        with pytest.raises(herald.HeraldError) as raised:
            await signup_herald.user_signed_up_consumer(client, "solo", **kw).start()
    assert raised.value.code == herald.ErrorCode.EXCLUSIVE_CONSUMER_ATTACHED


async def test_duplicate_id_is_reported(client: herald.Client, topic: str) -> None:
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        first = await producer.publish(UserSignedUp(user_id="d"), id="fixed-id")
        again = await producer.publish(UserSignedUp(user_id="d"), id="fixed-id")
    assert not first.duplicate and again.duplicate and again.offset == first.offset


async def test_failover_reports_active_and_standby(client: herald.Client, topic: str) -> None:
    roles: dict[str, list[bool]] = {"a": [], "b": []}

    def consumer(name: str, priority: int) -> herald.Consumer[UserSignedUp]:
        return signup_herald.user_signed_up_consumer(
            client, "fo", topic=topic, type=herald.SubscriptionType.FAILOVER,
            consumer_name=name, priority=priority,
            on_active_change=lambda s: roles[name].append(s.active),
        )

    a = await consumer("a", 0).start()
    a_running = asyncio.create_task(a.run(lambda e: None))
    await eventually(lambda: roles["a"] == [True])
    b = await consumer("b", 1).start()
    b_running = asyncio.create_task(b.run(lambda e: None))
    await eventually(lambda: roles["b"] == [False])
    assert roles["a"] == [True]
    assert a.active_state is not None and a.active_state.active_consumer == "a"
    await a.close()
    await a_running
    await eventually(lambda: roles["b"] == [False, True])
    await b.close()
    await b_running


async def test_consumer_reattaches_after_a_server_restart(own_server: Server, topic: str) -> None:
    async with herald.Client(own_server.endpoint, request_timeout=5) as client:
        seen: list[str] = []
        consumer = signup_herald.user_signed_up_consumer(
            client, "survivor", topic=topic, initial_position=EARLIEST
        )
        running = asyncio.create_task(consumer.run(lambda e: seen.append(e.value.user_id)))
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="before"))
        await eventually(lambda: seen == ["before"])

        own_server.stop()
        await asyncio.sleep(0.3)
        own_server.start()

        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            # Sent again until the server is back (within the request timeout).
            await producer.publish(UserSignedUp(user_id="after"))
        # At least once: "before" may come again if its ack was not yet
        # applied when the server was killed.
        await eventually(lambda: "after" in seen, timeout=20)
        assert set(seen) == {"before", "after"}, seen
        assert not running.done()
        await consumer.close()
        await running


async def test_publish_waits_for_the_server_to_come_back(own_server: Server, topic: str) -> None:
    async with herald.Client(own_server.endpoint, request_timeout=10) as client:
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="1"))
            own_server.stop()
            pending = producer.send(UserSignedUp(user_id="2"))
            await asyncio.sleep(0.5)
            assert not pending.done()  # not failed: sent again until the timeout
            await asyncio.to_thread(own_server.start)
            receipt = await pending
            assert receipt.offset == 1 and producer.resends >= 1


async def test_connect_errors_are_actionable() -> None:
    with pytest.raises(herald.ConnectError, match="invalid endpoint"):
        herald.Client("ftp://example.com:1")
    with pytest.raises(herald.ConnectError, match="cannot connect to http://127.0.0.1:1: connection refused"):
        await herald.Client.connect("http://127.0.0.1:1")


async def test_closed_producer_refuses_publishes(client: herald.Client, topic: str) -> None:
    producer = signup_herald.user_signed_up_producer(client, topic=topic)
    await producer.close()
    with pytest.raises(herald.ClosedError):
        await producer.publish(UserSignedUp(user_id="late"))


async def test_bad_options_are_refused(client: herald.Client) -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        signup_herald.user_signed_up_producer(client, max_batch=0)
    with pytest.raises(ValueError, match="credits must be between 1 and 100000"):
        signup_herald.user_signed_up_consumer(client, "s", credits=0)
    with pytest.raises(ValueError, match="unknown subscription type 'fanout'"):
        herald.SubscriptionType.parse("fanout")
    producer = signup_herald.user_signed_up_producer(client)
    with pytest.raises(TypeError, match="publishes acme.signup.v1.UserSignedUp, not Event"):
        producer.send(event_pb2.Event())  # type: ignore[arg-type]


def test_error_codes_mirror_the_proto_enum() -> None:
    proto = dict(errors_pb2.ErrorCode.items())
    ours = {code.proto_name: int(code) for code in herald.ErrorCode}
    assert ours == proto


async def test_nack_with_delay_and_extend_when_iterating(client: herald.Client, topic: str) -> None:
    async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
        await producer.publish(UserSignedUp(user_id="later"))
    async with signup_herald.user_signed_up_consumer(
        client, "iter", topic=topic, initial_position=EARLIEST
    ) as consumer:
        first = await asyncio.wait_for(consumer.__anext__(), 10)
        first.extend(5.0)
        nacked_at = asyncio.get_running_loop().time()
        first.nack(delay=0.3, reason="not yet")
        first.ack()  # ignored: the first decision wins
        assert first.finished
        again = await asyncio.wait_for(consumer.__anext__(), 10)
        waited = asyncio.get_running_loop().time() - nacked_at
        again.ack()
    assert again.id == first.id and again.delivery_attempt == 2
    assert waited >= 0.25


def test_reconnect_backoff_is_capped_with_jitter() -> None:
    policy = herald.ReconnectPolicy(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.2)
    assert 0.08 <= policy.delay(0) <= 0.12
    assert 0.32 <= policy.delay(2) <= 0.48
    delays = {policy.delay(30) for _ in range(20)}
    assert all(1.6 <= d <= 2.4 for d in delays) and len(delays) > 1
