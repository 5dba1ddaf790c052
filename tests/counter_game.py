"""A game of the tests' own for rolling restarts: rooms that count their chats.

`python -m counter_game` (tests/ on PYTHONPATH) is its server, and its
workers start the same way. A room's count is its own state, which a
rolling restart must carry (Room.on_handover / on_restore): a chat
"count?" is answered, to the asker alone, with S_CHAT{playerId: 0,
msg: "count N"}, N the chats the room has broadcast since it was made.
"""
from __future__ import annotations

import sys
import types

from netcore_packets import Protocol_pb2, server_dispatch
from netcore_packets.Protocol_pb2 import S_CHAT
from netcore_packets.server_dispatch import make_send_buffer

from netcore_server import Game, Room, cli, client_job
from netcore_server.handlers import (handle_C_ENTER_GAME, handle_C_LEAVE, handle_C_LOGIN,
                                     handle_C_RESUME)

COUNT_QUERY = "count?"


class CounterRoom(Room):
    kind = "counter"

    def on_create(self):
        self.chats = 0

    def on_handover(self):
        return {"chats": self.chats}

    def on_restore(self, state):
        self.chats = state["chats"]

    @client_job
    def chat(self, player, msg):
        if msg == COUNT_QUERY:
            player.send(make_send_buffer(S_CHAT(playerId=0, msg=f"count {self.chats}")))
            return
        self.chats += 1
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=msg)))


def handle_C_CHAT(session, pkt):
    session.room_job("chat", pkt.msg)


def handle_C_MOVE(session, pkt):
    session.refuse("move", "no_field", "the counter game has no field")


GAME = Game(name="counter", command_module="counter_game", messages=Protocol_pb2,
            dispatch=server_dispatch, room=CounterRoom, refusals={"move": ("no_field",)},
            handlers=types.SimpleNamespace(
                handle_C_LOGIN=handle_C_LOGIN, handle_C_ENTER_GAME=handle_C_ENTER_GAME,
                handle_C_CHAT=handle_C_CHAT, handle_C_MOVE=handle_C_MOVE,
                handle_C_RESUME=handle_C_RESUME, handle_C_LEAVE=handle_C_LEAVE))


if __name__ == "__main__":
    sys.exit(cli.main(GAME))
