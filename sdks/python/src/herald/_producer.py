"""``Producer[M]``: typed publishing, batched by a background task over one
``PublishStream``.

Calls put their events on a queue with a future for the answer and a
deadline (their timeout, by default the client's request timeout). The task
gathers queued calls into one request (until ``max_batch`` events or
``linger`` seconds after the first), numbers it, keeps at most
``max_in_flight`` requests unanswered, and splits each response's results
back to the calls that made up the request. When the broker refuses one
event of a shared request (too large, malformed), only the call that gave
it fails; the other calls are sent again.

When the stream breaks (connection refused or reset, server restart,
GOAWAY, keepalive timeout, broker shutting down), every unanswered request
goes back to the front of the queue, in order, and is sent again on a new
stream after the client's reconnect backoff, until each call's deadline.
That is safe because every event's id is set once, before its first send,
and the broker deduplicates ids: an event stored before the break comes
back as a duplicate with its original offset. A call fails before its
deadline only when the broker refuses it.
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
from herald._errors import (
    ClosedError,
    ErrorCode,
    HeraldError,
    RequestTimeoutError,
    describe_connection_failure,
)
from herald._types import CONTENT_TYPE_PROTOBUF, EventType, Receipt
from herald.v1 import event_pb2, publisher_pb2, publisher_pb2_grpc

if TYPE_CHECKING:
    from herald._client import Client

__all__ = ["Producer"]

M = TypeVar("M", bound=Message)

_log = logging.getLogger("herald.producer")

_Event = event_pb2.Event
_Timestamp = timestamp_pb2.Timestamp
_uuid7 = uuid_utils.uuid7
_time_ns = time.time_ns


class _Call:
    """One ``send``/``publish_batch`` call's share of a request."""

    __slots__ = ("events", "future", "single", "timeout", "deadline", "timer")

    def __init__(
        self,
        events: list[event_pb2.Event],
        future: asyncio.Future[Any],
        single: bool,
        timeout: float,
        deadline: float,
    ) -> None:
        self.events = events
        self.future = future
        self.single = single
        self.timeout = timeout
        self.deadline = deadline
        # For a call with its own timeout: fails it when its deadline passes
        # unanswered (calls with the client's request timeout are watched by
        # the producer's sweep instead: one timer for all).
        self.timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def resolve(self, results: Iterable[publisher_pb2.PublishResult]) -> None:
        if self.future.done():
            return
        if self.timer is not None:
            self.cancel_timer()
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
        if self.timer is not None:
            self.cancel_timer()
        receipt = Receipt(
            result.id, result.partition, result.offset, result.duplicate, result.publish_time
        )
        self.future.set_result(receipt if self.single else [receipt])

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.cancel_timer()
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

    Across a broker restart or a lost connection a publish does not fail:
    every unanswered request is sent again, in order, on a new stream (with
    the client's reconnect backoff) until the call's timeout, by default the
    client's ``request_timeout``. The broker deduplicates event ids, so each
    successful publish is stored once (one stored before the break comes
    back with ``Receipt.duplicate`` set and its original offset). Past the
    timeout the call fails with :class:`~herald.RequestTimeoutError` naming
    the last connection failure; a refusal by the broker (e.g.
    ``EVENT_TOO_LARGE``, ``TOPIC_NOT_FOUND``) fails it at once.

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
        # The batcher task waits on this future; _wake() resolves it.
        self._waiter: asyncio.Future[None] | None = None
        self._wake_on_enqueue = False
        self._in_flight: dict[int, list[_Call]] = {}
        # Calls with the client's request timeout, in the order submitted,
        # so by deadline; resolved ones are dropped from the left as answers
        # come. One timer (_sweep) fails those whose deadline passed.
        self._deadlines: deque[_Call] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sequence = 0
        self._stream: Any = None  # grpc.aio.StreamStreamCall
        self._reader: asyncio.Task[None] | None = None
        # After a break: nothing is sent before _retry_at (loop time);
        # _failures counts the breaks since the last answer (the backoff).
        self._retry_at = 0.0
        self._failures = 0
        self._last_failure: HeraldError | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.requests_sent = 0
        """``PublishStream`` requests sent so far (resends included)."""
        self.events_sent = 0
        """Events sent in them (resends included)."""
        self.resends = 0
        """Times the stream broke with requests unanswered, which were then sent again."""

    # -- public API ---------------------------------------------------------

    @property
    def last_failure(self) -> HeraldError | None:
        """Why the publish stream last broke; ``None`` once the broker answers again."""
        return self._last_failure

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
        timeout: float | None = None,
    ) -> asyncio.Future[Receipt]:
        """Queues one event and returns a future for its :class:`~herald.Receipt`
        without waiting: the fastest way to publish many events (keep a
        window of futures and await them). Events sent from one task are
        sent in order. The future fails as :meth:`publish` does."""
        event = self.envelope(message, attributes=attributes, subject=subject, key=key, id=id)
        return self._submit([event], True, timeout).future

    async def publish(
        self,
        message: M,
        *,
        attributes: Mapping[str, str] | None = None,
        subject: str | None = None,
        key: str | None = None,
        id: str | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        """Publishes one event; returns where it was stored once it is durable.

        Args:
            message: the event payload.
            attributes: extension attributes to add (e.g. ``{"tenant": "t1"}``).
            subject: the CloudEvents ``subject``.
            key: the ordering key instead of the binding's.
            id: the event id instead of a fresh UUIDv7 (the broker
                deduplicates on ids it has seen).
            timeout: seconds to wait for the broker's confirmation, resends
                after a connection loss included; default the client's
                ``request_timeout``.

        Raises:
            HeraldError: the broker refused the event (e.g.
                ``ErrorCode.EVENT_TOO_LARGE``), at once.
            RequestTimeoutError: not confirmed within the timeout (e.g. the
                broker stayed unreachable: the message names the last
                failure); the event may or may not be stored, and publishing
                it again with ``id=error.metadata["id"]`` is safe.
        """
        event = self.envelope(message, attributes=attributes, subject=subject, key=key, id=id)
        call = self._submit([event], True, timeout)
        try:
            receipt: Receipt = await call.future
        except asyncio.CancelledError:
            call.cancel_timer()
            raise
        return receipt

    async def publish_batch(
        self, messages: Iterable[M], *, timeout: float | None = None
    ) -> list[Receipt]:
        """Publishes ``messages`` in one request (stored whole or not at all
        per partition); returns their receipts in order. Fails and is sent
        again as :meth:`publish` (``timeout`` likewise)."""
        events = [self.envelope(m) for m in messages]
        if not events:
            return []
        call = self._submit(events, False, timeout)
        try:
            receipts: list[Receipt] = await call.future
        except asyncio.CancelledError:
            call.cancel_timer()
            raise
        return receipts

    async def flush(self) -> None:
        """Waits until everything queued so far is answered (or timed out)."""
        pending = [c.future for c in self._queue]
        for calls in self._in_flight.values():
            pending.extend(c.future for c in calls)
        if pending:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Flushes what is queued, waits for the answers (each call at most
        until its timeout), and half-closes the stream. Later publishes fail
        with :class:`~herald.ClosedError`."""
        if not self._closing:
            self._closing = True
            self._wake()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Producer[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------

    def _submit(self, events: list[event_pb2.Event], single: bool, timeout: float | None) -> _Call:
        if self._closing:
            raise ClosedError("the producer is closed")
        loop = asyncio.get_running_loop()
        if timeout is None:
            timeout = self._client.request_timeout
        elif timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        call = _Call(events, loop.create_future(), single, timeout, loop.time() + timeout)
        deadlines = self._deadlines
        if timeout == self._client.request_timeout and (
            not deadlines or deadlines[-1].deadline <= call.deadline
        ):
            deadlines.append(call)
            if self._sweeper is None:
                self._sweeper = loop.call_at(call.deadline, self._sweep)
        else:
            call.timer = loop.call_at(call.deadline, self._expire, call)
        self._queue.append(call)
        self._queued_events += len(events)
        if self._task is None:
            self._task = loop.create_task(self._run())
        if self._wake_on_enqueue:
            self._wake()
        return call

    def _expire(self, call: _Call) -> None:
        """A call's own deadline passed unanswered."""
        call.timer = None
        if call.future.done():
            return
        call.fail(self._timeout_error(call))
        if self._closing:
            self._wake()  # close() may have nothing left to wait for

    def _sweep(self) -> None:
        """Fails the calls with the request timeout whose deadline passed."""
        self._sweeper = None
        deadlines = self._deadlines
        now = asyncio.get_running_loop().time() + 0.001
        expired = False
        while deadlines:
            call = deadlines[0]
            if not call.future.done():
                if call.deadline > now:
                    break
                call.fail(self._timeout_error(call))
                expired = True
            deadlines.popleft()
        if deadlines:
            self._sweeper = asyncio.get_running_loop().call_at(deadlines[0].deadline, self._sweep)
        if expired and self._closing:
            self._wake()  # close() may have nothing left to wait for

    def _trim_deadlines(self) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0].future.done():
            deadlines.popleft()

    def _timeout_error(self, call: _Call) -> RequestTimeoutError:
        default = call.timeout == self._client.request_timeout
        message = (
            f"could not confirm the publish within {call.timeout:g} s"
            + (" (the client's request_timeout)" if default else "")
        )
        cause = self._last_failure
        if cause is not None:
            message += (
                "; the broker has not been reachable since the publish stream broke "
                f"(last failure: {cause.grpc_code.name}: "
                f"{describe_connection_failure(cause.message)})"
            )
        metadata: dict[str, str]
        if call.single:
            event_id = call.events[0].id
            metadata = {"id": event_id}
            message += (
                f"; event {event_id} may or may not be stored: publishing it again with "
                f"id={event_id!r} is safe (the broker drops duplicate ids)"
            )
        else:
            metadata = {"ids": ",".join(e.id for e in call.events)}
            message += (
                f"; the {len(call.events)} events may or may not be stored: publishing them "
                "again with the same ids (metadata['ids']) is safe (the broker drops "
                "duplicate ids)"
            )
        error = RequestTimeoutError(message, metadata)
        error.__cause__ = cause
        return error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, timeout: float | None = None, *, on_enqueue: bool = False) -> None:
        """Waits for _wake() (and for a new call when ``on_enqueue``), at
        most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._wake_on_enqueue = on_enqueue
        timer = None if timeout is None else loop.call_later(timeout, _set_none, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            self._wake_on_enqueue = False
            if timer is not None:
                timer.cancel()

    def _all_answered(self) -> bool:
        """Whether every call queued or in flight has its answer (or gave up)."""
        if any(not c.future.done() for c in self._queue):
            return False
        return all(c.future.done() for calls in self._in_flight.values() for c in calls)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        lingered = False
        try:
            while True:
                if self._closing and not self._queue and not self._in_flight:
                    break
                if not self._queue or len(self._in_flight) >= self._max_in_flight:
                    if self._closing and self._all_answered():
                        break
                    await self._sleep(on_enqueue=not self._queue)
                    continue
                backoff = self._retry_at - loop.time()
                if backoff > 0:
                    if self._closing and self._all_answered():
                        break
                    await self._sleep(backoff)
                    continue
                if (
                    not lingered
                    and self._linger > 0
                    and self._queued_events < self._max_batch
                    and not self._closing
                ):
                    lingered = True
                    await asyncio.sleep(self._linger)
                    continue
                lingered = False
                await self._send_batch()
        finally:
            stream, self._stream = self._stream, None
            if stream is not None:
                try:
                    await asyncio.wait_for(stream.done_writing(), 5)
                except (grpc.RpcError, asyncio.InvalidStateError, TimeoutError):
                    pass
            reader, self._reader = self._reader, None
            if reader is not None:
                try:
                    # The server ends the stream after the half-close.
                    await asyncio.wait_for(reader, 5)
                except (TimeoutError, asyncio.CancelledError):
                    reader.cancel()
                if stream is not None:
                    stream.cancel()
            error = ClosedError("the producer is closed")
            for call in self._queue:
                call.fail(error)
            self._queue.clear()
            for calls in self._in_flight.values():
                for call in calls:
                    call.fail(error)
            self._in_flight.clear()
            self._deadlines.clear()
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None

    async def _send_batch(self) -> None:
        calls: list[_Call] = []
        events: list[event_pb2.Event] = []
        queue = self._queue
        while queue:
            call = queue[0]
            n = len(call.events)
            if call.future.done():  # timed out or cancelled before it went
                queue.popleft()
                self._queued_events -= n
                continue
            if events and len(events) + n > self._max_batch:
                break
            queue.popleft()
            self._queued_events -= n
            calls.append(call)
            events.extend(call.events)
        if not calls:
            return
        sequence = self._sequence
        self._sequence += 1
        request = publisher_pb2.PublishStreamRequest(
            sequence=sequence, topic=self.topic, events=events
        )
        self.requests_sent += 1
        self.events_sent += len(events)
        self._in_flight[sequence] = calls
        stream = self._stream
        if stream is None:
            try:
                stream = self._open_stream()
            except Exception as e:  # noqa: BLE001 (grpc's UsageError: the channel is closed)
                error = ClosedError(f"cannot open a publish stream: {e}")
                for c in self._in_flight.pop(sequence, ()):
                    c.fail(error)
                return
        try:
            await stream.write(request)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # The call was cancelled: by _drop_stream (it broke meanwhile, and
            # its requests, this one included, are queued again), or under
            # us (e.g. the channel was closed).
            self._stream_failed(stream, _cancelled())
        except grpc.RpcError as e:
            self._stream_failed(stream, HeraldError.from_rpc_error(e))
        except asyncio.InvalidStateError:
            self._stream_failed(
                stream,
                HeraldError(
                    ErrorCode.UNSPECIFIED, grpc.StatusCode.UNAVAILABLE, "the publish stream ended"
                ),
            )

    def _open_stream(self) -> Any:
        stream = self._stub.PublishStream()
        self._stream = stream
        self._reader = asyncio.get_running_loop().create_task(self._read(stream))
        return stream

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._reader = None  # it ends by itself once the stream is cancelled
        if stream is not None:
            stream.cancel()

    async def _read(self, stream: Any) -> None:
        error: HeraldError
        try:
            while True:
                response = await stream.read()
                if stream is not self._stream:
                    return
                if response is grpc.aio.EOF:
                    error = HeraldError(
                        ErrorCode.UNSPECIFIED,
                        grpc.StatusCode.UNAVAILABLE,
                        "the server ended the publish stream",
                    )
                    break
                self._answer(response)
                self._trim_deadlines()
        except grpc.RpcError as e:
            error = HeraldError.from_rpc_error(e)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # The call was cancelled (by _drop_stream, or under us).
            error = _cancelled()
        self._stream_failed(stream, error)

    def _stream_failed(self, stream: Any, error: HeraldError) -> None:
        """The stream ended with ``error`` (no-op for a stream already dropped)."""
        if stream is not self._stream:
            return
        if _resendable(error):
            self._broken(error, [])
            return
        # A refusal of the whole stream: its requests fail; the next batch
        # opens a new one.
        self._drop_stream()
        in_flight, self._in_flight = self._in_flight, {}
        for calls in in_flight.values():
            for c in calls:
                c.fail(error)
        self._wake()

    def _broken(self, error: HeraldError, first: list[_Call]) -> None:
        """The stream broke (or the broker refused a request for now): drop
        the stream and put ``first`` and every unanswered request's calls
        back at the front of the queue, in order, to go after the backoff."""
        self._drop_stream()
        in_flight, self._in_flight = self._in_flight, {}
        again = [c for c in first if not c.future.done()]
        for calls in in_flight.values():
            again.extend(c for c in calls if not c.future.done())
        self._last_failure = error
        if again:
            self.resends += 1
            for c in reversed(again):
                self._queue.appendleft(c)
                self._queued_events += len(c.events)
            delay = self._client.reconnect_policy.delay(self._failures)
            self._failures += 1
            self._retry_at = asyncio.get_running_loop().time() + delay
            log = _log.warning if self._failures == 1 else _log.debug
            log(
                "publish stream to %s broke (%s); sending %d unanswered calls again in %.2f s",
                self.topic, error, len(again), delay,
            )
        self._wake()

    def _answer(self, response: publisher_pb2.PublishStreamResponse) -> None:
        calls = self._in_flight.pop(response.sequence, None)
        self._wake()
        if calls is None:
            _log.warning("publish response for an unknown request %d", response.sequence)
            return
        if response.HasField("error"):
            error = HeraldError.from_detail(response.error)
            if error.grpc_code == grpc.StatusCode.UNAVAILABLE:
                # Refused for now (the broker is shutting down): nothing of
                # it was stored; like a broken stream.
                self._broken(error, calls)
                return
            self._failures = 0
            self._last_failure = None
            culprit = _culprit(error, calls)
            if culprit is None:
                for c in calls:
                    c.fail(error)
                return
            retry = [c for i, c in enumerate(calls) if i != culprit and not c.future.done()]
            calls[culprit].fail(error)
            for c in reversed(retry):
                self._queue.appendleft(c)
                self._queued_events += len(c.events)
            return
        self._failures = 0
        self._last_failure = None
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


def _cancelled() -> HeraldError:
    return HeraldError(
        ErrorCode.UNSPECIFIED, grpc.StatusCode.CANCELLED, "the publish stream was cancelled"
    )


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resendable(error: HeraldError) -> bool:
    """Whether a stream failure may pass with a new stream (the connection
    broke, the broker restarts): UNAVAILABLE, UNKNOWN, CANCELLED or
    DEADLINE_EXCEEDED from the transport, a stream reset, a failed write."""
    if error.code == ErrorCode.SUBSCRIPTION_CLOSED:
        return False
    code = error.grpc_code
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        return True
    # A stream reset by the peer or a proxy; or a write the transport
    # failed (grpc.aio reports it as "Internal error from Core").
    return (
        code == grpc.StatusCode.INTERNAL
        and error.code == ErrorCode.UNSPECIFIED
        and ("RST_STREAM" in error.message or "Internal error from Core" in error.message)
    )


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
