"""A player in the world: one character of one logged-in session.

A game with data of its own per player subclasses Player (Game.player_class;
a slots dataclass too, its fields with defaults). A player connected to
another worker reaches the room's owner as its card (to_card/from_card): a
subclass whose room needs more of it there extends both.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

_CARD = struct.Struct("<QI")


@dataclass(eq=False, slots=True, weakref_slot=True)
class Player:
    player_id: int          # in-game id, from the server's generator (not the database id)
    db_id: int              # the character row; 0 for a guest's characters
    name: str
    player_type: int
    # Player <-> session is a reference cycle while in game; GameSession breaks
    # it on disconnect so neither outlives the connection. (Annotated as Any:
    # this module imports neither the session's nor the room's.)
    session: Optional[Any] = field(default=None, repr=False)
    room: Optional[Any] = field(default=None, repr=False)
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

    def on_removed_from_room(self, room, why: str = "room_refused") -> None:
        """The room's owner (another worker) refused the player's enter, for
        `why` (room_full, room_refused): its session is back to choosing a room."""
        session = self.session
        if session is not None:
            session.enter_refused(self, why, "enter refused by room %d's owner: %s",
                                  room.room_id, why.replace("_", " "))
        self.session = None

    # What another worker's room needs to know of the player (never the db id).
    def to_card(self) -> bytes:
        return _CARD.pack(self.player_id, self.player_type) + self.name.encode()

    @classmethod
    def from_card(cls, card: bytes, gateway: tuple) -> "Player":
        player_id, player_type = _CARD.unpack_from(card)
        return cls(player_id, 0, card[_CARD.size:].decode(), player_type, gateway=gateway)


MAX_PLAYER_ID = 2 ** 64 - 1     # Protocol.Player.id and S_CHAT.playerId are uint64


class PlayerIdAllocator:
    """In-game player ids: first, first + stride, first + 2 * stride, ...

    The one place ids come from (GameServer.player_ids). An id is issued per
    character at login, sent in S_LOGIN.players[i].id, and becomes the
    player's id if the client enters with that character; it is never issued
    twice while the server runs. Processes that share rooms give each worker
    an id space of its own: `first=k + 1, stride=n` for worker k of n, or a
    range `first..last` each (what netcore-server --workers does). 0 is never
    issued: S_CHAT from the room itself carries it.
    """

    def __init__(self, first: int = 1, stride: int = 1, last: int = MAX_PLAYER_ID):
        if not (isinstance(first, int) and 1 <= first <= MAX_PLAYER_ID):
            raise ValueError(f"first player id must be in 1..{MAX_PLAYER_ID}, not {first!r}")
        if not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"player id stride must be >= 1, not {stride!r}")
        if not (isinstance(last, int) and first <= last <= MAX_PLAYER_ID):
            raise ValueError(f"last player id must be in {first}..{MAX_PLAYER_ID}, not {last!r}")
        self.first = first
        self.stride = stride
        self.last = last
        self._next = first

    def take(self, n: int) -> tuple[int, ...]:
        """n ids never issued before."""
        start = self._next
        end = start + n * self.stride
        if n and end - self.stride > self.last:
            raise OverflowError(f"player ids exhausted (the last is {self.last}"
                                f"{', the uint64 maximum' if self.last == MAX_PLAYER_ID else ''})")
        self._next = end
        return tuple(range(start, end, self.stride))
