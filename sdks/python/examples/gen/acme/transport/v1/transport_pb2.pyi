from herald.v1 import options_pb2 as _options_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RouteAllocationRecorded(_message.Message):
    __slots__ = ("route_id", "driver_id", "vehicle_id")
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ID_FIELD_NUMBER: _ClassVar[int]
    VEHICLE_ID_FIELD_NUMBER: _ClassVar[int]
    route_id: str
    driver_id: str
    vehicle_id: str
    def __init__(self, route_id: _Optional[str] = ..., driver_id: _Optional[str] = ..., vehicle_id: _Optional[str] = ...) -> None: ...

class DriverAlertRequested(_message.Message):
    __slots__ = ("driver_id", "route_id", "message")
    DRIVER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    driver_id: str
    route_id: str
    message: str
    def __init__(self, driver_id: _Optional[str] = ..., route_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
