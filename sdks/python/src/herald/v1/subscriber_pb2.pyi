import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from herald.v1 import errors_pb2 as _errors_pb2
from herald.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscriptionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_TYPE_UNSPECIFIED: _ClassVar[SubscriptionType]
    SUBSCRIPTION_TYPE_EXCLUSIVE: _ClassVar[SubscriptionType]
    SUBSCRIPTION_TYPE_SHARED: _ClassVar[SubscriptionType]
    SUBSCRIPTION_TYPE_FAILOVER: _ClassVar[SubscriptionType]
    SUBSCRIPTION_TYPE_KEY_SHARED: _ClassVar[SubscriptionType]
SUBSCRIPTION_TYPE_UNSPECIFIED: SubscriptionType
SUBSCRIPTION_TYPE_EXCLUSIVE: SubscriptionType
SUBSCRIPTION_TYPE_SHARED: SubscriptionType
SUBSCRIPTION_TYPE_FAILOVER: SubscriptionType
SUBSCRIPTION_TYPE_KEY_SHARED: SubscriptionType

class Position(_message.Message):
    __slots__ = ("earliest", "latest", "offsets", "timestamp")
    EARLIEST_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    earliest: _empty_pb2.Empty
    latest: _empty_pb2.Empty
    offsets: PartitionOffsets
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, earliest: _Optional[_Union[_empty_pb2.Empty, _Mapping]] = ..., latest: _Optional[_Union[_empty_pb2.Empty, _Mapping]] = ..., offsets: _Optional[_Union[PartitionOffsets, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionOffsets(_message.Message):
    __slots__ = ("offsets",)
    class OffsetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.ScalarMap[int, int]
    def __init__(self, offsets: _Optional[_Mapping[int, int]] = ...) -> None: ...

class RedeliveryPolicy(_message.Message):
    __slots__ = ("min_backoff", "max_backoff", "multiplier", "max_delivery_attempts", "dead_letter_topic")
    MIN_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERY_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_TOPIC_FIELD_NUMBER: _ClassVar[int]
    min_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    multiplier: float
    max_delivery_attempts: int
    dead_letter_topic: str
    def __init__(self, min_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., max_delivery_attempts: _Optional[int] = ..., dead_letter_topic: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("attach", "ack", "nack", "extend_deadline", "credit")
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    EXTEND_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    attach: Attach
    ack: Ack
    nack: Nack
    extend_deadline: ExtendDeadline
    credit: Credit
    def __init__(self, attach: _Optional[_Union[Attach, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., extend_deadline: _Optional[_Union[ExtendDeadline, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ...) -> None: ...

class Attach(_message.Message):
    __slots__ = ("topic", "subscription", "type", "consumer_name", "priority", "initial_position", "initial_credits", "ack_deadline", "redelivery")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CREDITS_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscription: str
    type: SubscriptionType
    consumer_name: str
    priority: int
    initial_position: Position
    initial_credits: int
    ack_deadline: _duration_pb2.Duration
    redelivery: RedeliveryPolicy
    def __init__(self, topic: _Optional[str] = ..., subscription: _Optional[str] = ..., type: _Optional[_Union[SubscriptionType, str]] = ..., consumer_name: _Optional[str] = ..., priority: _Optional[int] = ..., initial_position: _Optional[_Union[Position, _Mapping]] = ..., initial_credits: _Optional[int] = ..., ack_deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., redelivery: _Optional[_Union[RedeliveryPolicy, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ack_handles", "cumulative")
    ACK_HANDLES_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FIELD_NUMBER: _ClassVar[int]
    ack_handles: _containers.RepeatedScalarFieldContainer[str]
    cumulative: bool
    def __init__(self, ack_handles: _Optional[_Iterable[str]] = ..., cumulative: _Optional[bool] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("ack_handles", "delay", "reason")
    ACK_HANDLES_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ack_handles: _containers.RepeatedScalarFieldContainer[str]
    delay: _duration_pb2.Duration
    reason: str
    def __init__(self, ack_handles: _Optional[_Iterable[str]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ExtendDeadline(_message.Message):
    __slots__ = ("ack_handles", "extension")
    ACK_HANDLES_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    ack_handles: _containers.RepeatedScalarFieldContainer[str]
    extension: _duration_pb2.Duration
    def __init__(self, ack_handles: _Optional[_Iterable[str]] = ..., extension: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("credits",)
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    credits: int
    def __init__(self, credits: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("attached", "events", "active_status", "flow_status", "ack_result", "error")
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    FLOW_STATUS_FIELD_NUMBER: _ClassVar[int]
    ACK_RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attached: Attached
    events: EventBatch
    active_status: ActiveStatus
    flow_status: FlowStatus
    ack_result: AckResult
    error: _errors_pb2.ErrorDetail
    def __init__(self, attached: _Optional[_Union[Attached, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ..., active_status: _Optional[_Union[ActiveStatus, _Mapping]] = ..., flow_status: _Optional[_Union[FlowStatus, _Mapping]] = ..., ack_result: _Optional[_Union[AckResult, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class Attached(_message.Message):
    __slots__ = ("consumer_name", "type", "partitions")
    CONSUMER_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    consumer_name: str
    type: SubscriptionType
    partitions: int
    def __init__(self, consumer_name: _Optional[str] = ..., type: _Optional[_Union[SubscriptionType, str]] = ..., partitions: _Optional[int] = ...) -> None: ...

class DeliveredEvent(_message.Message):
    __slots__ = ("event", "topic", "partition", "offset", "publish_time", "delivery_attempt", "ack_handle", "epoch")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACK_HANDLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    topic: str
    partition: int
    offset: int
    publish_time: _timestamp_pb2.Timestamp
    delivery_attempt: int
    ack_handle: str
    epoch: int
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivery_attempt: _Optional[int] = ..., ack_handle: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DeliveredEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DeliveredEvent, _Mapping]]] = ...) -> None: ...

class ActiveStatus(_message.Message):
    __slots__ = ("active", "active_consumer", "epoch", "partitions")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CONSUMER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    active: bool
    active_consumer: str
    epoch: int
    partitions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, active: _Optional[bool] = ..., active_consumer: _Optional[str] = ..., epoch: _Optional[int] = ..., partitions: _Optional[_Iterable[int]] = ...) -> None: ...

class FlowStatus(_message.Message):
    __slots__ = ("reason", "outstanding", "credits")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[FlowStatus.Reason]
        REASON_NO_CREDITS: _ClassVar[FlowStatus.Reason]
        REASON_UNACKED_LIMIT: _ClassVar[FlowStatus.Reason]
        REASON_RESUMED: _ClassVar[FlowStatus.Reason]
    REASON_UNSPECIFIED: FlowStatus.Reason
    REASON_NO_CREDITS: FlowStatus.Reason
    REASON_UNACKED_LIMIT: FlowStatus.Reason
    REASON_RESUMED: FlowStatus.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    reason: FlowStatus.Reason
    outstanding: int
    credits: int
    def __init__(self, reason: _Optional[_Union[FlowStatus.Reason, str]] = ..., outstanding: _Optional[int] = ..., credits: _Optional[int] = ...) -> None: ...

class AckResult(_message.Message):
    __slots__ = ("invalid_handles", "stale_handles")
    INVALID_HANDLES_FIELD_NUMBER: _ClassVar[int]
    STALE_HANDLES_FIELD_NUMBER: _ClassVar[int]
    invalid_handles: _containers.RepeatedScalarFieldContainer[str]
    stale_handles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, invalid_handles: _Optional[_Iterable[str]] = ..., stale_handles: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("topic", "position", "partitions", "follow", "max_events")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    position: Position
    partitions: _containers.RepeatedScalarFieldContainer[int]
    follow: bool
    max_events: int
    def __init__(self, topic: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., partitions: _Optional[_Iterable[int]] = ..., follow: _Optional[bool] = ..., max_events: _Optional[int] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DeliveredEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DeliveredEvent, _Mapping]]] = ...) -> None: ...
