"""Game: everything a game hands the server layer, in one object.

    GAME = Game(
        name="mygame",                          # mygame-server, its --help and --version
        command_module="mygame.cli",            # `python -m` it: how workers are started
        messages=mygame.Protocol_pb2,           # protoc's module of the game's packets
        dispatch=mygame.server_dispatch,        # netcore-gen's dispatch of them
        handlers=mygame.handlers,               # handle_<C_NAME> per packet clients send
                                                # (or ServerPacketDispatcher(handlers),
                                                # which mypy checks has them all)
        room=Arena,                             # the game's Room subclass
    )

and, where the defaults do not do:

    config=MyConfig,            # a ServerConfig subclass: the game's own settings
    session_class, player_class # GameSession / Player subclasses: data of its own
    accounts=factory            # config -> Database: its own login (a token
                                # from the studio's auth service, say);
                                # default: accounts on SQLite or PostgreSQL (--db)
    choose_room=fn              # (session, C_ENTER_GAME) -> room id or None
                                # (refused); default: its roomId
    room_for=fn                 # room id -> Room subclass, for several kinds
    pages={"/": fn}             # what the WebSocket port serves over plain HTTP:
                                # path -> () -> (content type, bytes)
    page_name="chat page"       # what the listening line calls them
    refusals={"fire": ("too_far",)}   # the game's own refusal reasons (metrics)
    version="1.2.0"             # --version and the build info metric (default:
                                # none of its own, netcore's is shown)
    description="..."           # what --help says the command is

It is a plain description: it starts nothing, and the same object serves one
process, every worker of `--workers N`, and every machine of a cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import netcore

from netcore_server.config import ServerConfig
from netcore_server.databases import make_database
from netcore_server.listen import host_port
from netcore_server.player import Player
from netcore_server.protocol import GameProtocol
from netcore_server.refusals import JOB_REASONS
from netcore_server.room import Room
from netcore_server.session import GameSession


def room_id_asked(session, pkt) -> int:
    """The default choose_room: the room the client names (uint32 roomId)."""
    return pkt.roomId


@dataclass(eq=False)
class Game:
    name: str
    command_module: str
    messages: ModuleType
    dispatch: ModuleType
    handlers: Any
    room: type[Room]
    config: type[ServerConfig] = ServerConfig
    session_class: type[GameSession] = GameSession
    player_class: type[Player] = Player
    accounts: Callable[[ServerConfig], Any] = make_database
    choose_room: Callable[[GameSession, Any], int | None] = room_id_asked
    room_for: Callable[[int], type[Room]] | None = None
    pages: dict[str, Callable[[], tuple[str, bytes]]] = field(default_factory=dict)
    page_name: str = "page"         # what the listening line calls the pages
    refusals: dict[str, tuple[str, ...]] = field(default_factory=dict)
    version: str = ""
    description: str = ""           # the first line of --help
    protocol: GameProtocol = field(init=False, repr=False)

    def __post_init__(self):
        checks = (("room", self.room, Room), ("config", self.config, ServerConfig),
                  ("session_class", self.session_class, GameSession),
                  ("player_class", self.player_class, Player))
        for what, value, base in checks:
            if not (isinstance(value, type) and issubclass(value, base)):
                raise TypeError(f"Game {self.name!r}: {what} must be a subclass of "
                                f"{base.__module__}.{base.__name__}, not {value!r}")
        self.protocol = GameProtocol(self.messages, self.dispatch)

    @property
    def command(self) -> str:
        """The command's name: `<name>-server`."""
        return f"{self.name}-server"

    def version_line(self) -> str:
        """`mygame-server 1.2.0 (netcore 0.1.0)`; a game of no version of its
        own (netcore-server) says netcore's: `netcore-server 0.1.0`."""
        if not self.version:
            return f"{self.command} {netcore.__version__}"
        return f"{self.command} {self.version} (netcore {netcore.__version__})"

    def web_banner(self, host: str, ws_port: int) -> str:
        """What the listening line says of the WebSocket port."""
        if not ws_port:
            return ""
        where = host_port(host, ws_port)
        return (f"; websocket and {self.page_name} on http://{where}/" if self.pages
                else f"; websocket on ws://{where}/")

    def room_classes(self) -> list[type[Room]]:
        """Every Room subclass the game may make, as far as it says (metrics)."""
        return [self.room]

    def all_refusals(self) -> dict[str, tuple[str, ...]]:
        """The game's refusal kinds: its own, and those of its room's client jobs."""
        kinds = {job: JOB_REASONS for room in self.room_classes() for job in room.client_jobs}
        for what, reasons in self.refusals.items():
            kinds[what] = tuple(dict.fromkeys((*kinds.get(what, ()), *reasons)))
        return kinds
