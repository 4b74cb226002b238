from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_TOPIC_NAME: _ClassVar[ErrorCode]
    ERROR_CODE_EMPTY_BATCH: _ClassVar[ErrorCode]
    ERROR_CODE_EVENT_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_REQUEST_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_TOPIC_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_TOPIC_ALREADY_EXISTS: _ClassVar[ErrorCode]
    ERROR_CODE_PARTITION_COUNT_CHANGE: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_TOPIC_CONFIG: _ClassVar[ErrorCode]
    ERROR_CODE_STORAGE_FULL: _ClassVar[ErrorCode]
    ERROR_CODE_STORAGE_FAILURE: _ClassVar[ErrorCode]
    ERROR_CODE_SHUTTING_DOWN: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_EVENT: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_REQUEST: _ClassVar[ErrorCode]
    ERROR_CODE_IMMUTABLE_TOPIC_SETTING: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_ALREADY_EXISTS: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_TYPE_MISMATCH: _ClassVar[ErrorCode]
    ERROR_CODE_EXCLUSIVE_CONSUMER_ATTACHED: _ClassVar[ErrorCode]
    ERROR_CODE_PROTOCOL_VIOLATION: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_SUBSCRIPTION_NAME: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_IMPLEMENTED: _ClassVar[ErrorCode]
    ERROR_CODE_CONSUMER_NAME_TAKEN: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_HAS_CONSUMERS: _ClassVar[ErrorCode]
    ERROR_CODE_SEEK_PAST_END: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_SUBSCRIPTION_CONFIG: _ClassVar[ErrorCode]
    ERROR_CODE_SUBSCRIPTION_CLOSED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_CREDITS: _ClassVar[ErrorCode]
    ERROR_CODE_TOPIC_DELETED: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_TOPIC_NAME: ErrorCode
ERROR_CODE_EMPTY_BATCH: ErrorCode
ERROR_CODE_EVENT_TOO_LARGE: ErrorCode
ERROR_CODE_REQUEST_TOO_LARGE: ErrorCode
ERROR_CODE_TOPIC_NOT_FOUND: ErrorCode
ERROR_CODE_TOPIC_ALREADY_EXISTS: ErrorCode
ERROR_CODE_PARTITION_COUNT_CHANGE: ErrorCode
ERROR_CODE_INVALID_TOPIC_CONFIG: ErrorCode
ERROR_CODE_STORAGE_FULL: ErrorCode
ERROR_CODE_STORAGE_FAILURE: ErrorCode
ERROR_CODE_SHUTTING_DOWN: ErrorCode
ERROR_CODE_INVALID_EVENT: ErrorCode
ERROR_CODE_INVALID_REQUEST: ErrorCode
ERROR_CODE_IMMUTABLE_TOPIC_SETTING: ErrorCode
ERROR_CODE_SUBSCRIPTION_NOT_FOUND: ErrorCode
ERROR_CODE_SUBSCRIPTION_ALREADY_EXISTS: ErrorCode
ERROR_CODE_SUBSCRIPTION_TYPE_MISMATCH: ErrorCode
ERROR_CODE_EXCLUSIVE_CONSUMER_ATTACHED: ErrorCode
ERROR_CODE_PROTOCOL_VIOLATION: ErrorCode
ERROR_CODE_INVALID_SUBSCRIPTION_NAME: ErrorCode
ERROR_CODE_NOT_IMPLEMENTED: ErrorCode
ERROR_CODE_CONSUMER_NAME_TAKEN: ErrorCode
ERROR_CODE_SUBSCRIPTION_HAS_CONSUMERS: ErrorCode
ERROR_CODE_SEEK_PAST_END: ErrorCode
ERROR_CODE_INVALID_SUBSCRIPTION_CONFIG: ErrorCode
ERROR_CODE_SUBSCRIPTION_CLOSED: ErrorCode
ERROR_CODE_INVALID_CREDITS: ErrorCode
ERROR_CODE_TOPIC_DELETED: ErrorCode

class ErrorDetail(_message.Message):
    __slots__ = ("grpc_code", "code", "message", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GRPC_CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    grpc_code: int
    code: ErrorCode
    message: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, grpc_code: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
