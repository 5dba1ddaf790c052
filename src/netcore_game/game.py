"""The chat game on the server layer: its settings, its page, and its Game.

Everything else netcore-server has (accounts, logins, limits, rooms across
workers and machines, WebSocket, metrics, config, the command line) is
netcore_server's, as any game built on netcore gets it.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from netcore_packets import Protocol_pb2, server_dispatch

from netcore_server import Game, ServerConfig, setting

from netcore_game import server_handlers
from netcore_game.room import FieldPlayer, FieldRoom


@dataclass
class ChatConfig(ServerConfig):
    max_chat_bytes: int = setting(512, min=1, help="longest chat, in UTF-8 bytes")
    room_announce_seconds: float = setting(0.0, min=0, help=(
        "every room announces its member count this often (0: off)"))
    # The field (docs/protocol.md): each room a square of this side, each
    # player seeing what is within the radius, monsters on the room's tick.
    field_size: float = setting(1000.0, min=0, help=(
        "each room is a square field of this side (0: plain chat rooms, no positions)"))
    view_radius: float = setting(50.0, min=0, help="how far a player sees in the field")
    max_step: float = setting(10.0, min=0, help="the farthest one move may go")
    npcs: int = setting(0, min=0, max=100000, help="monsters in each room's field")
    tick_rate: float = setting(10.0, min=1, max=60, help=(
        "room ticks per second: the monsters' moves"))

    def validate(self) -> None:
        super().validate()
        if self.field_size:
            for name in ("view_radius", "max_step"):
                if getattr(self, name) <= 0:
                    raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: must be "
                                     f"> 0 with a field")
        if self.max_packet_size < self.max_chat_bytes + 16:
            raise ValueError(f"max-packet-size {self.max_packet_size} cannot carry a chat of "
                             f"max-chat-bytes {self.max_chat_bytes} (needs "
                             f"{self.max_chat_bytes + 16})")


def chat_page() -> tuple[str, bytes]:
    """The chat page the WebSocket port serves at GET / (netcore_game/web/chat.html)."""
    return ("text/html; charset=utf-8",
            resources.files("netcore_game").joinpath("web/chat.html").read_bytes())


CHAT = Game(
    name="netcore", command_module="netcore_game.cli",
    messages=Protocol_pb2, dispatch=server_dispatch, handlers=server_handlers,
    room=FieldRoom, config=ChatConfig, player_class=FieldPlayer,
    pages={"/": chat_page}, page_name="chat page",
    refusals={"chat": ("too_long",), "move": ("not_finite", "outside", "too_far", "no_field")},
    description="The netcore chat game server.",
)
