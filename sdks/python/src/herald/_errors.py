"""Errors: every failure of a Herald call is a :class:`HeraldError` carrying
the Herald :class:`ErrorCode` (read from the ``google.rpc.Status`` details of
the gRPC status, or from an inline ``ErrorDetail`` of a stream), the gRPC
status code and a message a person can act on."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import grpc
from google.rpc import status_pb2

from herald.v1 import errors_pb2

__all__ = [
    "ErrorCode",
    "HeraldError",
    "ConnectError",
    "ClosedError",
    "DecodeError",
    "RequestTimeoutError",
]

_DETAILS_KEY = "grpc-status-details-bin"


class ErrorCode(enum.IntEnum):
    """Why a request failed: mirrors ``herald.v1.ErrorCode`` (same values;
    the member names drop the ``ERROR_CODE_`` prefix). Branch on this, not on
    messages."""

    UNSPECIFIED = 0
    INVALID_TOPIC_NAME = 1
    """INVALID_ARGUMENT: the topic name breaks the naming rule (1-249 characters of [A-Za-z0-9._-], not "." or "..")."""
    EMPTY_BATCH = 2
    """INVALID_ARGUMENT: a publish carried no events."""
    EVENT_TOO_LARGE = 3
    """INVALID_ARGUMENT: one event is larger than the topic's max_event_bytes."""
    REQUEST_TOO_LARGE = 4
    """RESOURCE_EXHAUSTED: the whole request is larger than the server's max request size (--max-request-bytes)."""
    TOPIC_NOT_FOUND = 5
    """NOT_FOUND: no such topic (and auto-create is off, or it was an admin call)."""
    TOPIC_ALREADY_EXISTS = 6
    """ALREADY_EXISTS: a topic with that name exists."""
    PARTITION_COUNT_CHANGE = 7
    """FAILED_PRECONDITION: a topic's partition count cannot change."""
    INVALID_TOPIC_CONFIG = 8
    """INVALID_ARGUMENT: a topic setting is out of range or unknown (e.g. an fsync policy value this server does not know)."""
    STORAGE_FULL = 9
    """RESOURCE_EXHAUSTED: the disk is full; nothing of the request was stored."""
    STORAGE_FAILURE = 10
    """INTERNAL: storage failed (I/O error, corruption); see the message."""
    SHUTTING_DOWN = 11
    """UNAVAILABLE: the server is shutting down; retry against another instance or after restart."""
    INVALID_EVENT = 12
    """INVALID_ARGUMENT: an event field is malformed (e.g. id too long)."""
    INVALID_REQUEST = 13
    """INVALID_ARGUMENT: a request field other than the event is malformed."""
    IMMUTABLE_TOPIC_SETTING = 14
    """FAILED_PRECONDITION: UpdateTopic tried to change a setting fixed at creation (fsync policy, fsync interval, segment size, dedup window)."""
    SUBSCRIPTION_NOT_FOUND = 20
    """NOT_FOUND: no such subscription."""
    SUBSCRIPTION_ALREADY_EXISTS = 21
    """ALREADY_EXISTS: a subscription with that name exists on the topic."""
    SUBSCRIPTION_TYPE_MISMATCH = 22
    """FAILED_PRECONDITION: attach asked for a type other than the subscription's."""
    EXCLUSIVE_CONSUMER_ATTACHED = 23
    """FAILED_PRECONDITION: an exclusive subscription already has a consumer."""
    PROTOCOL_VIOLATION = 24
    """INVALID_ARGUMENT: the first Subscribe message was not an attach, or a later one was an attach."""
    INVALID_SUBSCRIPTION_NAME = 25
    """INVALID_ARGUMENT: the subscription name breaks the naming rule."""
    NOT_IMPLEMENTED = 26
    """UNIMPLEMENTED: this server does not implement the call yet."""
    CONSUMER_NAME_TAKEN = 27
    """ALREADY_EXISTS: another consumer of the subscription has this name."""
    SUBSCRIPTION_HAS_CONSUMERS = 28
    """FAILED_PRECONDITION: DeleteSubscription without force while consumers are connected."""
    SEEK_PAST_END = 29
    """INVALID_ARGUMENT: Seek to an offset past the end of a partition."""
    INVALID_SUBSCRIPTION_CONFIG = 30
    """INVALID_ARGUMENT: an ack deadline, backoff or dead-letter setting is out of range."""
    SUBSCRIPTION_CLOSED = 31
    """UNAVAILABLE: the subscription was deleted (or its topic) while the consumer was attached."""
    INVALID_CREDITS = 32
    """INVALID_ARGUMENT: a Credit message granted zero credits."""
    TOPIC_DELETED = 33
    """NOT_FOUND: the topic was deleted while the call was using it (publishing again re-creates it when the server creates topics on first publish)."""

    @property
    def proto_name(self) -> str:
        """The value's name in errors.proto, e.g. ``ERROR_CODE_TOPIC_NOT_FOUND``."""
        return "ERROR_CODE_" + self.name

    @classmethod
    def from_value(cls, value: int) -> ErrorCode:
        """The member for a wire value; ``UNSPECIFIED`` for one this SDK does not know."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


_GRPC_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


class HeraldError(Exception):
    """A Herald call failed.

    Attributes:
        code: which Herald error it is (``ErrorCode.UNSPECIFIED`` when the
            failure did not come from Herald, e.g. a transport error).
        grpc_code: the gRPC status code.
        message: a sentence a person can act on.
        metadata: facts about the failure, e.g. ``{"topic": "orders"}``.
    """

    def __init__(
        self,
        code: ErrorCode,
        grpc_code: grpc.StatusCode,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, grpc_code, message)
        self.code = code
        self.grpc_code = grpc_code
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return f"{self.code.proto_name} ({self.grpc_code.name}): {self.message}"

    @property
    def is_transient(self) -> bool:
        """Whether retrying later (after reconnecting) may succeed:
        ``UNAVAILABLE`` and transport failures, except a subscription deleted
        under its consumer (re-attaching would silently recreate it)."""
        if self.code == ErrorCode.SUBSCRIPTION_CLOSED:
            return False
        return self.grpc_code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )

    @classmethod
    def from_detail(cls, detail: errors_pb2.ErrorDetail) -> HeraldError:
        """From an inline ``herald.v1.ErrorDetail``."""
        return cls(
            ErrorCode.from_value(detail.code),
            _GRPC_CODES.get(detail.grpc_code, grpc.StatusCode.UNKNOWN),
            detail.message,
            detail.metadata,
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> HeraldError:
        """From a failed call: the ``ErrorDetail`` in the status details
        (trailer ``grpc-status-details-bin``) when the server sent one,
        otherwise the bare gRPC status."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, value in trailing or ():
            if key != _DETAILS_KEY or not isinstance(value, bytes):
                continue
            status = status_pb2.Status.FromString(value)
            for any_detail in status.details:
                detail = errors_pb2.ErrorDetail()
                if any_detail.Unpack(detail):
                    error_obj = cls.from_detail(detail)
                    if error_obj.grpc_code == grpc.StatusCode.UNKNOWN:
                        error_obj.grpc_code = code
                    return error_obj
        return cls(ErrorCode.UNSPECIFIED, code or grpc.StatusCode.UNKNOWN, message or "")


class ConnectError(HeraldError):
    """The endpoint is invalid, or connecting failed: the server refused the
    connection, the host name does not resolve, the TLS handshake failed
    (the message names the cause), or no answer came within the connect
    timeout (or the ``wait_for_server`` time)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UNSPECIFIED, grpc.StatusCode.UNAVAILABLE, message)


class RequestTimeoutError(HeraldError):
    """No answer within the call's timeout (by default the client's request
    timeout); the call may still have taken effect on the server. For a
    publish the message names the last connection failure (also in
    ``__cause__``) and ``metadata["id"]`` the event id: publishing it again
    with that id is safe, the broker drops duplicate ids."""

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(
            ErrorCode.UNSPECIFIED, grpc.StatusCode.DEADLINE_EXCEEDED, message, metadata
        )


class ClosedError(HeraldError):
    """The producer, consumer or client was closed."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UNSPECIFIED, grpc.StatusCode.CANCELLED, message)


class DecodeError(HeraldError):
    """An event's payload does not decode as the expected message type.

    Attributes:
        event_id: the event's id.
        schema: the full name of the message type expected.
    """

    def __init__(self, event_id: str, schema: str, reason: str) -> None:
        super().__init__(
            ErrorCode.UNSPECIFIED,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"cannot decode event {event_id} as {schema}: {reason}",
        )
        self.event_id = event_id
        self.schema = schema


def describe_connection_failure(details: str, secure: bool = False) -> str:
    """A connection failure gRPC reported (a status message), led by what it
    means: "connection refused (...)", "the host name does not resolve
    (...)", "TLS handshake failed (...)"."""
    lower = details.lower()
    if "connection refused" in lower:
        return f"connection refused ({details})"
    if "resolv" in lower or "dns" in lower or "domain name not found" in lower:
        return f"the host name does not resolve ({details})"
    if "handshake" in lower or "ssl" in lower or "tls" in lower:
        hint = ": is the server plaintext (use http:// or host:port)?" if secure else ""
        return f"TLS handshake failed{hint} ({details})"
    return details
