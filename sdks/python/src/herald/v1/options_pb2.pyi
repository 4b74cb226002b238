from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
EVENT_FIELD_NUMBER: _ClassVar[int]
event: _descriptor.FieldDescriptor

class EventOptions(_message.Message):
    __slots__ = ("topic", "type", "source", "key_field")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    topic: str
    type: str
    source: str
    key_field: str
    def __init__(self, topic: _Optional[str] = ..., type: _Optional[str] = ..., source: _Optional[str] = ..., key_field: _Optional[str] = ...) -> None: ...
