"""GameSession: one client connection and its place in the session state machine.

    CONNECTED --C_LOGIN--> LOGGING_IN --(accounts)--> LOGGED_IN --C_ENTER_GAME--> IN_GAME

The layer moves a session along it (handlers.py) for every game; a game's
own packets reach its handlers, which push the player's jobs into its room
with room_job(). A packet the current state does not allow gets its defined
answer (S_LOGIN or S_ENTER_GAME with success=false) or, for a room job, is
dropped; each refusal is counted and logged (rate limited) by the server's
Refusals. It never changes the state. Connects and disconnects are logged
once, by netcore.session.

A game with data of its own per connection subclasses GameSession
(Game.session_class), adding its names to __slots__.
"""
from __future__ import annotations

import enum
from typing import Any, Callable, TypeVarTuple, Unpack, overload

import netcore

from netcore_server.room import Room, member_job


_Ts = TypeVarTuple("_Ts")


class State(enum.Enum):
    CONNECTED = "connected"
    LOGGING_IN = "logging in"
    LOGGED_IN = "logged in"
    IN_GAME = "in game"


class GameSession(netcore.PacketSession):
    # Slots, not a __dict__: one per connection, and a login storm makes
    # thousands a second (a subclass that adds attributes gets a __dict__ back).
    __slots__ = ("server", "state", "account", "characters", "player_ids", "player",
                 "failed_logins", "entered", "__weakref__")

    def __init__(self, server):
        """server: the GameServer (netcore_server.server) this session belongs to."""
        self.server = server
        self.state = State.CONNECTED
        self.account: str | None = None
        self.characters: tuple = ()               # netcore_server.db.Character each
        self.player_ids: tuple[int, ...] = ()     # issued at login, one per character
        self.player = None                        # the Player, in game
        self.failed_logins = 0
        self.entered = False                      # it asked a room to take it

    def on_recv_packet(self, pkt_id: int, payload: bytes) -> None:
        self.server.dispatcher.dispatch(self, pkt_id, payload)

    def on_disconnected(self, reason: netcore.Disconnect) -> None:
        player, self.player = self.player, None
        if self.player_ids:
            # Issued at login: free again, at once where only this client
            # knew them, else after a rest (PlayerIdAllocator).
            ids, self.player_ids = self.player_ids, ()
            self.server.player_ids.release(ids, heard=self.entered)
        if player is None:
            return
        if player.room.closed:
            # Shutdown closed the rooms before this connection ended (a peer
            # that would not close in time): there is no room left to leave.
            player.session = None
        else:
            player.room.do_async(player.room.leave, player)

    def on_eof(self) -> bool:
        # A login sent before the FIN is still answered (the database replies
        # later); the login closes the session once the answer is queued.
        return self.state is State.LOGGING_IN

    def send_packet(self, pkt) -> None:
        """One of the game's S_* messages, framed and queued."""
        self.send(self.server.protocol.make_send_buffer(pkt))

    def refuse(self, what: str, reason: str, fmt: str, *args) -> None:
        """Count and log (within the per-client line budget) a refusal of this client's."""
        self.server.refusals.refuse(self, what, reason, fmt, *args)

    # -- in game ----------------------------------------------------------------------

    @overload
    def room_job(self, job: Callable[[Any, Any, Unpack[_Ts]], object],
                 *args: Unpack[_Ts]) -> bool: ...

    @overload
    def room_job(self, job: str, *args: Any) -> bool: ...

    def room_job(self, job, *args):
        """Push the room job `job` (a @client_job method of the game's Room,
        which type checkers hold its arguments against, or its name) for this
        session's player: `job(room, player, *args)` runs on the room's
        queue, wherever the room is owned, while the player is a member.
        Dropped and counted (False) when the session is not in game, or the
        room's queue is at its bound."""
        name = job if isinstance(job, str) else job.__name__
        player = self.player
        if player is None:
            self.refuse(name, "wrong_state", "%s dropped in state %s", name, self.state.value)
            return False
        room = player.room
        if isinstance(room, Room):
            if name not in room.client_jobs:
                raise TypeError(f"{name!r} is not a @client_job of {type(room).__name__}")
            if room.pending >= room.rooms.max_queue:
                self.refuse(name, "room_queue_full", "%s dropped: room %d has %d jobs waiting "
                            "(max %d)", name, room.room_id, room.pending, room.rooms.max_queue)
                return False
            room.do_async(member_job, room, getattr(type(room), name), player, args)
        else:   # a netcore_cluster RemoteRoom: forwarded to the owner by name
            room.do_async(getattr(room, name), player, *args)
        return True

    def enter_refused(self, player, why: str, fmt: str, *args) -> None:
        """The room refused `player`'s enter (its S_ENTER_GAME{success: false}
        is sent): counted, and the session is back to choosing a room."""
        if self.player is player:
            self.refuse("enter", why, fmt, *args)
            self.player = None
            self.state = State.LOGGED_IN
