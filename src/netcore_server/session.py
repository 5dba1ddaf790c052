"""GameSession: one client connection and its place in the session state machine.

    CONNECTED --C_LOGIN--> LOGGING_IN --(database)--> LOGGED_IN --C_ENTER_GAME--> IN_GAME

A packet the current state does not allow gets its defined answer (S_LOGIN or
S_ENTER_GAME with success=false) or, for chat, is dropped; each refusal is
counted and logged (rate limited) by the server's Refusals. It never changes
the state. Connects and disconnects are logged once, by netcore.session.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import netcore
from netcore_packets.server_dispatch import make_send_buffer

if TYPE_CHECKING:
    from netcore_game.db import Character
    from netcore_game.player import Player
    from netcore_game.server import GameServer


class State(enum.Enum):
    CONNECTED = "connected"
    LOGGING_IN = "logging in"
    LOGGED_IN = "logged in"
    IN_GAME = "in game"


class GameSession(netcore.PacketSession):
    # Slots, not a __dict__: one per connection, and a login storm makes
    # thousands a second (a subclass that adds attributes gets a __dict__ back).
    __slots__ = ("server", "state", "account", "characters", "player_ids", "player",
                 "failed_logins", "__weakref__")

    def __init__(self, server: "GameServer"):
        self.server = server
        self.state = State.CONNECTED
        self.account: str | None = None
        self.characters: tuple["Character", ...] = ()
        self.player_ids: tuple[int, ...] = ()     # issued at login, one per character
        self.player: "Player | None" = None
        self.failed_logins = 0

    def on_recv_packet(self, pkt_id: int, payload: bytes) -> None:
        self.server.dispatcher.dispatch(self, pkt_id, payload)

    def on_disconnected(self, reason: netcore.Disconnect) -> None:
        player, self.player = self.player, None
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
        # later); _login closes the session once the answer is queued.
        return self.state is State.LOGGING_IN

    def send_packet(self, pkt) -> None:
        self.send(make_send_buffer(pkt))
