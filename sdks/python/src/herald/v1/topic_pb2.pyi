import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FsyncPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FSYNC_POLICY_UNSPECIFIED: _ClassVar[FsyncPolicy]
    FSYNC_POLICY_BATCH: _ClassVar[FsyncPolicy]
    FSYNC_POLICY_INTERVAL: _ClassVar[FsyncPolicy]
    FSYNC_POLICY_NONE: _ClassVar[FsyncPolicy]
FSYNC_POLICY_UNSPECIFIED: FsyncPolicy
FSYNC_POLICY_BATCH: FsyncPolicy
FSYNC_POLICY_INTERVAL: FsyncPolicy
FSYNC_POLICY_NONE: FsyncPolicy

class TopicConfig(_message.Message):
    __slots__ = ("partitions", "retention_age", "retention_bytes", "fsync_policy", "fsync_interval", "dedup_window", "max_event_bytes", "segment_bytes")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_AGE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_BYTES_FIELD_NUMBER: _ClassVar[int]
    FSYNC_POLICY_FIELD_NUMBER: _ClassVar[int]
    FSYNC_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    partitions: int
    retention_age: _duration_pb2.Duration
    retention_bytes: int
    fsync_policy: FsyncPolicy
    fsync_interval: _duration_pb2.Duration
    dedup_window: _duration_pb2.Duration
    max_event_bytes: int
    segment_bytes: int
    def __init__(self, partitions: _Optional[int] = ..., retention_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retention_bytes: _Optional[int] = ..., fsync_policy: _Optional[_Union[FsyncPolicy, str]] = ..., fsync_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dedup_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_event_bytes: _Optional[int] = ..., segment_bytes: _Optional[int] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "config", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: TopicConfig
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[TopicConfig, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PartitionStats(_message.Message):
    __slots__ = ("partition", "first_offset", "last_offset", "next_offset", "event_count", "bytes", "segments", "last_publish_time")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    partition: int
    first_offset: int
    last_offset: int
    next_offset: int
    event_count: int
    bytes: int
    segments: int
    last_publish_time: _timestamp_pb2.Timestamp
    def __init__(self, partition: _Optional[int] = ..., first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ..., next_offset: _Optional[int] = ..., event_count: _Optional[int] = ..., bytes: _Optional[int] = ..., segments: _Optional[int] = ..., last_publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TopicStats(_message.Message):
    __slots__ = ("topic", "partitions", "event_count", "bytes")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionStats]
    event_count: int
    bytes: int
    def __init__(self, topic: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[PartitionStats, _Mapping]]] = ..., event_count: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
