"""``Client``: one gRPC channel to a Herald server, and the factory of typed
producers and consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypedDict, TypeVar, Unpack
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import Message

from herald._consumer import ActiveState, Consumer
from herald._errors import ClosedError, ConnectError, describe_connection_failure
from herald._producer import Producer
from herald._types import (
    DEFAULT_KEEPALIVE,
    EventType,
    Keepalive,
    Position,
    ReconnectPolicy,
    Redelivery,
    SubscriptionType,
)

__all__ = ["Client", "ProducerOptions", "ConsumerOptions"]

M = TypeVar("M", bound=Message)

#: What connecting calls to see whether the server is reachable (any answer
#: will do, even UNIMPLEMENTED).
_PROBE_METHOD = "/grpc.health.v1.Health/Check"


class ProducerOptions(TypedDict, total=False):
    """Options of :meth:`Client.producer` (all optional)."""

    topic: str
    """Publish to this topic instead of the event type's."""
    source: str
    """The CloudEvents ``source`` instead of the event type's."""
    linger: float
    """Seconds the first event of a batch waits for more. Default 0.001."""
    max_batch: int
    """Most events in one request. Default 1000."""
    max_in_flight: int
    """Most requests sent and not yet answered. Default 8."""


class ConsumerOptions(TypedDict, total=False):
    """Options of :meth:`Client.consumer` (all optional)."""

    topic: str
    """Consume this topic instead of the event type's."""
    type: SubscriptionType
    """The subscription type. Default ``SubscriptionType.SHARED``."""
    consumer_name: str
    """This consumer's name, unique in the subscription. Default: the server picks one."""
    priority: int
    """Failover: lower values are preferred for the active role. Default 0."""
    initial_position: Position
    """Where a new subscription starts. Default ``Position.LATEST``."""
    credits: int
    """Most deliveries outstanding at once (the credit window). Default 100."""
    ack_deadline: float
    """Seconds before an unacked event is redelivered (new subscription). Server default 30."""
    redelivery: Redelivery
    """Redelivery and dead-letter policy (new subscription)."""
    reconnect: bool
    """Re-attach after ``UNAVAILABLE``/transport failures. Default True."""
    on_active_change: Callable[[ActiveState], None]
    """Failover: called when the server makes this consumer active or standby."""


class Client:
    """A connection to a Herald server.

    Args:
        endpoint: ``host:port`` or ``http://host:port`` (plaintext), or
            ``https://host:port`` (TLS verified with the system roots);
            without a port 80 / 443.
        connect_timeout: seconds :meth:`connect` waits for a server that
            accepts the connection but does not answer (also the least time
            gRPC gives one connection attempt). Default 10.
        request_timeout: seconds a publish (including its resends after a
            connection loss) or an attach waits for its answer. Default 30.
        reconnect: backoff of the channel's own reconnects, of producers'
            resends and of consumers' re-attaches.
        wait_for_server: by default (``False``) :meth:`connect` fails at once
            when the server is not reachable (connection refused, unknown
            host, TLS handshake failure), with the cause in the message.
            Seconds (or ``True``: ``connect_timeout``) to keep trying
            instead, e.g. for a server that starts beside the application.
        keepalive: the connection's HTTP/2 keepalive (default
            :data:`~herald.DEFAULT_KEEPALIVE`: a PING after 20 s without a
            read, dropped after 10 s more without an answer); ``None`` turns
            it off.
        channel_options: more gRPC channel options, ``(name, value)`` pairs;
            they override the SDK's (e.g. ``("grpc.keepalive_time_ms", 5000)``).

    Use it as an async context manager, or ``await Client.connect(...)`` and
    :meth:`close`::

        async with herald.Client("http://127.0.0.1:50551") as client:
            producer = client.producer(USER_SIGNED_UP)

    Once connected, the channel reconnects by itself after a connection loss.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
        reconnect: ReconnectPolicy | None = None,
        wait_for_server: float | bool = False,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        channel_options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout}")
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {request_timeout}")
        if wait_for_server is True:
            wait_for_server = connect_timeout
        if wait_for_server < 0:
            raise ValueError(f"wait_for_server must be >= 0 seconds, got {wait_for_server}")
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self.wait_for_server = float(wait_for_server)
        """Seconds :meth:`connect` keeps trying an unreachable server (0: none)."""
        self.keepalive = keepalive
        self._extra_options = list(channel_options)
        self._target, self._secure = _parse_endpoint(endpoint)
        self._channel: grpc.aio.Channel | None = None

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
        reconnect: ReconnectPolicy | None = None,
        wait_for_server: float | bool = False,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        channel_options: Sequence[tuple[str, str | int]] = (),
    ) -> Client:
        """Creates a client and waits until it is connected (see the class
        for the arguments).

        Raises:
            ConnectError: the endpoint is invalid; the server is not
                reachable (refused, unknown host, TLS handshake failure: at
                once, or after ``wait_for_server`` seconds of trying), with the
                cause in the message; or no answer within ``connect_timeout``.
        """
        client = cls(
            endpoint,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect=reconnect,
            wait_for_server=wait_for_server,
            keepalive=keepalive,
            channel_options=channel_options,
        )
        await client.open()
        return client

    def channel_options(self) -> list[tuple[str, str | int]]:
        """The gRPC channel options the client connects with."""
        policy = self.reconnect_policy
        options: dict[str, str | int] = {
            "grpc.max_receive_message_length": -1,
            "grpc.max_send_message_length": -1,
            "grpc.initial_reconnect_backoff_ms": max(100, round(policy.initial * 1000)),
            # gRPC core's least time for one connection attempt (TCP, TLS,
            # HTTP/2 handshakes), despite the name.
            "grpc.min_reconnect_backoff_ms": max(100, round(self.connect_timeout * 1000)),
            "grpc.max_reconnect_backoff_ms": max(100, round(policy.maximum * 1000)),
            "grpc.enable_retries": 0,
        }
        if self.keepalive is not None:
            options.update(self.keepalive.channel_options())
        options.update(self._extra_options)
        return list(options.items())

    async def open(self) -> None:
        """Connects (idempotent); see :meth:`connect`."""
        if self._channel is not None:
            return
        options = self.channel_options()
        if self._secure:
            channel = grpc.aio.secure_channel(
                self._target, grpc.ssl_channel_credentials(), options=options
            )
        else:
            channel = grpc.aio.insecure_channel(self._target, options=options)
        try:
            await self._wait_ready(channel)
        except BaseException:
            await channel.close()
            raise
        self._channel = channel

    async def _wait_ready(self, channel: grpc.aio.Channel) -> None:
        """Returns once a call reaches the server. A call that does not wait
        for the connection fails at once with the reason the last
        connection attempt failed, which is what a refusal reports."""
        probe: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_PROBE_METHOD)
        loop = asyncio.get_running_loop()
        start = loop.time()
        wait = self.wait_for_server
        deadline = start + max(self.connect_timeout, wait)
        cause: str | None = None
        while (remaining := deadline - loop.time()) > 0:
            try:
                await probe(b"", timeout=min(self.connect_timeout, remaining), wait_for_ready=False)
                return
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    cause = describe_connection_failure(e.details() or "", self._secure)
                    if wait <= 0:
                        raise ConnectError(f"cannot connect to {self.endpoint}: {cause}") from None
                    if (left := start + wait - loop.time()) > 0:
                        # gRPC keeps trying in the background, with backoff.
                        await asyncio.sleep(min(0.1, left))
                        continue
                elif e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    return  # the server answered (e.g. UNIMPLEMENTED: no health service)
                break
        if cause is not None:
            raise ConnectError(
                f"cannot connect to {self.endpoint}: not reachable within {wait:g} s "
                f"(wait_for_server); last failure: {cause}"
            )
        raise ConnectError(
            f"cannot connect to {self.endpoint}: no answer within the connect timeout "
            f"({self.connect_timeout:g} s): is a Herald server listening there, and is "
            "plaintext vs TLS (http:// vs https://) right?"
        )

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying gRPC channel (for the raw stubs in ``herald.v1``)."""
        if self._channel is None:
            raise ClosedError("the client is not connected: use `await Client.connect(...)`")
        return self._channel

    async def close(self) -> None:
        """Closes the channel; close producers and consumers first."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def producer(self, event_type: EventType[M], **options: Unpack[ProducerOptions]) -> Producer[M]:
        """A batching producer of ``event_type`` events (see :class:`Producer`)."""
        return Producer(self, event_type, **options)

    def consumer(
        self,
        event_type: EventType[M],
        subscription: str,
        **options: Unpack[ConsumerOptions],
    ) -> Consumer[M]:
        """A consumer of ``event_type`` events on ``subscription``; attach it
        with ``async with`` or :meth:`Consumer.start` (see :class:`Consumer`)."""
        return Consumer(self, event_type, subscription, **options)


def _parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """``(grpc target, TLS?)`` from ``host:port``, ``http://host:port`` or
    ``https://host:port`` (the host is resolved on every connection attempt,
    so a changed address is picked up on reconnect)."""
    raw = endpoint.strip()
    if not raw:
        raise ConnectError(
            'no endpoint given: pass e.g. "http://127.0.0.1:50551" or "127.0.0.1:50551"'
        )
    if "://" not in raw:
        raw = "http://" + raw
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError as e:
        raise ConnectError(f"invalid endpoint {endpoint!r}: {e}") from None
    if url.scheme not in ("http", "https"):
        raise ConnectError(
            f"invalid endpoint {endpoint!r}: the scheme must be http or https "
            "(or none: host:port)"
        )
    if not url.hostname or url.path not in ("", "/") or url.query or url.fragment or url.username:
        raise ConnectError(
            f"invalid endpoint {endpoint!r}: use host:port, http://host:port or https://host:port"
        )
    secure = url.scheme == "https"
    host = url.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or (443 if secure else 80)}", secure

