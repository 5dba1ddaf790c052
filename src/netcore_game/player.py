"""A player in the world: one character of one logged-in session."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from netcore_game.room import Room
    from netcore_game.session import GameSession


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


MAX_PLAYER_ID = 2 ** 64 - 1     # Protocol.Player.id and S_CHAT.playerId are uint64


class PlayerIdAllocator:
    """In-game player ids: first, first + stride, first + 2 * stride, ...

    The one place ids come from (GameServer.player_ids). An id is issued per
    character at login, sent in S_LOGIN.players[i].id, and becomes the
    player's id if the client enters with that character; it is never issued
    twice while the server runs. Processes that share rooms give each worker
    k of n `first=k + 1, stride=n`, so their ids never meet. 0 is never
    issued: S_CHAT from the room itself carries it.
    """

    def __init__(self, first: int = 1, stride: int = 1):
        if not (isinstance(first, int) and 1 <= first <= MAX_PLAYER_ID):
            raise ValueError(f"first player id must be in 1..{MAX_PLAYER_ID}, not {first!r}")
        if not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"player id stride must be >= 1, not {stride!r}")
        self.first = first
        self.stride = stride
        self._next = first

    def take(self, n: int) -> tuple[int, ...]:
        """n ids never issued before."""
        start = self._next
        end = start + n * self.stride
        if n and end - self.stride > MAX_PLAYER_ID:
            raise OverflowError("player ids exhausted (uint64)")
        self._next = end
        return tuple(range(start, end, self.stride))
