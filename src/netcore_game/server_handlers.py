"""Server packet handlers: one `handle_<NAME>(session, pkt)` per received C_* packet.

ServerPacketDispatcher(<this module>) calls them with the parsed netcore_packets.Protocol_pb2
message; dispatch() returns the handler's result.
"""
# Stubs are written by tools/gen_handlers.py, which only ever appends stubs for
# packets that have no handler yet and never changes existing text: fill in the
# bodies by hand and commit them.
import logging

from netcore_packets.Protocol_pb2 import S_ENTER_GAME, S_LOGIN

from netcore import DisconnectReason
from netcore.addresses import address_key
from netcore.logs import peer_line

from netcore_game.db import GUEST_CHARACTERS, LoginResult, LoginStatus
from netcore_game.player import Player
from netcore_game.room import Room
from netcore_game.session import State

log = logging.getLogger("netcore_game.handlers")


def handle_C_LOGIN(session, pkt):
    """Handle C_LOGIN (packet id 1000) from the client."""
    server = session.server
    if session.state is not State.CONNECTED:
        server.refusals.refuse(session, "login", "wrong_state", "login refused in state %s",
                               session.state.value)
        session.send_packet(S_LOGIN(success=False))
        return
    if not pkt.account:
        finish_login(session, "", GUEST_CHARACTERS, guest=True)
        return
    if "\x00" in pkt.account:
        # PostgreSQL text cannot hold NUL: no backend stores such a name, so
        # that both answer it alike, at once and unhashed.
        server.refusals.refuse(session, "login", "bad_account_name",
                               "login refused: an account name with a NUL character")
        session.send_packet(S_LOGIN(success=False))
        return
    gate = server.logins
    key = address_key(session.peername, server.service.exempt_networks)
    refused = gate.refusal(key, key)
    if refused is not None:
        reason, fmt, args = refused
        server.refusals.refuse(session, "login", reason, fmt, *args)
        session.send_packet(S_LOGIN(success=False))
        return
    session.state = State.LOGGING_IN
    gate.acquire(key)
    server.spawn(_login(session, key, pkt.account, pkt.password, gate.may_create(key)))


async def _login(session, key, account, password, may_create):
    server = session.server
    gate = server.logins
    try:
        await gate.turn(key)
        try:
            if session.connected:
                result = await server.db.login(account, password, create=may_create,
                                               wanted=lambda: session.connected)
            else:                           # gone while waiting for its turn
                result = LoginResult(LoginStatus.SKIPPED)
        finally:
            gate.done()
    except Exception as exc:   # answered as a refusal; the server keeps running
        # Within the per-client line budget: during a database outage every
        # login fails, and each is counted but not each is logged.
        server.refusals.refuse(session, "login", "database_error",
                               "login of %r failed in the database: %s", account, exc,
                               level=logging.ERROR)
        result = None
    finally:
        gate.release(key)
    status = None if result is None else result.status
    if status is LoginStatus.WRONG_PASSWORD:
        gate.failed(key)
    elif status is LoginStatus.CREATED:
        gate.created(key)
    if not session.connected:
        return
    try:
        _answer_login(session, key, account, result, status)
    except Exception as exc:
        # A fault in answering (this runs after the database, not in a packet
        # handler): closed as a handler's would be, not left waiting forever.
        if peer_line(log, logging.ERROR):
            log.exception("session %d: answering the login of %r raised",
                          session.session_id, account)
        session.disconnect(DisconnectReason.HANDLER_ERROR, f"login answer: {exc!r}", abort=True)


def _answer_login(session, key, account, result, status):
    server = session.server
    gate = server.logins
    if result is None or not result.ok:
        session.state = State.CONNECTED
        if status is LoginStatus.WRONG_PASSWORD:
            session.failed_logins += 1
            server.refusals.refuse(session, "login", "wrong_password",
                                   "login of %r failed: wrong password (%d of %d)", account,
                                   session.failed_logins, server.config.max_failed_logins)
        elif status is LoginStatus.NO_NEW_ACCOUNT:
            server.refusals.refuse(session, "login", "no_new_account",
                                   "login of %r refused: %d new accounts from %s in %g s",
                                   account, gate.new_accounts.limit, key,
                                   gate.new_accounts.window)
        session.send_packet(S_LOGIN(success=False))
        limit = server.config.max_failed_logins
        if limit and session.failed_logins >= limit:
            session.disconnect(DisconnectReason.CLOSED,
                               f"{session.failed_logins} failed logins")
            return
    else:
        finish_login(session, account, result.characters)
    if session.half_closed:                 # the peer sent its FIN after this login
        session.disconnect(DisconnectReason.PEER_CLOSED, "after the login answer")


def finish_login(session, account, characters, guest=False):
    """Issue the characters' in-game ids and answer; a guest's reply (the
    storm's path) comes from the server's laid-out template."""
    server = session.server
    ids = server.player_ids.take(len(characters))
    session.account = account
    session.characters = characters
    session.player_ids = ids
    session.state = State.LOGGED_IN
    session.mark_logged_in()
    server.logins_done += 1
    session.send(server.replies.guest_login(ids) if guest
                 else server.replies.login(characters, ids))


def handle_C_ENTER_GAME(session, pkt):
    """Handle C_ENTER_GAME (packet id 1002) from the client."""
    server = session.server
    if session.state is not State.LOGGED_IN or pkt.playerIndex >= len(session.characters):
        server.refusals.refuse(
            session, "enter", "wrong_state" if session.state is not State.LOGGED_IN
            else "bad_index", "enter refused (state %s, index %d of %d)",
            session.state.value, pkt.playerIndex, len(session.characters))
        player = session.player
        if player is not None:
            # In game, its room answers: after the answer to its own enter,
            # wherever that room runs, so answers come in the order asked.
            player.room.do_async(player.room.refuse_enter, player)
        else:
            session.send_packet(S_ENTER_GAME(success=False))
        return
    room = server.rooms.get_or_create(pkt.roomId)
    # A room of this worker's is bounded here; one owned by another worker
    # (a netcore_cluster RemoteRoom) by the cluster layer.
    if isinstance(room, Room) and not room.admit():
        server.refusals.refuse(session, "enter", "room_full",
                               "enter refused: room %d is full (%d players)",
                               pkt.roomId, len(room.players) + room.entering)
        session.send_packet(S_ENTER_GAME(success=False))
        return
    i = pkt.playerIndex
    c = session.characters[i]
    player = Player(session.player_ids[i], c.db_id, c.name, c.player_type, session)
    player.room = room
    session.player = player
    session.state = State.IN_GAME
    # The room answers S_ENTER_GAME when its enter job runs (on whichever
    # worker owns it): from that answer on, the player gets every packet of the room.
    room.do_async(room.enter, player)


def handle_C_CHAT(session, pkt):
    """Handle C_CHAT (packet id 1004) from the client."""
    player = session.player
    if player is None:
        session.server.refusals.refuse(session, "chat", "wrong_state",
                                       "chat dropped in state %s", session.state.value)
        return
    msg = pkt.msg   # proto3 strings arrive as valid UTF-8 or fail to parse
    limit = session.server.config.max_chat_bytes
    if len(msg) > limit // 4 and len(msg.encode()) > limit:
        session.server.refusals.refuse(session, "chat", "too_long",
                                       "chat of %d bytes dropped (max %d)",
                                       len(msg.encode()), limit)
        return
    room = player.room
    if isinstance(room, Room) and room.pending >= room.rooms.max_queue:
        session.server.refusals.refuse(session, "chat", "room_queue_full",
                                       "chat dropped: room %d has %d jobs waiting (max %d)",
                                       room.room_id, room.pending, room.rooms.max_queue)
        return
    room.do_async(room.chat, player, msg)
