"""Rooms: who hears whom. A Room is a JobQueue; its state is touched only by its jobs.

Handlers push jobs (enter, leave, chat) and return; the room runs them one at
a time, in order, time-sliced with every other room. Every packet that fans
out goes through Room.broadcast: the seam a multi-process backend replaces.

Bounds. A room admits at most `max_players` (players in it plus enters
accepted here whose job has not run yet, so the answer is immediate and
exact); a further enter is refused. Chats wait in the room's queue at most
`max_queue` jobs deep; past it a chat is dropped and counted, never queued
(enters and leaves are never dropped: each session makes at most one of
each). Both are checked by the handlers of this worker for the rooms it
owns; a room owned by another worker (netcore_cluster) is bounded there by
the cluster layer's own limits.

A room with no player, none entering and no job left is dropped: checked
after every job that can leave it so (a leave, its own tick, a drain), so a
tick or a drain queued behind the last leave does not keep it alive.
"""
from __future__ import annotations

import asyncio

from netcore import JobQueue, LatencyHistogram, SendBufferPool, send_to_all_coalesced
from netcore_packets.Protocol_pb2 import S_CHAT, S_ENTER_GAME
from netcore_packets.server_dispatch import PKT_S_ENTER_GAME, make_send_buffer

from netcore_game.player import Player
from netcore_game.replies import replies_for

SYSTEM_PLAYER_ID = 0        # S_CHAT from the room itself (announcements)
# Kept forever: its own pool, so it pins no chunk of the shared one.
_ENTER_REFUSED = SendBufferPool(64).write(PKT_S_ENTER_GAME,
                                          S_ENTER_GAME(success=False).SerializeToString())


class Room(JobQueue):
    # Jobs a player connected to another worker may have this room run
    # (forwarded by the cluster layer; enter and leave always may).
    REMOTE_JOBS = frozenset({"chat", "refuse_enter"})
    member_from_card = staticmethod(Player.from_card)

    def __init__(self, room_id: int, rooms: "Rooms"):
        super().__init__()
        self.room_id = room_id
        self.rooms = rooms
        self.players: dict[int, Player] = {}
        self.entering = 0                   # enters admitted here whose job has not run
        self._sessions: list | None = []     # fan-out list, rebuilt after a change
        self._drains: list | None = None    # futures of Rooms.drain waiting on this room
        # With several workers: this room's stream to the members connected
        # elsewhere (netcore_cluster.owner.RoomStream); None in one process.
        self.link = None

    def __len__(self) -> int:
        return len(self.players)

    # -- admission: from handlers, before the job is pushed ---------------------------

    def admit(self) -> bool:
        """Take a place for an enter about to be queued; False when full."""
        if len(self.players) + self.entering >= self.rooms.max_players:
            return False
        self.entering += 1
        return True

    def drop_if_unused(self) -> bool:
        """Drop the room if nobody is in it or entering and no job is left."""
        if self.players or self.entering or self.pending:
            return False
        self.rooms.drop(self)
        return True

    # -- jobs: run only from this room's queue ----------------------------------

    def enter(self, player: Player) -> None:
        player.room = self
        if player.gateway is None:
            if self.entering:
                self.entering -= 1          # admitted by admit() on this worker
        elif len(self.players) + self.entering >= self.rooms.max_players:
            # From another worker, admitted here: the room is full. Its worker
            # takes it out of the room and back to choosing one (link.refused).
            player.send(_ENTER_REFUSED)
            self.link.refused(player)
            self.drop_if_unused()
            return
        # The answer goes first, so the player knows its id before any chat arrives.
        player.send(self.rooms.replies.enter(player.player_id))
        self.players[player.player_id] = player
        self._sessions = None
        if player.gateway is not None:
            self.link.joined(player)

    def refuse_enter(self, player: Player) -> None:
        """A player in this room asked to enter again."""
        player.send(_ENTER_REFUSED)

    def leave(self, player: Player) -> None:
        if self.players.pop(player.player_id, None) is not None:
            self._sessions = None
            if player.gateway is not None:
                self.link.left(player)
        player.session = None           # the last link of the player <-> session cycle
        self.drop_if_unused()

    def chat(self, player: Player, msg: str) -> None:
        # Serialized once, whatever the room size.
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=msg)))

    def announce(self) -> None:
        """The room's own tick: tell everyone how many are here."""
        if self.drop_if_unused():
            return
        self.broadcast(make_send_buffer(S_CHAT(
            playerId=SYSTEM_PLAYER_ID, msg=f"room {self.room_id}: {len(self.players)} players")))

    def broadcast(self, buf) -> int:
        """Queue one send buffer to every member, the sender included."""
        if self._sessions is None:
            self._sessions = [p.session for p in self.players.values() if p.session is not None]
        if self.link is not None:
            self.link.publish(buf)      # members on other workers: one message per iteration
        # The chats of one job slice reach each member as one queue entry
        # (netcore.send_to_all_coalesced); the list is replaced, never changed.
        return send_to_all_coalesced(self._sessions, buf)


def _drained(room: Room, fut) -> None:
    if room._drains is not None and fut in room._drains:
        room._drains.remove(fut)
    if not fut.done():
        fut.set_result(None)
    room.drop_if_unused()


class Rooms:
    """Rooms by id: created on first use, dropped when the last player has left.

    With several workers (`cluster`, a netcore_cluster.ClusterLink) a room owned
    by another worker is a RemoteRoom of the cluster layer, which forwards the
    same jobs to its owner; only the rooms owned here are kept in this registry.
    """

    def __init__(self, announce_seconds: float = 0, cluster=None, max_players: int = 5000,
                 max_queue: int = 10000, replies=None):
        """replies: what builds S_ENTER_GAME (netcore_game.replies; by
        default the hand-laid ones)."""
        self._rooms: dict[int, Room] = {}
        self.replies = replies_for(True, ()) if replies is None else replies
        self.announce_seconds = announce_seconds
        self.cluster = cluster
        self.max_players = max_players
        self.max_queue = max_queue
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
            if self.cluster is not None and not self.cluster.owns(room_id):
                return self.cluster.remote_room(room_id)
            room = self._rooms[room_id] = Room(room_id, self)
            if self.cluster is not None:
                self.cluster.attach(room)
            room.delay_histogram = self.delay_histogram
            if self.announce_seconds > 0:
                ms = self.announce_seconds * 1000
                room.do_timer(ms, room.announce, interval_ms=ms)
        return room

    def drop(self, room: Room) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
            if self.cluster is not None:
                self.cluster.detach(room)
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
