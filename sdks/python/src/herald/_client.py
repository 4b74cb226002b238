"""``Client``: one gRPC channel to a Herald server, and the factory of typed
producers and consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypedDict, TypeVar, Unpack
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import Message

from herald._consumer import ActiveState, Consumer
from herald._errors import ClosedError, ConnectError
from herald._producer import Producer
from herald._types import EventType, Position, ReconnectPolicy, Redelivery, SubscriptionType

__all__ = ["Client", "ProducerOptions", "ConsumerOptions"]

M = TypeVar("M", bound=Message)


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
        endpoint: ``http://host:port`` (plaintext), ``https://host:port``
            (TLS with the system roots) or ``host:port``.
        connect_timeout: seconds :meth:`connect` waits for the connection.
        request_timeout: seconds a publish or an attach waits for its answer.
        reconnect: backoff for re-attaching consumers and for the channel's
            own reconnects.

    Use it as an async context manager, or ``await Client.connect(...)`` and
    :meth:`close`::

        async with herald.Client("http://127.0.0.1:50551") as client:
            producer = client.producer(USER_SIGNED_UP)
    """

    def __init__(
        self,
        endpoint: str,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect_policy = reconnect or ReconnectPolicy()
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
    ) -> Client:
        """Creates a client and waits until it is connected.

        Raises:
            ConnectError: no connection within ``connect_timeout``.
        """
        client = cls(
            endpoint,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect=reconnect,
        )
        await client.open()
        return client

    async def open(self) -> None:
        """Connects (idempotent); see :meth:`connect`."""
        if self._channel is not None:
            return
        policy = self.reconnect_policy
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.initial_reconnect_backoff_ms", max(1, int(policy.initial * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, int(policy.initial * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(policy.maximum * 1000))),
            ("grpc.enable_retries", 0),
        ]
        if self._secure:
            channel = grpc.aio.secure_channel(
                self._target, grpc.ssl_channel_credentials(), options=options
            )
        else:
            channel = grpc.aio.insecure_channel(self._target, options=options)
        try:
            await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)
        except TimeoutError:
            await channel.close()
            raise ConnectError(
                f"cannot connect to {self.endpoint} within {self.connect_timeout} s: "
                "is herald running there?"
            ) from None
        self._channel = channel

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
    """``(grpc target, TLS?)`` from an endpoint URL or ``host:port``."""
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    try:
        url = urlsplit(endpoint)
        port = url.port
    except ValueError as e:
        raise ConnectError(f"invalid endpoint {endpoint!r}: {e}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConnectError(
            f"invalid endpoint {endpoint!r}: use http://host:port, https://host:port or host:port"
        )
    secure = url.scheme == "https"
    host = url.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or (443 if secure else 80)}", secure
