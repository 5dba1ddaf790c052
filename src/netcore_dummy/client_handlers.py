"""Client packet handlers: one `handle_<NAME>(session, pkt)` per received S_* packet.

ClientPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result.
"""
# Stubs are written by tools/gen_handlers.py, which only ever appends stubs for
# packets that have no handler yet and never changes existing text: fill in the
# bodies by hand and commit them.
from netcore_packets.Protocol_pb2 import C_ENTER_GAME


def handle_S_LOGIN(session, pkt):
    """Handle S_LOGIN (packet id 1001) from the server."""
    if not pkt.success:
        session.fail("login refused")
    elif not pkt.players:
        session.fail("login answered with no characters")
    else:
        # Every dummy plays its account's first character, in its own room.
        # That character's in-game id is the one S_LOGIN gave it, as the
        # original protocol says; every S_CHAT of its carries it.
        session.login_player_id = pkt.players[0].id
        session.send_packet(C_ENTER_GAME(playerIndex=0, roomId=session.room,
                                         resumable=session.resumable))


def handle_S_ENTER_GAME(session, pkt):
    """Handle S_ENTER_GAME (packet id 1003) from the server."""
    if pkt.success:
        # A server of the original protocol leaves playerId out (0).
        session.resume_token = pkt.resumeToken
        session.counted_from = session.packets_received     # numbering starts after this
        session.entered(session.login_player_id or pkt.playerId)
        if session.walker is not None:      # the field scenario: where it starts
            session.walker.start(session.player_id, pkt.x, pkt.y)
    else:
        session.fail("enter game refused")


def handle_S_CHAT(session, pkt):
    """Handle S_CHAT (packet id 1005) from the server."""
    # Only a session without a Tally gets here: with one, S_CHAT is decoded
    # and checked in C (dummy/tally.pyx) and never becomes a Python object.
    session.untallied_chats += 1


def handle_S_MOVE(session, pkt):
    """Handle S_MOVE (packet id 1007) from the server."""
    # The chat scenario walks nowhere: a field's packets (a server with
    # --field-size) are counted and otherwise skipped. (The field scenario's
    # walkers read them in C: netcore_dummy.walk.)
    session.field_packets += 1


def handle_S_SPAWN(session, pkt):
    """Handle S_SPAWN (packet id 1008) from the server."""
    session.field_packets += 1


def handle_S_DESPAWN(session, pkt):
    """Handle S_DESPAWN (packet id 1009) from the server."""
    session.field_packets += 1


def handle_S_RESUME(session, pkt):
    """Handle S_RESUME (packet id 1011) from the server."""
    # Only a connection that sent C_RESUME (--drop-every) may get one.
    session.resumed(pkt)
