from . import Enum_pb2 as _Enum_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Player(_message.Message):
    __slots__ = ("id", "name", "playerType", "x", "y")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAYERTYPE_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    playerType: _Enum_pb2.PlayerType
    x: float
    y: float
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., playerType: _Optional[_Union[_Enum_pb2.PlayerType, str]] = ..., x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...
