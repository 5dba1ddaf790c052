"""Server packet handlers: one `handle_<NAME>(session, pkt)` per received C_* packet.

ServerPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result. Login, enter, resume and
leave are the server layer's (netcore_server.handlers); the chat is this game's.
"""
# Stubs are written by tools/gen_handlers.py, which only ever appends stubs for
# packets that have no handler yet and never changes existing text: fill in the
# bodies by hand and commit them.
from netcore_server.handlers import (  # noqa: F401
    handle_C_ENTER_GAME, handle_C_LEAVE, handle_C_LOGIN, handle_C_RESUME)

from netcore_game.room import ChatRoom, FieldRoom


def handle_C_CHAT(session, pkt):
    """Handle C_CHAT (packet id 1004) from the client."""
    msg = pkt.msg   # proto3 strings arrive as valid UTF-8 or fail to parse
    limit = session.server.config.max_chat_bytes
    if session.player is not None and len(msg) > limit // 4 and len(msg.encode()) > limit:
        session.refuse("chat", "too_long", "chat of %d bytes dropped (max %d)",
                       len(msg.encode()), limit)
        return
    session.room_job(ChatRoom.chat, msg)


def handle_C_MOVE(session, pkt):
    """Handle C_MOVE (packet id 1006) from the client: the room's field checks
    the move (finite, inside, within max-step) and tells whoever sees it."""
    if not session.server.config.field_size:
        session.refuse("move", "no_field", "move dropped: the rooms have no field")
        return
    session.room_job(FieldRoom.move, pkt.x, pkt.y)

