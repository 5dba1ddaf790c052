from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class PlayerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAYER_TYPE_NONE: _ClassVar[PlayerType]
    PLAYER_TYPE_KNIGHT: _ClassVar[PlayerType]
    PLAYER_TYPE_MAGE: _ClassVar[PlayerType]
    PLAYER_TYPE_ARCHER: _ClassVar[PlayerType]
    PLAYER_TYPE_MONSTER: _ClassVar[PlayerType]
PLAYER_TYPE_NONE: PlayerType
PLAYER_TYPE_KNIGHT: PlayerType
PLAYER_TYPE_MAGE: PlayerType
PLAYER_TYPE_ARCHER: PlayerType
PLAYER_TYPE_MONSTER: PlayerType
