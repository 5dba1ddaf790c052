"""Games of the tests' own on the server layer (netcore_server), over netcore's packets.

`game(room_class, **options)` is a Game whose C_CHAT handler turns a chat
into a job of the player's room, by its first word:

    "say TEXT"           -> room.say(player, TEXT)
    "args"               -> room.args(player, 1.5, -7, "text", b"raw", None, True)
    anything else        -> room.say(player, msg)

so a test's room needs only the jobs it uses. Its rooms note what happened
in `log` (a list shared with the test) and tell their members through S_CHAT
from the room itself (player id 0), so clients see the hooks in the room's
one order.
"""
from __future__ import annotations

import types

from netcore_packets import Protocol_pb2, server_dispatch
from netcore_packets.Protocol_pb2 import S_CHAT
from netcore_packets.server_dispatch import make_send_buffer

from netcore_server import Game, Room, client_job
from netcore_server.handlers import (handle_C_ENTER_GAME, handle_C_LEAVE, handle_C_LOGIN,
                                     handle_C_RESUME)


def handle_C_CHAT(session, pkt):
    word, _, rest = pkt.msg.partition(" ")
    if word == "args":
        session.room_job("args", 1.5, -7, "text", b"raw", None, True)
    else:
        session.room_job("say", rest if word == "say" else pkt.msg)


def handle_C_MOVE(session, pkt):
    session.refuse("move", "no_field", "these test rooms have no field")


HANDLERS = types.SimpleNamespace(handle_C_LOGIN=handle_C_LOGIN,
                                 handle_C_ENTER_GAME=handle_C_ENTER_GAME,
                                 handle_C_CHAT=handle_C_CHAT, handle_C_MOVE=handle_C_MOVE,
                                 handle_C_RESUME=handle_C_RESUME, handle_C_LEAVE=handle_C_LEAVE)


def game(room, **options) -> Game:
    return Game(name="testgame", command_module="netcore_game.cli", messages=Protocol_pb2,
                dispatch=server_dispatch, handlers=HANDLERS, room=room, **options)


def system_chat(room: Room, text: str) -> None:
    room.broadcast(make_send_buffer(S_CHAT(playerId=0, msg=text)))


class SayRoom(Room):
    """A room that repeats what is said, with its sender's id."""
    kind = "say"

    @client_job
    def say(self, player, text):
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=text)))

    @client_job
    def args(self, player, *args):
        self.broadcast(make_send_buffer(S_CHAT(playerId=player.player_id, msg=repr(args))))


def recording_room(log: list, **attributes) -> type[Room]:
    """A SayRoom whose hooks append (hook, room id, player id or None) to
    `log` and announce themselves to the room; `attributes` override its
    class attributes and methods (refuse: a set of player ids on_join_attempt refuses)."""

    class Recording(SayRoom):
        kind = "recording"
        refuse: set = set()

        def on_create(self):
            log.append(("create", self.room_id, None))

        def on_join_attempt(self, player):
            log.append(("join_attempt", self.room_id, player.player_id))
            return "not on the list" if player.player_id in self.refuse else None

        def on_join(self, player):
            log.append(("join", self.room_id, player.player_id))
            system_chat(self, f"joined {player.player_id}")

        def on_leave(self, player):
            log.append(("leave", self.room_id, player.player_id))
            system_chat(self, f"left {player.player_id}")

        def on_dispose(self):
            log.append(("dispose", self.room_id, None))

    for name, value in attributes.items():
        setattr(Recording, name, value)
    return Recording
