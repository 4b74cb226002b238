"""``Consumer[M]``: typed consuming over one ``Subscriber.Subscribe`` stream.

The consumer attaches (the first message), then reads ``EventBatch``es into
a queue and hands them out one by one as decoded :class:`Envelope`\\ s. Every
ack or nack returns the delivery's credit; returned credits are granted
back to the server in batches (a quarter of the window at a time), so no
more than ``credits`` deliveries are ever outstanding. Closing half-closes
the stream and waits for the server to end it, so the last acks are
applied. A stream that fails with ``UNAVAILABLE`` or a transport error is
re-attached with the client's :class:`~herald.ReconnectPolicy` (capped
exponential backoff with jitter) unless reconnecting is turned off.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.context import Context

from herald import _tracing
from herald._errors import ClosedError, DecodeError, ErrorCode, HeraldError, RequestTimeoutError
from herald._types import EventType, Position, Redelivery, SubscriptionType, duration_proto
from herald.v1 import subscriber_pb2, subscriber_pb2_grpc

if TYPE_CHECKING:
    from herald._client import Client

__all__ = ["Consumer", "Envelope", "ActiveState", "Reject", "Handler"]

M = TypeVar("M", bound=Message)

_log = logging.getLogger("herald.consumer")

#: How long closing waits for the server to end the stream.
CLOSE_TIMEOUT = 5.0

_SubscribeRequest = subscriber_pb2.SubscribeRequest


class Reject(Exception):
    """Raise from a handler to nack the event on purpose: it is redelivered
    after ``delay`` seconds (the subscription's backoff when ``None``) and
    dead-lettered with ``reason`` after the policy's max attempts. Any other
    exception is nacked too, but also logged with its traceback."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass(frozen=True, slots=True)
class ActiveState:
    """Failover: whether this consumer holds the active role, as last told by
    the server.

    Attributes:
        active: this consumer is active (for ``partitions``).
        active_consumer: the active consumer's name (of partition 0 when standing by).
        epoch: increases on every handover.
        partitions: the partitions this consumer is active for.
    """

    active: bool
    active_consumer: str
    epoch: int
    partitions: tuple[int, ...]


Handler = Callable[["Envelope[M]"], Awaitable[None] | None]
"""An event handler: returning acks, raising :class:`Reject` or any other
exception nacks."""


class _Session:
    """One attached Subscribe stream: the outgoing requests (acks, nacks,
    credits, coalesced when they pile up), the incoming deliveries, and the
    credits freed and not yet granted back."""

    __slots__ = ("out", "out_ready", "call", "deliveries", "returned", "grant_at", "open")

    _CLOSE: Any = object()

    def __init__(self, window: int) -> None:
        self.out: deque[tuple[Any, ...]] = deque()
        self.out_ready = asyncio.Event()
        self.call: Any = None
        self.deliveries: deque[subscriber_pb2.DeliveredEvent] = deque()
        self.returned = 0
        self.grant_at = max(1, window // 4)
        self.open = True

    def push(self, item: tuple[Any, ...]) -> None:
        if self.open:
            self.out.append(item)
            self.out_ready.set()

    def finish(self, item: tuple[Any, ...]) -> None:
        """Sends an ack or nack, which frees one credit; grants credits back
        once enough are freed."""
        if not self.open:
            return  # the stream is gone: the event is redelivered
        self.out.append(item)
        self.returned += 1
        if self.returned >= self.grant_at:
            self.out.append(("credit", self.returned))
            self.returned = 0
        self.out_ready.set()

    def half_close(self) -> None:
        if self.open:
            self.out.append((self._CLOSE,))
            self.open = False
            self.out_ready.set()

    def requests(self, attach: subscriber_pb2.Attach) -> _Requests:
        """The request stream: the attach, then merged runs of acks/credits."""
        return _Requests(self, attach)


class _Requests:
    """The Subscribe request stream of a session: the attach, then the queued
    acks, nacks, extensions and credits, with runs of acks (and of credits)
    that piled up merged into one message; ends at the half-close. (A plain
    async iterator rather than an async generator, so cancelling the call
    never has to close a generator that is waiting.)"""

    __slots__ = ("_session", "_attach")

    def __init__(self, session: _Session, attach: subscriber_pb2.Attach) -> None:
        self._session = session
        self._attach: subscriber_pb2.Attach | None = attach

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> subscriber_pb2.SubscribeRequest:
        if self._attach is not None:
            attach, self._attach = self._attach, None
            return _SubscribeRequest(attach=attach)
        session = self._session
        out = session.out
        while not out:
            session.out_ready.clear()
            await session.out_ready.wait()
        item = out.popleft()
        kind = item[0]
        if kind is _Session._CLOSE:
            out.appendleft(item)  # stays ended
            raise StopAsyncIteration
        if kind == "ack":
            handles = [item[1]]
            while out and out[0][0] == "ack" and len(handles) < 1000:
                handles.append(out.popleft()[1])
            return _SubscribeRequest(ack=subscriber_pb2.Ack(ack_handles=handles))
        if kind == "credit":
            credits = item[1]
            while out and out[0][0] == "credit":
                credits += out.popleft()[1]
            return _SubscribeRequest(credit=subscriber_pb2.Credit(credits=credits))
        if kind == "nack":
            nack = subscriber_pb2.Nack(ack_handles=[item[1]], reason=item[3])
            if item[2] is not None:
                nack.delay.CopyFrom(duration_proto(item[2]))
            return _SubscribeRequest(nack=nack)
        return _SubscribeRequest(
            extend_deadline=subscriber_pb2.ExtendDeadline(
                ack_handles=[item[1]], extension=duration_proto(item[2])
            )
        )


class Envelope(Generic[M]):
    """A delivered event: the decoded :attr:`value`, its CloudEvents
    attributes, where it was stored, and how to ack it.

    Under :meth:`Consumer.run` the handler's outcome acks or nacks it;
    calling :meth:`ack` or :meth:`nack` inside the handler decides first (the
    first call wins). When iterating a consumer, call one of them yourself;
    an event never acked is redelivered after the ack deadline.
    """

    __slots__ = ("value", "_delivery", "_event", "_session", "_finished", "subscription")

    def __init__(
        self,
        value: M,
        delivery: subscriber_pb2.DeliveredEvent,
        session: _Session,
        subscription: str,
    ) -> None:
        self.value: M = value
        """The decoded payload."""
        self.subscription = subscription
        """The subscription it was delivered on."""
        self._delivery = delivery
        self._event = delivery.event
        self._session = session
        self._finished = False

    @property
    def id(self) -> str:
        """CloudEvents ``id``: stable across redeliveries."""
        return self._event.id

    @property
    def type(self) -> str:
        """CloudEvents ``type``."""
        return self._event.type

    @property
    def source(self) -> str:
        """CloudEvents ``source``."""
        return self._event.source

    @property
    def subject(self) -> str:
        """CloudEvents ``subject`` (empty when unset)."""
        return self._event.subject

    @property
    def time(self) -> _dt.datetime | None:
        """CloudEvents ``time``: when the producer says it happened."""
        if not self._event.HasField("time"):
            return None
        return self._event.time.ToDatetime(_dt.timezone.utc)

    @property
    def data_schema(self) -> str:
        """CloudEvents ``dataschema`` (the message's full Protobuf name)."""
        return self._event.data_schema

    @property
    def data_content_type(self) -> str:
        """CloudEvents ``datacontenttype``."""
        return self._event.data_content_type

    @property
    def key(self) -> str:
        """The ordering key (empty when keyless)."""
        return self._event.key

    @property
    def attributes(self) -> Mapping[str, str]:
        """Extension attributes (e.g. ``traceparent``), read-only."""
        return self._event.attributes

    @property
    def topic(self) -> str:
        """The topic it came from."""
        return self._delivery.topic

    @property
    def partition(self) -> int:
        """Its partition."""
        return self._delivery.partition

    @property
    def offset(self) -> int:
        """Its offset in the partition."""
        return self._delivery.offset

    @property
    def delivery_attempt(self) -> int:
        """1 on first delivery, one higher on each redelivery."""
        return self._delivery.delivery_attempt

    @property
    def publish_time(self) -> _dt.datetime | None:
        """When the broker stored it."""
        if not self._delivery.HasField("publish_time"):
            return None
        return self._delivery.publish_time.ToDatetime(_dt.timezone.utc)

    @property
    def trace_context(self) -> Context | None:
        """The producer's OpenTelemetry context from ``traceparent``, to
        parent your own spans on (``None`` without one)."""
        return _tracing.extract(self._event.attributes)

    @property
    def finished(self) -> bool:
        """Acked or nacked already."""
        return self._finished

    def ack(self) -> None:
        """Acknowledges the event: it will not be delivered again."""
        if not self._finished:
            self._finished = True
            self._session.finish(("ack", self._delivery.ack_handle))

    def nack(self, delay: float | None = None, reason: str = "") -> None:
        """Refuses the event: it is redelivered after ``delay`` seconds (the
        subscription's backoff when ``None``), and dead-lettered with
        ``reason`` after the policy's max attempts."""
        if not self._finished:
            self._finished = True
            self._session.finish(("nack", self._delivery.ack_handle, delay, reason))

    def extend(self, seconds: float) -> None:
        """Buys ``seconds`` more before the ack deadline redelivers it."""
        if not self._finished:
            self._session.push(("extend", self._delivery.ack_handle, seconds))

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self.id!r}, type={self.type!r}, topic={self.topic!r}, "
            f"partition={self.partition}, offset={self.offset}, "
            f"attempt={self.delivery_attempt})"
        )


class Consumer(Generic[M]):
    """Consumes ``M`` events from a subscription of the event type's topic.

    :meth:`run` calls a handler per event, one at a time, inside an
    OpenTelemetry consumer span that is a child of the producer's trace
    context: returning acks the event, raising :class:`Reject` nacks it with
    its reason (redelivered with backoff, dead-lettered after the policy's
    max attempts), any other exception is logged and nacked, and never ends
    the loop. An event whose payload does not decode is nacked with the
    decode error as the reason. Or iterate it (``async for envelope in
    consumer``) and ack yourself.

    Create one with :meth:`herald.Client.consumer` (or a generated
    ``<event>_consumer(client, "subscription")``)::

        async with client.consumer(USER_SIGNED_UP, "welcome-email",
                                   initial_position=Position.EARLIEST) as consumer:
            await consumer.run(send_welcome)
    """

    def __init__(
        self,
        client: Client,
        event_type: EventType[M],
        subscription: str,
        *,
        topic: str | None = None,
        type: SubscriptionType = SubscriptionType.SHARED,
        consumer_name: str = "",
        priority: int = 0,
        initial_position: Position = Position.LATEST,
        credits: int = 100,
        ack_deadline: float | None = None,
        redelivery: Redelivery | None = None,
        reconnect: bool = True,
        on_active_change: Callable[[ActiveState], None] | None = None,
    ) -> None:
        if not subscription:
            raise ValueError("the subscription name must not be empty")
        if not 1 <= credits <= 100_000:
            raise ValueError(f"credits must be between 1 and 100000, got {credits}")
        self._client = client
        self._event_type = event_type
        self._decode = event_type.message_class.FromString
        self._stub: Any = subscriber_pb2_grpc.SubscriberStub(client.channel)  # type: ignore[no-untyped-call]
        self._attach = subscriber_pb2.Attach(
            topic=topic or event_type.topic,
            subscription=subscription,
            type=f"SUBSCRIPTION_TYPE_{type.name}",
            consumer_name=consumer_name,
            priority=priority,
            initial_position=initial_position.to_proto(),
            initial_credits=credits,
        )
        if ack_deadline is not None:
            self._attach.ack_deadline.CopyFrom(duration_proto(ack_deadline))
        if redelivery is not None:
            self._attach.redelivery.CopyFrom(redelivery.to_proto())
        self._reconnect = reconnect and client.reconnect_policy.enabled
        self._on_active_change = on_active_change
        self._session: _Session | None = None
        self._started = False
        self._closed = False
        self._reading = False
        self._read_done = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None
        self._run_done = asyncio.Event()
        self.subscription = subscription
        """The subscription name."""
        self.topic: str = self._attach.topic
        """The topic consumed."""
        self.attached: subscriber_pb2.Attached | None = None
        """What the server answered to the last attach (consumer name, type, partitions)."""
        self.active_state: ActiveState | None = None
        """Failover: the active/standby role, as last announced by the server."""

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> Consumer[M]:
        """Attaches (idempotent). Fails with the server's error, e.g.
        ``ErrorCode.SUBSCRIPTION_TYPE_MISMATCH``, or
        :class:`~herald.RequestTimeoutError`."""
        if self._closed:
            raise ClosedError("the consumer is closed")
        if not self._started:
            await self._attach_once()
            self._started = True
        return self

    async def close(self) -> None:
        """Half-closes the stream and waits (up to 5 s) for the server to end
        it, so acks already sent are applied. Ends a running :meth:`run`
        (called from its handler, it takes effect once that event is acked)
        or ``async for`` loop."""
        self._closed = True
        run_task = self._run_task
        if run_task is not None:
            if asyncio.current_task() is run_task:
                return  # run() closes after acking the current event
            session = self._session
            if session is not None and self._reading:
                session.half_close()  # the pending read ends with the stream
            try:
                await asyncio.wait_for(asyncio.shield(self._run_done.wait()), 2 * CLOSE_TIMEOUT)
            except TimeoutError:
                _log.warning("the consumer's run() did not end within 10 s of close()")
            return
        session = self._session
        if session is not None and self._reading:
            # An `async for` in another task owns the reads; it ends once the
            # server ends the stream.
            session.half_close()
            try:
                await asyncio.wait_for(self._read_done.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                _log.warning("the server did not end the subscription stream within 5 s")
                session.call.cancel()
            return
        await self._shutdown()

    async def _shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.half_close()
            await _drain(session)

    async def __aenter__(self) -> Consumer[M]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- consuming ----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Envelope[M]]:
        return self

    async def __anext__(self) -> Envelope[M]:
        """The next decoded event. Events that do not decode are nacked (with
        the decode error as the reason), logged and skipped. Ends when the
        consumer is closed or the server ends the subscription; raises the
        error that ended it otherwise."""
        while True:
            envelope = await self._next_envelope()
            if envelope is None:
                raise StopAsyncIteration
            if isinstance(envelope, Envelope):
                return envelope

    async def run(self, handler: Handler[M]) -> None:
        """Runs ``handler`` on every event, one at a time, until :meth:`close`
        is called (from another task or the handler), the server ends the
        stream, or the task is cancelled; then closes. The handler may be a
        coroutine function or a plain function.

        Raises:
            HeraldError: the stream failed and could not be re-attached.
        """
        await self.start()
        if self._run_task is not None:
            raise RuntimeError("run() is already running on this consumer")
        self._run_task = asyncio.current_task()
        self._run_done.clear()
        tracer = _tracing.tracer
        attributes_base = {
            "messaging.system": "herald",
            "messaging.destination.name": self.topic,
            "messaging.operation": "process",
            "messaging.consumer.group.name": self.subscription,
        }
        span_name = f"process {self.topic}"
        tracing_off = _tracing.tracing_off
        try:
            while True:
                session = self._session
                envelope: Envelope[M] | bool | None
                if session is not None and session.deliveries:
                    envelope = self._wrap(session.deliveries.popleft(), session)
                else:
                    envelope = await self._next_envelope()
                    if envelope is None:
                        return
                if envelope is False:
                    continue
                assert isinstance(envelope, Envelope)
                event_attributes = envelope._event.attributes
                if tracing_off() and "traceparent" not in event_attributes:
                    # No tracer provider and no trace to continue: a span
                    # would be a no-op, so skip its cost.
                    await self._invoke(handler, envelope, None)
                else:
                    attributes = dict(attributes_base)
                    attributes["messaging.message.id"] = envelope._event.id
                    with tracer.start_as_current_span(
                        span_name,
                        context=_tracing.extract(event_attributes),
                        kind=trace.SpanKind.CONSUMER,
                        attributes=attributes,
                        record_exception=False,
                        set_status_on_exception=False,
                    ) as span:
                        await self._invoke(handler, envelope, span)
                if self._closed:
                    return
        finally:
            self._closed = True
            self._run_task = None
            try:
                await self._shutdown()
            finally:
                self._run_done.set()

    # -- internals ----------------------------------------------------------

    @staticmethod
    async def _invoke(
        handler: Handler[M], envelope: Envelope[M], span: trace.Span | None
    ) -> None:
        """Calls the handler: returning acks, raising nacks (and logs
        anything but :class:`Reject`)."""
        try:
            result = handler(envelope)
            if result is not None and inspect.isawaitable(result):
                await result
        except Reject as reject:
            envelope.nack(reject.delay, reject.reason)
        except Exception as error:  # noqa: BLE001 - the loop must survive
            _log.exception("event handler raised on event %s", envelope.id)
            if span is not None:
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
            envelope.nack(None, f"handler raised {type(error).__name__}: {error}")
        else:
            envelope.ack()

    def _wrap(
        self, delivery: subscriber_pb2.DeliveredEvent, session: _Session
    ) -> Envelope[M] | bool:
        """Decodes a delivery; nacks it (and returns False) if it does not decode."""
        try:
            value = self._decode(delivery.event.data)
        except _ProtoDecodeError as e:
            error = DecodeError(delivery.event.id, self._event_type.full_name, str(e))
            _log.warning("nacking an event that does not decode: %s", error)
            session.finish(("nack", delivery.ack_handle, None, error.message))
            return False
        return Envelope(value, delivery, session, self.subscription)

    async def _attach_once(self) -> None:
        """Opens a stream and waits for ``Attached``."""
        session = _Session(self._attach.initial_credits)
        call = self._stub.Subscribe(session.requests(self._attach))
        session.call = call
        timeout = self._client.request_timeout

        async def attached() -> subscriber_pb2.Attached:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise HeraldError(
                        ErrorCode.UNSPECIFIED,
                        grpc.StatusCode.UNAVAILABLE,
                        "the server ended the stream before attaching",
                    )
                which = response.WhichOneof("response")
                if which == "attached":
                    result: subscriber_pb2.Attached = response.attached
                    return result
                if which == "events":
                    session.deliveries.extend(response.events.events)
                elif which == "active_status":
                    self._set_active(response.active_status)

        try:
            self.attached = await asyncio.wait_for(attached(), timeout)
        except TimeoutError:
            session.half_close()
            call.cancel()
            raise RequestTimeoutError(f"no Attached from the server within {timeout} s") from None
        except grpc.RpcError as e:
            session.half_close()
            raise HeraldError.from_rpc_error(e) from None
        except BaseException:
            session.half_close()  # ends the request iterator
            raise
        self._session = session

    def _set_active(self, status: subscriber_pb2.ActiveStatus) -> None:
        state = ActiveState(
            active=status.active,
            active_consumer=status.active_consumer,
            epoch=status.epoch,
            partitions=tuple(status.partitions),
        )
        changed = self.active_state is None or self.active_state.active != state.active
        self.active_state = state
        if changed and self._on_active_change is not None:
            try:
                self._on_active_change(state)
            except Exception:  # noqa: BLE001
                _log.exception("on_active_change callback raised")

    async def _next_envelope(self) -> Envelope[M] | bool | None:
        """The next envelope; ``False`` for a delivery that did not decode
        (already nacked); ``None`` when the stream ended."""
        if not self._started:
            await self.start()
        self._reading = True
        self._read_done.clear()
        try:
            delivery = await self._next_delivery()
        finally:
            self._reading = False
        if delivery is None:
            self._read_done.set()
            return None
        session = self._session
        assert session is not None
        return self._wrap(delivery, session)

    async def _next_delivery(self) -> subscriber_pb2.DeliveredEvent | None:
        failures = 0
        while True:
            session = self._session
            if session is None:
                if self._closed:
                    return None
                # Re-attaching after a failure.
                await asyncio.sleep(self._client.reconnect_policy.delay(failures))
                if self._closed:
                    return None
                try:
                    await self._attach_once()
                    _log.info("re-attached to subscription %s", self.subscription)
                    failures = 0
                except HeraldError as e:
                    if not e.is_transient:
                        raise
                    _log.debug("re-attach failed (%s); retrying", e)
                    failures += 1
                continue
            if session.deliveries:
                return session.deliveries.popleft()
            try:
                response = await session.call.read()
            except grpc.RpcError as e:
                error = HeraldError.from_rpc_error(e)
                self._session = None
                session.half_close()  # ends the request iterator too
                if self._closed:
                    return None
                if self._reconnect and error.is_transient:
                    _log.warning("subscription stream failed (%s); re-attaching", error)
                    continue
                raise error from None
            if response is grpc.aio.EOF:
                self._session = None
                session.half_close()  # ends the request iterator too
                return None
            which = response.WhichOneof("response")
            if which == "events":
                session.deliveries.extend(response.events.events)
            elif which == "active_status":
                self._set_active(response.active_status)
            elif which == "error":
                detail = response.error
                _log.warning(
                    "subscription request refused: %s", HeraldError.from_detail(detail)
                )
            elif which == "ack_result":
                _log.debug(
                    "acks not applied: %d invalid, %d stale",
                    len(response.ack_result.invalid_handles),
                    len(response.ack_result.stale_handles),
                )


async def _drain(session: _Session) -> None:
    """Reads until the server ends the stream (after a half-close)."""
    if session.call.done():
        return  # already ended (or cancelled along with a cancelled read)

    async def drain() -> None:
        while True:
            response = await session.call.read()
            if response is grpc.aio.EOF:
                return

    try:
        await asyncio.wait_for(drain(), CLOSE_TIMEOUT)
    except TimeoutError:
        _log.warning("the server did not end the subscription stream within 5 s")
        session.call.cancel()
    except grpc.RpcError:
        pass
