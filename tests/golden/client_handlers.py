"""Client packet handlers: one `handle_<NAME>(session, pkt)` per received S_* packet.

ClientPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result.
"""
# Stubs are written by netcore's generator (netcore-gen), which only ever
# appends stubs for packets that have no handler yet and never changes existing
# text: fill in the bodies by hand and commit them.


def handle_S_LOGIN(session, pkt):
    """Handle S_LOGIN (packet id 1001) from the server."""
    raise NotImplementedError("handle_S_LOGIN")


def handle_S_ENTER_GAME(session, pkt):
    """Handle S_ENTER_GAME (packet id 1003) from the server."""
    raise NotImplementedError("handle_S_ENTER_GAME")


def handle_S_CHAT(session, pkt):
    """Handle S_CHAT (packet id 1005) from the server."""
    raise NotImplementedError("handle_S_CHAT")


def handle_S_MOVE(session, pkt):
    """Handle S_MOVE (packet id 1007) from the server."""
    raise NotImplementedError("handle_S_MOVE")


def handle_S_SPAWN(session, pkt):
    """Handle S_SPAWN (packet id 1008) from the server."""
    raise NotImplementedError("handle_S_SPAWN")


def handle_S_DESPAWN(session, pkt):
    """Handle S_DESPAWN (packet id 1009) from the server."""
    raise NotImplementedError("handle_S_DESPAWN")


def handle_S_RESUME(session, pkt):
    """Handle S_RESUME (packet id 1011) from the server."""
    raise NotImplementedError("handle_S_RESUME")
