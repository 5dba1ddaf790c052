"""Server packet handlers: one `handle_<NAME>(session, pkt)` per received C_* packet.

ServerPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result.
"""
# Stubs are written by tools/gen_handlers.py, which only ever appends stubs for
# packets that have no handler yet and never changes existing text: fill in the
# bodies by hand and commit them.
import logging

from netcore_packets.Protocol_pb2 import S_ENTER_GAME, S_LOGIN
from netcore_packets.Struct_pb2 import Player as PlayerInfo

from netcore import DisconnectReason, SendBufferPool
from netcore_packets.server_dispatch import PKT_S_LOGIN

from netcore_game.db import GUEST_CHARACTERS
from netcore_game.player import Player
from netcore_game.session import State

log = logging.getLogger("netcore_game.handlers")


def handle_C_LOGIN(session, pkt):
    """Handle C_LOGIN (packet id 1000) from the client."""
    if session.state is not State.CONNECTED:
        log.info("session %d: login refused in state %s", session.session_id, session.state.value)
        session.send_packet(S_LOGIN(success=False))
        return
    if not pkt.account:
        session.account = ""
        session.characters = GUEST_CHARACTERS
        session.state = State.LOGGED_IN
        session.mark_logged_in()
        session.send(_GUEST_LOGIN)          # the same bytes for every guest
        return
    session.state = State.LOGGING_IN
    session.server.spawn(_login(session, pkt.account, pkt.password))


async def _login(session, account, password):
    try:
        characters = await session.server.db.login(account, password)
    except Exception as exc:   # answered as a refusal; the server keeps running
        log.error("session %d: login of %r failed in the database: %s",
                  session.session_id, account, exc)
        characters = None
    if not session.connected:
        return
    if characters is None:
        session.state = State.CONNECTED
        session.send_packet(S_LOGIN(success=False))
    else:
        finish_login(session, account, characters)
    if session.half_closed:                 # the peer sent its FIN after this login
        session.disconnect(DisconnectReason.PEER_CLOSED, "after the login answer")


def finish_login(session, account, characters):
    session.account = account
    session.characters = characters
    session.state = State.LOGGED_IN
    session.mark_logged_in()
    session.send_packet(login_reply(characters))


def login_reply(characters):
    return S_LOGIN(success=True, players=[
        PlayerInfo(id=c.db_id, name=c.name, playerType=c.player_type) for c in characters])


# Built once in a pool of its own, so the buffer it keeps forever pins no
# chunk of the shared pool.
_GUEST_LOGIN = SendBufferPool(256).write(PKT_S_LOGIN, login_reply(GUEST_CHARACTERS).SerializeToString())


def handle_C_ENTER_GAME(session, pkt):
    """Handle C_ENTER_GAME (packet id 1002) from the client."""
    if session.state is not State.LOGGED_IN or pkt.playerIndex >= len(session.characters):
        log.info("session %d: enter refused (state %s, index %d of %d)", session.session_id,
                 session.state.value, pkt.playerIndex, len(session.characters))
        player = session.player
        if player is not None:
            # In game, its room answers: after the answer to its own enter,
            # wherever that room runs, so answers come in the order asked.
            player.room.do_async(player.room.refuse_enter, player)
        else:
            session.send_packet(S_ENTER_GAME(success=False))
        return
    c = session.characters[pkt.playerIndex]
    player = Player(session.server.next_player_id(), c.db_id, c.name, c.player_type, session)
    session.player = player
    session.state = State.IN_GAME
    # The room answers S_ENTER_GAME when its enter job runs (on whichever
    # worker owns it): from that answer on, the player gets every packet of the room.
    room = player.room = session.server.rooms.get_or_create(pkt.roomId)
    room.do_async(room.enter, player)


def handle_C_CHAT(session, pkt):
    """Handle C_CHAT (packet id 1004) from the client."""
    player = session.player
    if player is None:
        log.info("session %d: chat dropped in state %s", session.session_id, session.state.value)
        return
    msg = pkt.msg   # proto3 strings arrive as valid UTF-8 or fail to parse
    limit = session.server.config.max_chat_bytes
    if len(msg) > limit // 4 and len(msg.encode()) > limit:
        log.info("session %d: chat of %d bytes dropped (max %d)",
                 session.session_id, len(msg.encode()), limit)
        return
    room = player.room
    room.do_async(room.chat, player, msg)
