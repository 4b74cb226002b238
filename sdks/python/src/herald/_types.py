"""The value types of the SDK: event bindings, receipts, subscription
settings and the reconnect policy."""

from __future__ import annotations

import datetime as _dt
import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from herald.v1 import publisher_pb2, subscriber_pb2

__all__ = [
    "CONTENT_TYPE_PROTOBUF",
    "EventType",
    "Receipt",
    "SubscriptionType",
    "Position",
    "Redelivery",
    "ReconnectPolicy",
    "Keepalive",
    "DEFAULT_KEEPALIVE",
    "duration_proto",
]

#: The ``data_content_type`` the typed producer sets on every event.
CONTENT_TYPE_PROTOBUF = "application/protobuf"

M = TypeVar("M", bound=Message)


class EventType(Generic[M]):
    """Binds a Protobuf message class to a Herald topic, CloudEvents type and
    source, and the ordering key. protoc-gen-herald (``lang=python``) emits
    one per message carrying the ``(herald.v1.event)`` option; one can also
    be written by hand::

        USER_SIGNED_UP = EventType(
            UserSignedUp, topic="user.signup", type="com.example.user.signed_up",
            source="/services/signup", key=lambda m: m.user_id or None)

    Attributes:
        message_class: the generated message class.
        topic: the topic events of this type are published to.
        type: the CloudEvents ``type``.
        source: the CloudEvents ``source`` producers set unless told otherwise.
        key: returns the ordering key of a message, ``None`` for keyless.
        full_name: the message's full Protobuf name (the events' ``data_schema``).
    """

    __slots__ = ("message_class", "topic", "type", "source", "key", "full_name")

    def __init__(
        self,
        message_class: type[M],
        *,
        topic: str,
        type: str | None = None,
        source: str = "",
        key: Callable[[M], str | None] | None = None,
    ) -> None:
        if not topic:
            raise ValueError(f"EventType({message_class.__name__}): topic must not be empty")
        self.message_class = message_class
        self.full_name: str = message_class.DESCRIPTOR.full_name
        self.topic = topic
        self.type = type or self.full_name
        self.source = source
        self.key = key

    def __repr__(self) -> str:
        return f"EventType({self.full_name}, topic={self.topic!r}, type={self.type!r})"


class Receipt:
    """Where a published event went.

    Attributes:
        id: the event id (the producer's UUIDv7).
        partition: the partition it was stored in.
        offset: its offset in the partition (the original's, for a duplicate).
        duplicate: the id was seen within the topic's dedup window; nothing was stored.
    """

    __slots__ = ("id", "partition", "offset", "duplicate", "_publish_time")

    def __init__(
        self,
        id: str,
        partition: int,
        offset: int,
        duplicate: bool,
        publish_time: timestamp_pb2.Timestamp | None = None,
    ) -> None:
        self.id = id
        self.partition = partition
        self.offset = offset
        self.duplicate = duplicate
        self._publish_time = publish_time

    @property
    def publish_time(self) -> _dt.datetime | None:
        """When the broker stored it (the original, for a duplicate)."""
        if self._publish_time is None:
            return None
        return self._publish_time.ToDatetime(_dt.timezone.utc)

    @classmethod
    def from_proto(cls, r: publisher_pb2.PublishResult) -> Receipt:
        return cls(r.id, r.partition, r.offset, r.duplicate, r.publish_time)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Receipt):
            return NotImplemented
        return (self.id, self.partition, self.offset, self.duplicate) == (
            other.id,
            other.partition,
            other.offset,
            other.duplicate,
        )

    def __hash__(self) -> int:
        return hash((self.id, self.partition, self.offset))

    def __repr__(self) -> str:
        return (
            f"Receipt(id={self.id!r}, partition={self.partition}, offset={self.offset}, "
            f"duplicate={self.duplicate})"
        )


class SubscriptionType(enum.IntEnum):
    """How events are shared among a subscription's consumers (fixed when the
    subscription is created)."""

    EXCLUSIVE = subscriber_pb2.SUBSCRIPTION_TYPE_EXCLUSIVE
    """One consumer; a second attach is refused."""
    SHARED = subscriber_pb2.SUBSCRIPTION_TYPE_SHARED
    """Round-robin over consumers with free credits; no ordering."""
    FAILOVER = subscriber_pb2.SUBSCRIPTION_TYPE_FAILOVER
    """One active consumer per partition; the rest stand by."""
    KEY_SHARED = subscriber_pb2.SUBSCRIPTION_TYPE_KEY_SHARED
    """One key's events always go to the same consumer, in order."""

    @classmethod
    def parse(cls, name: str) -> SubscriptionType:
        """From ``exclusive``, ``shared``, ``failover`` or ``key_shared``."""
        try:
            return cls[name.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(
                f"unknown subscription type {name!r}: use exclusive, shared, failover or key_shared"
            ) from None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a new subscription starts: :attr:`EARLIEST`, :attr:`LATEST`,
    :meth:`offsets` or :meth:`at`."""

    kind: str
    partition_offsets: Mapping[int, int] | None = None
    timestamp: _dt.datetime | None = None

    EARLIEST: ClassVar[Position]
    """The oldest retained event."""
    LATEST: ClassVar[Position]
    """Only events published from now on (the server's default)."""

    @classmethod
    def offsets(cls, offsets: Mapping[int, int]) -> Position:
        """Explicit offsets per partition; unlisted partitions start at earliest."""
        return cls("offsets", partition_offsets=dict(offsets))

    @classmethod
    def at(cls, when: _dt.datetime) -> Position:
        """The first event published at or after ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ValueError("Position.at needs a timezone-aware datetime")
        return cls("timestamp", timestamp=when)

    @classmethod
    def parse(cls, name: str) -> Position:
        """From ``earliest`` or ``latest``."""
        if name == "earliest":
            return cls.EARLIEST
        if name == "latest":
            return cls.LATEST
        raise ValueError(f"unknown position {name!r}: use earliest or latest")

    def to_proto(self) -> subscriber_pb2.Position:
        if self.kind == "earliest":
            return subscriber_pb2.Position(earliest=empty_pb2.Empty())
        if self.kind == "latest":
            return subscriber_pb2.Position(latest=empty_pb2.Empty())
        if self.kind == "offsets":
            return subscriber_pb2.Position(
                offsets=subscriber_pb2.PartitionOffsets(offsets=dict(self.partition_offsets or {}))
            )
        ts = timestamp_pb2.Timestamp()
        assert self.timestamp is not None
        ts.FromDatetime(self.timestamp)
        return subscriber_pb2.Position(timestamp=ts)


Position.EARLIEST = Position("earliest")
Position.LATEST = Position("latest")


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


@dataclass(frozen=True, slots=True)
class Redelivery:
    """Redelivery with exponential backoff and dead-lettering, for a new
    subscription. ``None`` fields take the server's defaults.

    Attributes:
        min_backoff: first redelivery delay in seconds (server default 1 s).
        max_backoff: longest redelivery delay in seconds (server default 60 s).
        multiplier: delay multiplier per attempt (server default 2.0).
        max_delivery_attempts: past this many deliveries the event goes to the
            dead-letter topic; 0 never dead-letters.
        dead_letter_topic: default ``<topic>.<subscription>.dlq``.
    """

    min_backoff: float | None = None
    max_backoff: float | None = None
    multiplier: float | None = None
    max_delivery_attempts: int = 0
    dead_letter_topic: str | None = None

    def to_proto(self) -> subscriber_pb2.RedeliveryPolicy:
        p = subscriber_pb2.RedeliveryPolicy(
            multiplier=self.multiplier or 0.0,
            max_delivery_attempts=self.max_delivery_attempts,
            dead_letter_topic=self.dead_letter_topic or "",
        )
        if self.min_backoff is not None:
            p.min_backoff.CopyFrom(_duration(self.min_backoff))
        if self.max_backoff is not None:
            p.max_backoff.CopyFrom(_duration(self.max_backoff))
        return p


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Capped exponential backoff with jitter, for re-attaching consumers,
    for producers' resends after a broken stream and for the channel's own
    reconnects.

    Attributes:
        initial: first delay in seconds.
        maximum: the cap in seconds.
        multiplier: growth per failed attempt.
        jitter: each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
        enabled: re-attach consumers at all (producers always resend,
            within each call's timeout).
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    enabled: bool = True

    def delay(self, failures: int) -> float:
        """The delay before attempt ``failures + 1`` (0 failures: the initial delay)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(failures, 64))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive of the client's connection: a PING after ``time``
    seconds without anything read from the server (also with no call open
    when ``permit_without_calls``), and the connection is dropped when no
    answer comes within ``timeout`` seconds more. Open streams then fail
    with ``UNAVAILABLE``: consumers re-attach and producers resend. So a
    frozen or vanished server is noticed at most ``time + timeout`` seconds
    after it last sent anything.

    Attributes:
        time: seconds of silence before a PING; 0 turns keepalive off.
        timeout: seconds a PING may go unanswered.
        permit_without_calls: ping also while no call is open.
    """

    time: float = 20.0
    timeout: float = 10.0
    permit_without_calls: bool = True

    def __post_init__(self) -> None:
        if self.time < 0:
            raise ValueError(f"keepalive time must be >= 0 seconds, got {self.time}")
        if self.time > 0 and self.timeout <= 0:
            raise ValueError(f"keepalive timeout must be > 0 seconds, got {self.timeout}")

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC channel options (``grpc.keepalive_time_ms`` ...) that
        set it; none when it is off."""
        if self.time <= 0:
            return []
        timeout_ms = max(1, round(self.timeout * 1000))
        return [
            ("grpc.keepalive_time_ms", max(1, round(self.time * 1000))),
            ("grpc.keepalive_timeout_ms", timeout_ms),
            # gRPC core waits for any PING's answer this long (1 min by
            # default, which would outlast keepalive_timeout_ms).
            ("grpc.http2.ping_timeout_ms", timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            # Ping even when no data has been sent lately (gRPC core sends
            # at most 2 such pings by default, then stops keeping alive).
            ("grpc.http2.max_pings_without_data", 0),
        ]


#: The client's default keepalive: 20 s without a read, then 10 s for the answer.
DEFAULT_KEEPALIVE = Keepalive()


def duration_proto(seconds: float) -> duration_pb2.Duration:
    """Seconds as a ``google.protobuf.Duration``."""
    return _duration(seconds)

