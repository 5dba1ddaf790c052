"""A player in the world: one character of one logged-in session.

A game with data of its own per player subclasses Player (Game.player_class;
a slots dataclass too, its fields with defaults). A player connected to
another worker reaches the room's owner as its card (to_card/from_card): a
subclass whose room needs more of it there extends both.
"""
from __future__ import annotations

import collections
import struct
import time
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
    """In-game player ids: first, first + stride, ..., up to last, and round again.

    The one place ids come from (GameServer.player_ids). An id is issued per
    character at login, sent in S_LOGIN.players[i].id, and becomes the
    player's id if the client enters with that character. Processes that
    share rooms give each worker an id space of its own: `first=k + 1,
    stride=n` for worker k of n, or a range `first..last` each (what
    netcore-server --workers does). 0 is never issued: S_CHAT from the room
    itself carries it.

    Ids never run out, and an id is never issued while anyone may still
    hear of its last holder. A cursor goes through the range; an id it
    reaches is issued unless it is held (issued and not released) or
    resting. A session's ids are released when it ends (release()): those it
    never entered with at once (only its own client knew them), the one it
    played with after `quarantine` seconds, for the packets about it still
    on their way. So the first round issues ids in order and only a server
    that has issued the whole range (2**32 per worker) comes round to reuse
    them. Resting ids are recorded only where the cursor could reach them
    in time: at most a range/8 of ids is issued per quarantine (past it a
    take fails, OverflowError), so an id released more than half a range
    ahead of the cursor cannot come round before its rest is over; in a
    range under SMALL_RANGE every one is recorded. Memory is the ids held,
    and the few resting.
    """

    SMALL_RANGE = 1 << 20

    def __init__(self, first: int = 1, stride: int = 1, last: int = MAX_PLAYER_ID,
                 quarantine: float = 300.0, clock=time.monotonic):
        if not (isinstance(first, int) and 1 <= first <= MAX_PLAYER_ID):
            raise ValueError(f"first player id must be in 1..{MAX_PLAYER_ID}, not {first!r}")
        if not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"player id stride must be >= 1, not {stride!r}")
        if not (isinstance(last, int) and first <= last <= MAX_PLAYER_ID):
            raise ValueError(f"last player id must be in {first}..{MAX_PLAYER_ID}, not {last!r}")
        if not quarantine >= 0:
            raise ValueError(f"quarantine must be >= 0 seconds, not {quarantine!r}")
        self.first = first
        self.stride = stride
        self.last = first + (last - first) // stride * stride     # the last one issued
        self.count = (last - first) // stride + 1
        self.quarantine = quarantine
        self.clock = clock
        self._next = first
        self.held: set[int] = set()
        self.resting: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.rounds = 0                     # times the cursor went past the last id
        # Ids issued in the current quarantine window (large ranges only).
        self._window_start = clock()
        self._window_issued = 0

    def take(self, n: int) -> tuple[int, ...]:
        """n ids, none held or resting; OverflowError when there are not n to
        be had (every id held or resting, or a range/8 issued this quarantine)."""
        now = self.clock()
        self._prune(now)
        if self.count >= self.SMALL_RANGE and self.quarantine:
            if now - self._window_start >= self.quarantine:
                self._window_start, self._window_issued = now, 0
            if self._window_issued + n > self.count // 8:
                raise OverflowError(f"player ids: {self._window_issued} issued in the last "
                                    f"{self.quarantine:g} s, a range/8 (ids are issued no "
                                    f"faster, so that none can come round while it rests)")
            self._window_issued += n
        ids = []
        looked = 0
        while len(ids) < n:
            if looked == self.count:
                for i in ids:
                    self.held.discard(i)
                raise OverflowError(
                    f"player ids exhausted: all {self.count} of {self.first}..{self.last} (the "
                    f"last is {self.last}{', the uint64 maximum' if self.last == MAX_PLAYER_ID else ''}"
                    f") are held or resting")
            candidate = self._next
            self._next += self.stride
            if self._next > self.last:
                self._next = self.first
                self.rounds += 1
            looked += 1
            if candidate in self.held or candidate in self.resting:
                continue
            self.held.add(candidate)
            ids.append(candidate)
        return tuple(ids)

    def release(self, ids, *, heard: bool) -> None:
        """A session's ids are free again: at once when nobody but its own
        client ever heard of them, else after the quarantine (`heard`: it
        asked to enter a room with one of them)."""
        held = self.held
        for i in ids:
            held.discard(i)
        if not heard or not self.quarantine:
            return
        until = self.clock() + self.quarantine
        for i in ids:
            ahead = (i - self._next) // self.stride % self.count
            if self.count < self.SMALL_RANGE or ahead <= self.count // 2:
                self.resting[i] = until

    def _prune(self, now: float) -> None:
        resting = self.resting
        while resting:
            i, until = next(iter(resting.items()))
            if until > now:
                break
            resting.popitem(last=False)
