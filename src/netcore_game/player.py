"""A player in the world: one character of one logged-in session."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from netcore_game.room import Room
    from netcore_game.session import GameSession

_CARD = struct.Struct("<QI")


@dataclass(eq=False)
class Player:
    player_id: int          # in-game id, from the server's generator (not the database id)
    db_id: int              # the character row; 0 for a guest's characters
    name: str
    player_type: int
    # Player <-> session is a reference cycle while in game; GameSession breaks
    # it on disconnect so neither outlives the connection.
    session: Optional["GameSession"] = field(default=None, repr=False)
    room: Optional["Room"] = field(default=None, repr=False)
    # On a room's owner, a player connected to another worker: that worker's
    # (slot, epoch); None for a player connected here.
    gateway: Optional[tuple] = field(default=None, repr=False)

    @property
    def member_id(self) -> int:
        return self.player_id

    def send(self, buf) -> None:
        """One packet to this player, wherever it is connected."""
        if self.session is not None:
            self.session.send(buf)
        elif self.gateway is not None and self.room is not None and self.room.link is not None:
            self.room.link.unicast(self, buf)

    # What another worker's room needs to know of the player (never the db id).
    def to_card(self) -> bytes:
        return _CARD.pack(self.player_id, self.player_type) + self.name.encode()

    @classmethod
    def from_card(cls, card: bytes, gateway: tuple) -> "Player":
        player_id, player_type = _CARD.unpack_from(card)
        return cls(player_id, 0, card[_CARD.size:].decode(), player_type, gateway=gateway)
