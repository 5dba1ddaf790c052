"""GameSession: one client connection and its place in the session state machine.

    CONNECTED --C_LOGIN--> LOGGING_IN --(accounts)--> LOGGED_IN --C_ENTER_GAME--> IN_GAME
    CONNECTED --C_RESUME--> RESUMING --(the room's resume job)--> IN_GAME
    IN_GAME --C_LEAVE--> LOGGED_IN;  IN_GAME --(another connection resumed it)--> RESUMED

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
import logging
from typing import Any, Callable, TypeVarTuple, Unpack, overload

import netcore
from netcore import DisconnectReason
from netcore.logs import peer_line

from netcore_server.protocol import PKT_S_ENTER_GAME
from netcore_server.resume import HOLD_REASONS, with_token
from netcore_server.room import Room, member_job


_Ts = TypeVarTuple("_Ts")
_ENTER_OK = (PKT_S_ENTER_GAME.to_bytes(2, "little"), b"\x08\x01")   # S_ENTER_GAME{success: true ...}
log = logging.getLogger("netcore_server.resume")


class State(enum.Enum):
    CONNECTED = "connected"
    LOGGING_IN = "logging in"
    LOGGED_IN = "logged in"
    IN_GAME = "in game"
    RESUMING = "resuming"           # its C_RESUME waits for the room's job
    RESUMED = "resumed"             # another connection took its player
    RELAYED = "relayed"             # its packets go to the holder's machine (netcore_server.relay)


class GameSession(netcore.PacketSession):
    # Slots, not a __dict__: one per connection, and a login storm makes
    # thousands a second (a subclass that adds attributes gets a __dict__ back).
    __slots__ = ("server", "state", "account", "characters", "player_ids", "player",
                 "failed_logins", "entered", "resume_asked", "enter_pending", "resume_token",
                 "hold_timer", "relay", "__weakref__")

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
        self.resume_asked = False                 # its C_ENTER_GAME set resumable
        self.enter_pending = False                # ... and its S_ENTER_GAME has not come
        self.resume_token: str | None = None      # its current one (Holds; never logged)
        self.hold_timer = None                    # the end of its hold's window
        self.relay = None                         # RELAYED: the connection to the holder

    def on_recv_packet(self, pkt_id: int, payload: bytes) -> None:
        relay = self.relay
        if relay is None:
            self.server.dispatcher.dispatch(self, pkt_id, payload)
        elif relay.connected:
            relay.send(netcore.make_packet(pkt_id, payload))    # the holder's to handle

    def on_disconnected(self, reason: netcore.Disconnect) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.client = None
            relay.disconnect()              # the holder holds its player again
            return
        if self.state is State.RESUMED:
            return                          # its player and ids went to the new connection
        holds = self.server.holds
        if holds is not None:
            player = self.player
            # A worker handing its players over (netcore_server.restart)
            # holds every resumable one, whoever ended the connection.
            if (self.keep_bytes and player is not None and not self.server.stopping
                    and (reason.kind in HOLD_REASONS or self.server.restarting)
                    and not player.room.closed):
                holds.hold(self)            # the player stays; its ids stay issued
                if peer_line(log, logging.INFO):
                    log.info("session %d: connection gone (%s); its player is held for a "
                             "resume for %g s", self.session_id, reason, holds.window)
                return
            holds.spend(self)
        self.leave_world()

    def leave_world(self) -> None:
        """The session's player leaves its room, and its ids go back."""
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

    # -- resumption (netcore_server.resume) -------------------------------------------

    def answer_enter(self, reply) -> None:
        """Send the room's answer to this session's enter: a success with a
        resume token in it when this session asked for one, numbering what
        follows. (A room of another worker's answers through its stream,
        whose first packet to an entering member is that answer: the
        cluster layer hands it here while enter_pending.)"""
        self.enter_pending = False
        holds = self.server.holds
        if self.resume_asked and holds is not None and self.connected and entered(reply):
            self.send(with_token(reply, holds.issue(self)))
            self.keep_sent(holds.buffer_bytes)
        else:
            self.send(reply)

    def on_hold_overflow(self) -> None:
        holds = self.server.holds
        if holds is not None and self.state is State.IN_GAME:
            holds.overflowed(self)

    def end_hold(self, why: str) -> None:
        """The hold is over (`why`, for the log): the player leaves as it
        would have when the connection ended."""
        if self.state is not State.IN_GAME or self.connected:
            return
        self.server.holds.spend(self)
        self.stop_keeping()
        if peer_line(log, logging.INFO):
            log.info("session %d: its hold ended (%s): its player leaves", self.session_id, why)
        self.leave_world()

    def leave_game(self) -> None:
        """C_LEAVE: out of the room at once, no hold; back to choosing a room."""
        holds = self.server.holds
        if holds is not None:
            holds.spend(self)
        self.stop_keeping()
        player, self.player = self.player, None
        self.state = State.LOGGED_IN
        self.resume_asked = False
        if player is not None and not player.room.closed:
            player.room.do_async(player.room.leave, player)

    def resume_refused(self, reason: str, fmt: str, *args) -> None:
        """S_RESUME{success: false}: counted, logged, and the connection goes
        on as a new one."""
        self.refuse("resume", reason, fmt, *args)
        if self.state is State.RESUMING:
            self.state = State.CONNECTED
        if self.server.resume_refused is not None:
            self.send(self.server.resume_refused)

    def take_over(self, old: "GameSession", received: int) -> bool:
        """The room's resume job: this connection becomes `old`'s (in the
        room's one order, so nothing is missed and nothing comes twice):
        S_RESUME with a new token, old's kept packets after `received`, then
        the live stream. False when the resume can no longer be done."""
        holds = self.server.holds
        if not self.connected or self.state is not State.RESUMING:
            return False                    # gone meanwhile: the hold goes on
        player = old.player
        if (old.state is not State.IN_GAME or player is None or not old.keep_bytes
                or old.resume_token is None or received > old.packets_numbered
                or received + 1 < old.first_kept):
            self.resume_refused("gone", "resume refused: the session ended meanwhile")
            return False
        old.state = State.RESUMED
        was_open = old.connected
        if was_open:                        # the old connection is not known dead yet
            old.disconnect(DisconnectReason.CLOSED, "resumed elsewhere", abort=True)
        holds.spend(old)
        token = holds.issue(self)
        self.send(self.server.protocol.make_send_buffer(
            self.server.protocol.messages.S_RESUME(success=True, playerId=player.player_id,
                                                   resumeToken=token)))
        replayed = self.resume_from(old, received)
        holds.counts.replayed += replayed
        holds.counts.resumed += 1
        if peer_line(log, logging.INFO):
            log.info("session %d: resumed player %d of session %d, %d packets sent again%s",
                     self.session_id, player.player_id, old.session_id, replayed,
                     "; its old connection was still open: closed, resumed elsewhere"
                     if was_open else "")
        self.account, self.characters, self.entered = old.account, old.characters, old.entered
        self.player_ids, old.player_ids = old.player_ids, ()
        self.player, old.player = player, None
        self.resume_asked = True
        player.session = self
        self.state = State.IN_GAME
        self.mark_logged_in()
        return True

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


def entered(reply) -> bool:
    """Whether a framed packet is an S_ENTER_GAME that says success (protobuf
    writes field 1, success = true, first)."""
    head = bytes(memoryview(reply)[2:6])
    return head[:2] == _ENTER_OK[0] and head[2:] == _ENTER_OK[1]
