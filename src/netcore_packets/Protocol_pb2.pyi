from . import Enum_pb2 as _Enum_pb2
from . import Struct_pb2 as _Struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class C_LOGIN(_message.Message):
    __slots__ = ("account", "password")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class S_LOGIN(_message.Message):
    __slots__ = ("success", "players")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    players: _containers.RepeatedCompositeFieldContainer[_Struct_pb2.Player]
    def __init__(self, success: _Optional[bool] = ..., players: _Optional[_Iterable[_Union[_Struct_pb2.Player, _Mapping]]] = ...) -> None: ...

class C_ENTER_GAME(_message.Message):
    __slots__ = ("playerIndex", "roomId")
    PLAYERINDEX_FIELD_NUMBER: _ClassVar[int]
    ROOMID_FIELD_NUMBER: _ClassVar[int]
    playerIndex: int
    roomId: int
    def __init__(self, playerIndex: _Optional[int] = ..., roomId: _Optional[int] = ...) -> None: ...

class S_ENTER_GAME(_message.Message):
    __slots__ = ("success", "playerId")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    playerId: int
    def __init__(self, success: _Optional[bool] = ..., playerId: _Optional[int] = ...) -> None: ...

class C_CHAT(_message.Message):
    __slots__ = ("msg",)
    MSG_FIELD_NUMBER: _ClassVar[int]
    msg: str
    def __init__(self, msg: _Optional[str] = ...) -> None: ...

class S_CHAT(_message.Message):
    __slots__ = ("playerId", "msg")
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    playerId: int
    msg: str
    def __init__(self, playerId: _Optional[int] = ..., msg: _Optional[str] = ...) -> None: ...
