"""Server packet handlers: one `handle_<NAME>(session, pkt)` per received C_* packet.

ServerPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result.
"""
# Stubs are written by netcore's generator (netcore-gen), which only ever
# appends stubs for packets that have no handler yet and never changes existing
# text: fill in the bodies by hand and commit them.


def handle_C_LOGIN(session, pkt):
    """Handle C_LOGIN (packet id 1000) from the client."""
    raise NotImplementedError("handle_C_LOGIN")


def handle_C_ENTER_GAME(session, pkt):
    """Handle C_ENTER_GAME (packet id 1002) from the client."""
    raise NotImplementedError("handle_C_ENTER_GAME")


def handle_C_CHAT(session, pkt):
    """Handle C_CHAT (packet id 1004) from the client."""
    raise NotImplementedError("handle_C_CHAT")


def handle_C_MOVE(session, pkt):
    """Handle C_MOVE (packet id 1006) from the client."""
    raise NotImplementedError("handle_C_MOVE")


def handle_C_RESUME(session, pkt):
    """Handle C_RESUME (packet id 1010) from the client."""
    raise NotImplementedError("handle_C_RESUME")


def handle_C_LEAVE(session, pkt):
    """Handle C_LEAVE (packet id 1012) from the client."""
    raise NotImplementedError("handle_C_LEAVE")
