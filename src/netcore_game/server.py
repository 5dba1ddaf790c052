"""netcore-server's GameServer and settings: the server layer's, with the chat game."""
from __future__ import annotations

import netcore_server

from netcore_game.game import CHAT, ChatConfig

ServerConfig = ChatConfig


class GameServer(netcore_server.GameServer):
    game = CHAT


__all__ = ["GameServer", "ServerConfig"]
