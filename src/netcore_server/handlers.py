"""The layer's packet handlers: login and enter, the same for every game.

A game's handler module (the one its generated ServerPacketDispatcher calls)
takes these as they are (the last two where its protocol has C_RESUME and
C_LEAVE, netcore_server.resume),

    from netcore_server.handlers import (handle_C_ENTER_GAME, handle_C_LEAVE,
                                         handle_C_LOGIN, handle_C_RESUME)

and writes one handler per packet of its own, which checks the packet and
pushes a job into the player's room (GameSession.room_job). netcore-gen
sees the imported names as handlers and appends no stubs for them.
"""
from __future__ import annotations

import logging

from netcore import DisconnectReason
from netcore.addresses import address_key
from netcore.logs import peer_line

from netcore_server.db import GUEST_CHARACTERS, LoginResult, LoginStatus
from netcore_server.replies import ENTER_REFUSED, LOGIN_REFUSED
from netcore_server.room import Room
from netcore_server.relay import relay
from netcore_server.session import State

log = logging.getLogger("netcore_server.handlers")


def handle_C_LOGIN(session, pkt):
    """C_LOGIN (packet id 1000): a guest's at once, a named one through the
    login gate and the accounts (the game's, or the database's)."""
    server = session.server
    if session.state is not State.CONNECTED:
        session.refuse("login", "wrong_state", "login refused in state %s", session.state.value)
        session.send(LOGIN_REFUSED)
        return
    if not pkt.account and server.db.guests:
        finish_login(session, "", GUEST_CHARACTERS, guest=True)
        return
    if "\x00" in pkt.account:
        # PostgreSQL text cannot hold NUL: no backend stores such a name, so
        # that both answer it alike, at once and unhashed.
        session.refuse("login", "bad_account_name",
                       "login refused: an account name with a NUL character")
        session.send(LOGIN_REFUSED)
        return
    gate = server.logins
    key = address_key(session.peername, server.service.exempt_networks)
    refused = gate.refusal(key, key)
    if refused is not None:
        reason, fmt, args = refused
        session.refuse("login", reason, fmt, *args)
        session.send(LOGIN_REFUSED)
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
            session.refuse("login", "wrong_password",
                           "login of %r failed: wrong password (%d of %d)", account,
                           session.failed_logins, server.config.max_failed_logins)
        elif status is LoginStatus.NO_NEW_ACCOUNT:
            session.refuse("login", "no_new_account",
                           "login of %r refused: %d new accounts from %s in %g s",
                           account, gate.new_accounts.limit, key, gate.new_accounts.window)
        session.send(LOGIN_REFUSED)
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
    try:
        ids = server.player_ids.take(len(characters))
    except OverflowError as exc:            # every id held or resting: try again later
        session.state = State.CONNECTED
        session.refuse("login", "no_player_ids", "login refused: %s", exc)
        session.send(LOGIN_REFUSED)
        return
    session.account = account
    session.characters = characters
    session.player_ids = ids
    session.state = State.LOGGED_IN
    session.mark_logged_in()
    server.logins_done += 1
    session.send(server.replies.guest_login(ids) if guest
                 else server.replies.login(characters, ids))


def handle_C_ENTER_GAME(session, pkt):
    """C_ENTER_GAME (packet id 1002): into the room the game chooses (by
    default pkt.roomId), whose enter job answers S_ENTER_GAME."""
    server = session.server
    if session.state is not State.LOGGED_IN or pkt.playerIndex >= len(session.characters):
        session.refuse("enter", "wrong_state" if session.state is not State.LOGGED_IN
                       else "bad_index", "enter refused (state %s, index %d of %d)",
                       session.state.value, pkt.playerIndex, len(session.characters))
        player = session.player
        if player is not None:
            # In game, its room answers: after the answer to its own enter,
            # wherever that room runs, so answers come in the order asked.
            player.room.do_async(player.room.refuse_enter, player)
        else:
            session.send(ENTER_REFUSED)
        return
    room_id = server.game.choose_room(session, pkt)
    if room_id is None:
        session.refuse("enter", "bad_room", "enter refused: no room for room id %d",
                       pkt.roomId)
        session.send(ENTER_REFUSED)
        return
    room = server.rooms.get_or_create(room_id)
    # A room of this worker's is bounded here; one owned by another worker
    # (a netcore_cluster RemoteRoom) by the cluster layer and its owner.
    if isinstance(room, Room) and not room.admit():
        session.refuse("enter", "room_full", "enter refused: room %d is full (%d players)",
                       room_id, len(room.players) + room.entering)
        session.send(ENTER_REFUSED)
        return
    i = pkt.playerIndex
    c = session.characters[i]
    player = server.game.player_class(session.player_ids[i], c.db_id, c.name, c.player_type,
                                      session)
    player.room = room
    session.player = player
    session.state = State.IN_GAME
    session.entered = True
    # A game whose protocol has no resumable field never asks.
    session.resume_asked = session.enter_pending = bool(getattr(pkt, "resumable", False))
    # The room answers S_ENTER_GAME when its enter job runs (on whichever
    # worker owns it): from that answer on, the player gets every packet of the room.
    room.do_async(room.enter, player)


def handle_C_RESUME(session, pkt):
    """C_RESUME (packet id 1010): a new connection's first packet takes over
    a held (or not yet noticed dead) session by its token
    (netcore_server.resume); anything else is S_RESUME{success: false} and
    the connection goes on as a new one."""
    if session.state is not State.CONNECTED or session.packets_received != 1:
        session.resume_refused("wrong_state", "resume refused: not the connection's first "
                               "packet (state %s)", session.state.value)
        return
    begin_resume(session, pkt.token, pkt.received)


def begin_resume(session, token: str, received: int) -> None:
    """A resume of a new connection (its C_RESUME here, or read by another
    worker that handed the connection over: netcore_server.handover)."""
    server = session.server
    holds = server.holds
    if holds is None:
        session.resume_refused("not_resumable", "resume refused: this server does not resume "
                               "(a resume window of 0)")
        return
    gate = server.logins
    key = address_key(session.peername, server.service.exempt_networks)
    if not gate.failures.available(key, gate.clock()):
        session.resume_refused("address_failures", "resume refused: %d failed logins or "
                               "resumes from %s in %g s", gate.failures.used(key, gate.clock()),
                               key, gate.failures.window)
        return
    elsewhere = holds.holder_of(token)
    if elsewhere is not None:
        # Another worker's token: a TCP connection moves to it, if it is of
        # this machine; anything else is relayed to its machine's game port.
        handover = server.handover
        tcp = session.transport_kind == "tcp"
        if elsewhere in server.sibling_slots and tcp:
            if handover is not None:
                server.spawn(handover.pass_on(session, elsewhere, token, received))
                return
            address = None                  # relayed here, it would come back here
        else:
            address = server.relay_address(elsewhere)
        if address is not None:
            server.spawn(relay(session, address, elsewhere, token, received))
            return
        session.resume_refused("not_resumable", "resume refused: the session is held by "
                               "worker %s, which this worker cannot reach (%s)", elsewhere,
                               "no resume channel" if tcp else "its machine's address is not "
                               "known")
        return
    old = holds.find(token)
    if old is None or old is session or old.player is None:
        gate.failed(key)                    # a guess costs the address what a bad password does
        session.resume_refused("unknown_token", "resume refused: the token is not known")
        return
    if received > old.packets_numbered:
        gate.failed(key)
        session.resume_refused("wrong_count", "resume refused: %d received, but %d were sent",
                               received, old.packets_numbered)
        return
    if received + 1 < old.first_kept:
        session.resume_refused("gap_lost", "resume refused: packets %d..%d are no longer kept",
                               received + 1, old.first_kept - 1)
        if old.held:
            old.end_hold("a resume came for packets no longer kept")
        return
    session.state = State.RESUMING
    player = old.player
    room = player.room
    if isinstance(room, Room):
        # In the room's order: what it sent before the job is old's (kept,
        # sent again), what it sends after is the new session's.
        room.do_async(room.resume_member, player, session, old, received)
    elif session.take_over(old, received):
        # A room of another worker's (netcore_cluster): its stream reaches
        # the player through this worker, so the swap here, at once, is a
        # point of that stream's order.
        room.member_changed()


def handle_C_LEAVE(session, pkt):
    """C_LEAVE (packet id 1012): out of the room at once, with no hold; the
    session may enter a room again. Dropped (and counted) when not in game."""
    if session.state is not State.IN_GAME or session.player is None:
        session.refuse("leave", "wrong_state", "leave dropped in state %s", session.state.value)
        return
    session.leave_game()
