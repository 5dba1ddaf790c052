"""The packets every game on the layer shares, and what the layer needs of a
game's generated protocol.

The wire protocol of the original server, which netcore keeps: a game's
Protocol.proto declares these four first, with these fields, so they take
the ids 1000-1003 (ids go 1000 upward in declaration order over the C_/S_
messages), and its own packets after them:

    C_LOGIN      { string account = 1; string password = 2; }
    S_LOGIN      { bool success = 1; repeated Player players = 2; }
    C_ENTER_GAME { uint64 playerIndex = 1; uint32 roomId = 2; }
    S_ENTER_GAME { bool success = 1; uint64 playerId = 2; ... }
    Player       { uint64 id = 1; string name = 2; PlayerType playerType = 3; }

The layer answers logins and enters for every game (handlers.py, replies.py)
and never imports a game's modules: the game hands them over in its Game
(game.py), and GameProtocol checks them once, at start, with an error that
says what is wrong.
"""
from __future__ import annotations

from types import ModuleType

PKT_C_LOGIN = 1000
PKT_S_LOGIN = 1001
PKT_C_ENTER_GAME = 1002
PKT_S_ENTER_GAME = 1003
SHARED_PACKETS = {"C_LOGIN": PKT_C_LOGIN, "S_LOGIN": PKT_S_LOGIN,
                  "C_ENTER_GAME": PKT_C_ENTER_GAME, "S_ENTER_GAME": PKT_S_ENTER_GAME}
# S_CHAT from a room itself (an announcement) carries player id 0: never a player's.
SYSTEM_PLAYER_ID = 0


class GameProtocol:
    """A game's generated packet modules, checked: `messages` (protoc's
    Protocol_pb2) and `dispatch` (netcore-gen's server_dispatch: the
    ServerPacketDispatcher, make_send_buffer and PACKET_IDS)."""

    __slots__ = ("messages", "dispatch", "packet_ids", "make_send_buffer")

    def __init__(self, messages: ModuleType, dispatch: ModuleType):
        self.messages = messages
        self.dispatch = dispatch
        missing = [name for name in ("ServerPacketDispatcher", "make_send_buffer", "PACKET_IDS")
                   if not hasattr(dispatch, name)]
        if missing:
            raise TypeError(f"{dispatch.__name__} has no {', '.join(missing)}: pass the "
                            f"server dispatch module netcore-gen generated")
        self.packet_ids: dict[str, int] = dict(dispatch.PACKET_IDS)
        for name, pkt_id in SHARED_PACKETS.items():
            if self.packet_ids.get(name) != pkt_id:
                raise TypeError(
                    f"{dispatch.__name__}: {name} must be packet {pkt_id} (declare C_LOGIN, "
                    f"S_LOGIN, C_ENTER_GAME, S_ENTER_GAME first in the game's Protocol.proto), "
                    f"not {self.packet_ids.get(name)}")
            if not hasattr(messages, name):
                raise TypeError(f"{messages.__name__} has no message {name}")
        self.make_send_buffer = dispatch.make_send_buffer

    def dispatcher(self, handlers):
        """The game's dispatcher over `handlers` (a module or any object with
        a handle_<NAME> per received packet), or `handlers` itself when it is
        a dispatcher already (one the game built, which type checkers hold
        against its handler module)."""
        if isinstance(handlers, self.dispatch.ServerPacketDispatcher):
            return handlers
        return self.dispatch.ServerPacketDispatcher(handlers)

    def received(self) -> dict[int, str]:
        """Packet names by id, of the packets clients send."""
        return {i: n for n, i in self.packet_ids.items() if n.startswith("C_")}

    def sent(self) -> dict[int, str]:
        return {i: n for n, i in self.packet_ids.items() if n.startswith("S_")}
