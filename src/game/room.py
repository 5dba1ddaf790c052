"""Rooms: who hears whom. Every broadcast goes through Room.broadcast."""
from __future__ import annotations

from netcore import send_to_all
from packets.Protocol_pb2 import S_CHAT
from packets.server_dispatch import make_send_buffer

from game.player import Player


class Room:
    def __init__(self, room_id: int):
        self.room_id = room_id
        self.players: dict[int, Player] = {}
        self._sessions: list | None = []     # fan-out list, rebuilt after a change

    def __len__(self) -> int:
        return len(self.players)

    def enter(self, player: Player) -> None:
        self.players[player.player_id] = player
        player.room = self
        self._sessions = None

    def leave(self, player: Player) -> None:
        if self.players.pop(player.player_id, None) is not None:
            player.room = None
            self._sessions = None

    def chat(self, player: Player, msg: str) -> None:
        # Serialized once, whatever the room size.
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=msg)))

    def broadcast(self, buf) -> int:
        """Queue one send buffer to every member (the sender included).

        The one place a packet fans out to a room: a multi-process backend
        replaces this method and nothing else.
        """
        if self._sessions is None:
            self._sessions = [p.session for p in self.players.values()]
        return send_to_all(self._sessions, buf)


class Rooms:
    """Rooms by id: created on first entry, dropped when the last player leaves."""

    def __init__(self):
        self._rooms: dict[int, Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, room_id: int) -> Room | None:
        return self._rooms.get(room_id)

    def enter(self, room_id: int, player: Player) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
        room.enter(player)
        return room

    def leave(self, player: Player) -> None:
        room = player.room
        if room is None:
            return
        room.leave(player)
        if not room.players:
            del self._rooms[room.room_id]
