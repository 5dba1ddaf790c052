"""netcore_server: the server layer every game on netcore is built on.

The middle floor of three (docs/architecture.md):

    games            netcore_game (netcore-server's chat), a project of `netcore-gen new`:
                     packets, a Room subclass, handlers; nothing else
    netcore_server   this package: accounts and logins, the login gate, sessions,
                     rooms with hooks and a tick, limits, metrics, the WebSocket
                     port, config and the command line, workers (netcore_cluster)
    netcore          the transport: framing, sessions, buffers, TCP, job queues

A game describes itself in a Game (game.py) and runs `netcore_server.cli.main(GAME)`:

    from netcore_server import Game, Room, client_job

    class Arena(Room):
        kind = "arena"
        tick_rate = 20

        def on_tick(self, dt): ...

        @client_job
        def chat(self, player, msg): self.broadcast(...)

It imports no game's module: a game hands over its packets (the generated
Protocol_pb2 and server_dispatch), its handlers and its classes.
"""
from netcore_server.config import ServerConfig
from netcore_server.db import (
    GUEST_CHARACTERS,
    Character,
    Database,
    DatabaseError,
    LoginResult,
    LoginStatus,
)
from netcore_server.game import Game
from netcore_server.listen import StartupError
from netcore_server.player import Player, PlayerIdAllocator
from netcore_server.protocol import SYSTEM_PLAYER_ID
from netcore_server.room import Room, Rooms, client_job
from netcore_server.server import GameServer
from netcore_server.session import GameSession, State
from netcore_server.settings import ConfigError, setting

__all__ = [
    "GUEST_CHARACTERS", "SYSTEM_PLAYER_ID", "Character", "ConfigError", "Database",
    "DatabaseError", "Game", "GameServer", "GameSession", "LoginResult", "LoginStatus",
    "Player", "PlayerIdAllocator", "Room", "Rooms", "ServerConfig", "StartupError", "State",
    "client_job", "setting",
]
