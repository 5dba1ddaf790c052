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
    __slots__ = ("playerIndex", "roomId", "resumable")
    PLAYERINDEX_FIELD_NUMBER: _ClassVar[int]
    ROOMID_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_FIELD_NUMBER: _ClassVar[int]
    playerIndex: int
    roomId: int
    resumable: bool
    def __init__(self, playerIndex: _Optional[int] = ..., roomId: _Optional[int] = ..., resumable: _Optional[bool] = ...) -> None: ...

class S_ENTER_GAME(_message.Message):
    __slots__ = ("success", "playerId", "x", "y", "resumeToken")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    RESUMETOKEN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    playerId: int
    x: float
    y: float
    resumeToken: str
    def __init__(self, success: _Optional[bool] = ..., playerId: _Optional[int] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., resumeToken: _Optional[str] = ...) -> None: ...

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

class C_MOVE(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class S_MOVE(_message.Message):
    __slots__ = ("playerId", "x", "y")
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    playerId: int
    x: float
    y: float
    def __init__(self, playerId: _Optional[int] = ..., x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class S_SPAWN(_message.Message):
    __slots__ = ("players",)
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    players: _containers.RepeatedCompositeFieldContainer[_Struct_pb2.Player]
    def __init__(self, players: _Optional[_Iterable[_Union[_Struct_pb2.Player, _Mapping]]] = ...) -> None: ...

class S_DESPAWN(_message.Message):
    __slots__ = ("playerIds",)
    PLAYERIDS_FIELD_NUMBER: _ClassVar[int]
    playerIds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, playerIds: _Optional[_Iterable[int]] = ...) -> None: ...

class C_RESUME(_message.Message):
    __slots__ = ("token", "received")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    token: str
    received: int
    def __init__(self, token: _Optional[str] = ..., received: _Optional[int] = ...) -> None: ...

class S_RESUME(_message.Message):
    __slots__ = ("success", "playerId", "resumeToken")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    RESUMETOKEN_FIELD_NUMBER: _ClassVar[int]
    success: bool
    playerId: int
    resumeToken: str
    def __init__(self, success: _Optional[bool] = ..., playerId: _Optional[int] = ..., resumeToken: _Optional[str] = ...) -> None: ...

class C_LEAVE(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
