"""Rooms: who hears whom. A Room is a JobQueue; its state is touched only by its jobs.

Handlers push jobs (enter, leave, chat) and return; the room runs them one at
a time, in order, time-sliced with every other room. Every packet that fans
out goes through Room.broadcast: the seam a multi-process backend replaces.
"""
from __future__ import annotations

import asyncio

from netcore import JobQueue, LatencyHistogram, send_to_all
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
        self._sessions: list | None = []     # fan-out list, rebuilt after a change

    def __len__(self) -> int:
        return len(self.players)

    # -- jobs: run only from this room's queue ----------------------------------

    def enter(self, player: Player) -> None:
        self.players[player.player_id] = player
        self._sessions = None

    def leave(self, player: Player) -> None:
        if self.players.pop(player.player_id, None) is not None:
            self._sessions = None
        player.session = None           # the last link of the player <-> session cycle
        if not self.players and not self.pending:
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


class Rooms:
    """Rooms by id: created on first use, dropped when the last player has left."""

    def __init__(self, announce_seconds: float = 0):
        self._rooms: dict[int, Room] = {}
        self.announce_seconds = announce_seconds
        # Every room's schedule-to-run waits, for the metrics (one histogram for all).
        self.delay_histogram = LatencyHistogram()

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
            room.delay_histogram = self.delay_histogram
            if self.announce_seconds > 0:
                ms = self.announce_seconds * 1000
                room.do_timer(ms, room.announce, interval_ms=ms)
        return room

    def drop(self, room: Room) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
        room.close()

    async def drain(self) -> None:
        """Wait until every room has run the jobs pushed so far."""
        loop = asyncio.get_running_loop()
        waits = []
        for room in self._rooms.values():
            fut = loop.create_future()
            room.do_async(fut.set_result, None)
            waits.append(fut)
        await asyncio.gather(*waits)

    def close(self) -> None:
        for room in list(self._rooms.values()):
            self.drop(room)
