"""Rooms: who hears whom. A Room is a JobQueue; its state is touched only by its jobs.

Handlers push jobs (enter, leave, chat) and return; the room runs them one at
a time, in order, time-sliced with every other room. Every packet that fans
out goes through Room.broadcast: the seam a multi-process backend replaces.

Bounds. A room admits at most `max_players` (counted when the enter is
accepted, before its job runs, so the answer is immediate and exact); a
further enter is refused. Chats wait in the room's queue at most
`max_queue` jobs deep; past it a chat is dropped and counted, never queued
(enters and leaves are never dropped: each session makes at most one of
each). A room lives while it has members, entered or entering: when the last
one leaves it is dropped at once, whatever ticks or drain jobs are still
queued (they are dropped with it; a drain waiting on it is released).
"""
from __future__ import annotations

import asyncio

from netcore import JobQueue, send_to_all
from netcore_packets.Protocol_pb2 import S_CHAT
from netcore_packets.server_dispatch import make_send_buffer

from netcore_game.player import Player

SYSTEM_PLAYER_ID = 0        # S_CHAT from the room itself (announcements)


class Room(JobQueue):
    def __init__(self, room_id: int, rooms: "Rooms"):
        super().__init__()
        self.room_id = room_id
        self.rooms = rooms
        self.players: dict[int, Player] = {}
        self.members = 0                    # admitted: entered, or with an enter queued
        self._sessions: list | None = []     # fan-out list, rebuilt after a change
        self._drains: list | None = None    # futures of Rooms.drain waiting on this room

    def __len__(self) -> int:
        return len(self.players)

    # -- admission: from handlers, before the job is pushed ---------------------------

    def admit(self) -> bool:
        """Take a member's place for an enter about to be queued; False when full."""
        if self.members >= self.rooms.max_players:
            return False
        self.members += 1
        return True

    # -- jobs: run only from this room's queue ----------------------------------

    def enter(self, player: Player) -> None:
        self.players[player.player_id] = player
        self._sessions = None

    def leave(self, player: Player) -> None:
        if self.players.pop(player.player_id, None) is not None:
            self._sessions = None
        player.session = None           # the last link of the player <-> session cycle
        self.members -= 1
        if self.members <= 0:
            self.rooms.drop(self)

    def chat(self, player: Player, msg: str) -> None:
        # Serialized once, whatever the room size.
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=msg)))

    def announce(self) -> None:
        """The room's own tick: tell everyone how many are here."""
        self.broadcast(make_send_buffer(S_CHAT(
            playerId=SYSTEM_PLAYER_ID, msg=f"room {self.room_id}: {len(self.players)} players")))

    def broadcast(self, buf) -> int:
        """Queue one send buffer to every member, the sender included."""
        if self._sessions is None:
            self._sessions = [p.session for p in self.players.values()]
        return send_to_all(self._sessions, buf)


def _drained(room: Room, fut) -> None:
    if room._drains is not None and fut in room._drains:
        room._drains.remove(fut)
    if not fut.done():
        fut.set_result(None)


class Rooms:
    """Rooms by id: created on first use, dropped when the last player has left."""

    def __init__(self, announce_seconds: float = 0, max_players: int = 5000,
                 max_queue: int = 10000):
        self._rooms: dict[int, Room] = {}
        self.announce_seconds = announce_seconds
        self.max_players = max_players
        self.max_queue = max_queue

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, room_id: int) -> Room | None:
        return self._rooms.get(room_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    def get_or_create(self, room_id: int) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self)
            if self.announce_seconds > 0:
                ms = self.announce_seconds * 1000
                room.do_timer(ms, room.announce, interval_ms=ms)
        return room

    def drop(self, room: Room) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
        room.close()
        drains, room._drains = room._drains, None
        for fut in drains or ():
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait until every room has run the jobs pushed so far (or was dropped)."""
        loop = asyncio.get_running_loop()
        waits = []
        for room in self._rooms.values():
            fut = loop.create_future()
            if room._drains is None:
                room._drains = []
            room._drains.append(fut)
            room.do_async(_drained, room, fut)
            waits.append(fut)
        await asyncio.gather(*waits)

    def close(self) -> None:
        for room in list(self._rooms.values()):
            self.drop(room)
