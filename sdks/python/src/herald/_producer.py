"""``Producer[M]``: typed publishing, batched by a background task over one
``PublishStream``.

Calls put their events on a queue with a future for the answer. The task
gathers queued calls into one request (until ``max_batch`` events or
``linger`` seconds after the first), numbers it, keeps at most
``max_in_flight`` requests unanswered, and splits each response's results
back to the calls that made up the request. When the broker refuses one
event of a shared request (too large, malformed), only the call that gave
it fails; the other calls are sent again. A broken stream fails the
requests in flight and is reopened for the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
import uuid_utils
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from herald import _tracing
from herald._errors import ClosedError, ErrorCode, HeraldError, RequestTimeoutError
from herald._types import CONTENT_TYPE_PROTOBUF, EventType, Receipt
from herald.v1 import event_pb2, publisher_pb2, publisher_pb2_grpc

if TYPE_CHECKING:
    from herald._client import Client

__all__ = ["Producer"]

M = TypeVar("M", bound=Message)
T = TypeVar("T")

_log = logging.getLogger("herald.producer")

_Event = event_pb2.Event
_Timestamp = timestamp_pb2.Timestamp
_uuid7 = uuid_utils.uuid7
_time_ns = time.time_ns


class _Call:
    """One ``send``/``publish_batch`` call's share of a request."""

    __slots__ = ("events", "future", "single")

    def __init__(self, events: list[event_pb2.Event], future: asyncio.Future[Any], single: bool):
        self.events = events
        self.future = future
        self.single = single

    def resolve(self, results: Iterable[publisher_pb2.PublishResult]) -> None:
        if self.future.done():
            return
        receipts = [Receipt.from_proto(r) for r in results]
        if self.single:
            if receipts:
                self.future.set_result(receipts[0])
            else:
                self.future.set_exception(
                    HeraldError(
                        ErrorCode.UNSPECIFIED,
                        grpc.StatusCode.INTERNAL,
                        "the broker returned no result for the event",
                    )
                )
        else:
            self.future.set_result(receipts)

    def resolve_one(self, result: publisher_pb2.PublishResult) -> None:
        if self.future.done():
            return
        receipt = Receipt(
            result.id, result.partition, result.offset, result.duplicate, result.publish_time
        )
        self.future.set_result(receipt if self.single else [receipt])

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Producer(Generic[M]):
    """Publishes ``M`` events to the event type's topic (or the ``topic``
    override).

    Each event gets a UUIDv7 ``id``, ``time`` = now, ``type`` and ``source``
    from the :class:`~herald.EventType` (``source`` can be overridden),
    ``data_content_type = "application/protobuf"``, ``data_schema`` = the
    message's full Protobuf name, ``key`` from the binding's key function,
    and the current OpenTelemetry context as ``traceparent``/``tracestate``
    attributes. Concurrent calls are batched into one request.

    Create one with :meth:`herald.Client.producer` (or a generated
    ``<event>_producer(client)``); use it as an async context manager or call
    :meth:`close`, which flushes and waits for the answers::

        async with client.producer(USER_SIGNED_UP) as producer:
            receipt = await producer.publish(UserSignedUp(user_id="u1"))
    """

    def __init__(
        self,
        client: Client,
        event_type: EventType[M],
        *,
        topic: str | None = None,
        source: str | None = None,
        linger: float = 0.001,
        max_batch: int = 1000,
        max_in_flight: int = 8,
    ) -> None:
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._client = client
        self._event_type = event_type
        self._message_class = event_type.message_class
        self._stub: Any = publisher_pb2_grpc.PublisherStub(client.channel)  # type: ignore[no-untyped-call]
        self.topic: str = topic or event_type.topic
        """The topic every event goes to."""
        self.source: str = event_type.source if source is None else source
        """The CloudEvents ``source`` set on every event."""
        self._type = event_type.type
        self._schema = event_type.full_name
        self._key = event_type.key
        self._linger = linger
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: deque[_Call] = deque()
        self._queued_events = 0
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._in_flight: dict[int, list[_Call]] = {}
        self._sequence = 0
        self._stream: Any = None  # grpc.aio.StreamStreamCall
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.requests_sent = 0
        """``PublishStream`` requests sent so far."""
        self.events_sent = 0
        """Events sent in them."""

    # -- public API ---------------------------------------------------------

    def envelope(
        self,
        message: M,
        *,
        attributes: Mapping[str, str] | None = None,
        subject: str | None = None,
        key: str | None = None,
        id: str | None = None,
    ) -> event_pb2.Event:
        """The wire event ``message`` is published as (see the class doc)."""
        if type(message) is not self._message_class and not isinstance(
            message, self._message_class
        ):
            raise TypeError(
                f"this producer publishes {self._schema}, not {type(message).__name__}"
            )
        now = _time_ns()
        if key is None and self._key is not None:
            key = self._key(message)
        event = _Event(
            id=id or str(_uuid7()),
            source=self.source,
            type=self._type,
            data_content_type=CONTENT_TYPE_PROTOBUF,
            data_schema=self._schema,
            key=key or "",
            data=message.SerializeToString(),
        )
        if subject:
            event.subject = subject
        stamp = event.time
        stamp.seconds = now // 1_000_000_000
        stamp.nanos = now % 1_000_000_000
        if attributes:
            event.attributes.update(attributes)
            if "traceparent" in attributes:
                return event
        if _tracing.has_span():
            carrier: dict[str, str] = {}
            _tracing.inject(carrier)
            event.attributes.update(carrier)
        return event

    def send(
        self,
        message: M,
        *,
        attributes: Mapping[str, str] | None = None,
        subject: str | None = None,
        key: str | None = None,
        id: str | None = None,
    ) -> asyncio.Future[Receipt]:
        """Queues one event and returns a future for its :class:`~herald.Receipt`
        without waiting: the fastest way to publish many events (keep a
        window of futures and await them). The future fails with
        :class:`~herald.HeraldError` when the broker refuses the event."""
        event = self.envelope(message, attributes=attributes, subject=subject, key=key, id=id)
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._enqueue(_Call([event], future, True))
        return future

    async def publish(
        self,
        message: M,
        *,
        attributes: Mapping[str, str] | None = None,
        subject: str | None = None,
        key: str | None = None,
        id: str | None = None,
    ) -> Receipt:
        """Publishes one event; returns where it was stored once it is durable.

        Args:
            message: the event payload.
            attributes: extension attributes to add (e.g. ``{"tenant": "t1"}``).
            subject: the CloudEvents ``subject``.
            key: the ordering key instead of the binding's.
            id: the event id instead of a fresh UUIDv7 (the broker
                deduplicates on ids it has seen).

        Raises:
            HeraldError: the broker refused the event (e.g.
                ``ErrorCode.EVENT_TOO_LARGE``) or the stream failed.
            RequestTimeoutError: no answer within the client's request timeout.
        """
        future = self.send(message, attributes=attributes, subject=subject, key=key, id=id)
        return await self._await(future)

    async def publish_batch(self, messages: Iterable[M]) -> list[Receipt]:
        """Publishes ``messages`` in one request (stored whole or not at all
        per partition); returns their receipts in order."""
        events = [self.envelope(m) for m in messages]
        if not events:
            return []
        future: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Call(events, future, False))
        return await self._await(future)

    async def flush(self) -> None:
        """Waits until everything queued so far is answered."""
        pending = [c.future for c in self._queue]
        for calls in self._in_flight.values():
            pending.extend(c.future for c in calls)
        if pending:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Flushes what is queued, waits for the answers, and half-closes the
        stream. Later publishes fail with :class:`~herald.ClosedError`."""
        if self._closing:
            if self._task is not None:
                await asyncio.shield(self._task)
            return
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Producer[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------

    async def _await(self, future: asyncio.Future[T]) -> T:
        timeout = self._client.request_timeout
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeoutError(f"no answer from the broker within {timeout} s") from None

    def _enqueue(self, call: _Call) -> None:
        if self._closing:
            raise ClosedError("the producer is closed")
        self._queue.append(call)
        self._queued_events += len(call.events)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if (
                    self._linger > 0
                    and self._queued_events < self._max_batch
                    and not self._closing
                ):
                    await asyncio.sleep(self._linger)
                while len(self._in_flight) >= self._max_in_flight:
                    self._slot.clear()
                    await self._slot.wait()
                if not self._queue:
                    continue
                await self._send_batch()
            while self._in_flight:
                self._slot.clear()
                await self._slot.wait()
        finally:
            stream, self._stream = self._stream, None
            if stream is not None:
                try:
                    await stream.done_writing()
                except (grpc.RpcError, asyncio.InvalidStateError):
                    pass
            if self._reader is not None:
                try:
                    await asyncio.wait_for(self._reader, 5)
                except (TimeoutError, asyncio.CancelledError):
                    self._reader.cancel()
            error = ClosedError("the producer is closed")
            for call in self._queue:
                call.fail(error)
            self._queue.clear()

    async def _send_batch(self) -> None:
        calls: list[_Call] = []
        events: list[event_pb2.Event] = []
        while self._queue:
            call = self._queue[0]
            if events and len(events) + len(call.events) > self._max_batch:
                break
            self._queue.popleft()
            self._queued_events -= len(call.events)
            calls.append(call)
            events.extend(call.events)
        sequence = self._sequence
        self._sequence += 1
        request = publisher_pb2.PublishStreamRequest(
            sequence=sequence, topic=self.topic, events=events
        )
        self.requests_sent += 1
        self.events_sent += len(events)
        self._in_flight[sequence] = calls
        try:
            if self._stream is None:
                self._open_stream()
            await self._stream.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError) as e:
            error = (
                HeraldError.from_rpc_error(e)
                if isinstance(e, grpc.RpcError)
                else HeraldError(
                    ErrorCode.UNSPECIFIED,
                    grpc.StatusCode.UNAVAILABLE,
                    "the publish stream closed",
                )
            )
            self._stream = None
            for c in self._in_flight.pop(sequence, []):
                c.fail(error)
            self._slot.set()

    def _open_stream(self) -> None:
        stream = self._stub.PublishStream()
        self._stream = stream
        self._reader = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: Any) -> None:
        error: HeraldError
        try:
            while True:
                response = await stream.read()
                if response is grpc.aio.EOF:
                    error = HeraldError(
                        ErrorCode.UNSPECIFIED,
                        grpc.StatusCode.UNAVAILABLE,
                        "the server ended the publish stream",
                    )
                    break
                self._answer(response)
        except grpc.RpcError as e:
            error = HeraldError.from_rpc_error(e)
        except asyncio.CancelledError:
            error = ClosedError("the producer is closed")
        if self._stream is stream:
            self._stream = None
        # Everything sent on this stream is lost with it.
        in_flight, self._in_flight = self._in_flight, {}
        for calls in in_flight.values():
            for c in calls:
                c.fail(error)
        self._slot.set()

    def _answer(self, response: publisher_pb2.PublishStreamResponse) -> None:
        calls = self._in_flight.pop(response.sequence, None)
        self._slot.set()
        if calls is None:
            _log.warning("publish response for an unknown request %d", response.sequence)
            return
        if response.HasField("error"):
            error = HeraldError.from_detail(response.error)
            culprit = _culprit(error, calls)
            if culprit is None:
                for c in calls:
                    c.fail(error)
                return
            retry = [c for i, c in enumerate(calls) if i != culprit]
            calls[culprit].fail(error)
            for c in reversed(retry):
                self._queue.appendleft(c)
                self._queued_events += len(c.events)
            self._wake.set()
            return
        results = response.results
        if len(calls) == 1:
            calls[0].resolve(results)
            return
        if len(results) == len(calls):  # one event per call: the common case
            for c, r in zip(calls, results):
                c.resolve_one(r)
            return
        start = 0
        for c in calls:
            n = len(c.events)
            c.resolve(results[start : start + n])
            start += n


def _culprit(error: HeraldError, calls: list[_Call]) -> int | None:
    """Which call of a shared request gave the one event the broker refused
    (named by the ``index`` in the error's metadata), if that is known."""
    if len(calls) < 2 or error.code not in (ErrorCode.EVENT_TOO_LARGE, ErrorCode.INVALID_EVENT):
        return None
    try:
        index = int(error.metadata["index"])
    except (KeyError, ValueError):
        return None
    end = 0
    for i, c in enumerate(calls):
        end += len(c.events)
        if index < end:
            return i
    return None
