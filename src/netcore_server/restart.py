"""A rolling restart: a worker hands its players and rooms to its successor.

`<game>-server --workers N` restarts its workers one at a time on SIGHUP
(netcore_cluster.supervisor). For each slot the supervisor first starts a
successor, which connects to the broker and hears everything the slot hears
without acting on it (netcore_cluster.link, "Successors"); then it tells
the running worker to hand off (`hand_off`):

1. It stops accepting, and its resume channel closes: a resume that
   another worker reads for this slot waits for the successor's
   (netcore_server.handover).
2. Every resumable player's connection gets our FIN (Session.shut_output):
   what the client sent until it saw the FIN is still read and handled,
   and once the client closes (or after HALF_CLOSE_WAIT) the session is
   held, as any dropped connection is. Every other connection is closed: a
   player that is not resumable leaves, as at a shutdown (counted).
3. A shutdown's quiesce: nothing more is read, what was read reaches its
   room, and every op this worker forwarded is acknowledged.
4. Its link stops handling messages (the successor hears them too), its
   rooms stop ticking and run what is queued, and what they made is sent
   and flushed to the broker.
5. It writes the handover: the link's state (its epoch, numberings and
   stream positions: link.export_state), every room it owns (members, tick
   rate, and the room's own state: Room.on_handover) and every hold (its
   player, room, token, and kept packets with their numbers). Then it exits
   without a word more to anyone.

The successor (`take_over`) becomes the same incarnation of the slot, so
for the rest of the cluster nothing happened; it rebuilds the holds and the
rooms (Room.on_restore, nobody told anything), handles what it heard
meanwhile (what its predecessor had handled is a repeat: the same sequence
numbers that guard against a broker's resends), and only then listens. The
clients reconnect with C_RESUME, land on any worker, and get exactly what
they missed.

The file lies in a directory only this user can enter (the supervisor's),
is read once and removed. It is a pickle of plain data (dicts, lists,
tuples, str, bytes, numbers): the loader refuses anything else, so it can
carry no code even so.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import time

from netcore import DisconnectReason, copy_frames

from netcore_server.db import Character
from netcore_server.session import State

log = logging.getLogger("netcore_server.restart")

HALF_CLOSE_WAIT = 2.0       # seconds for the clients to close after our FIN
VERSION = 1
_PLAIN = (type(None), bool, int, float, str, bytes)


async def hand_off(server, path: str, written=None) -> dict:
    """Hand this worker's players and rooms over (module docstring) into
    `path`; returns what was handed (counts, for the log). written(counts),
    when given, is called as soon as the file is in place: the successor
    may take over from then on."""
    started = time.monotonic()
    server.restarting = True
    if server.handover is not None:
        server.handover.close()
    server.service.stop_accepting()
    if server.ws is not None:
        server.ws.stop_accepting()
    shut, closed = [], 0
    for session in list(server.service.sessions.values()):
        if session.keep_bytes and session.state is State.IN_GAME and session.player is not None:
            session.shut_output()
            shut.append(session)
        else:
            closed += 1
            session.disconnect(DisconnectReason.SHUTDOWN, "the worker restarts")
    waits = [asyncio.ensure_future(s.wait_closed()) for s in shut]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=HALF_CLOSE_WAIT)
        for task in pending:
            task.cancel()
        for session in shut:
            if session.transport is not None:       # did not close in time: held all the same
                session.disconnect(DisconnectReason.SHUTDOWN, "the worker restarts", abort=True)
    await server.quiesce()
    link = server.link
    link.freeze()
    rooms = server.rooms
    for room in rooms.all():
        rooms.retire_ticker(room)
    await rooms.drain()
    await link.send_all()
    state = snapshot(server)
    for room in rooms.all():
        room.close()                # nothing more of theirs: timers cancelled
    write(path, state)
    counts = {"rooms": len(state["rooms"]), "holds": len(state["holds"]), "closed": closed,
              "remote_rooms": len(state["link"]["gateway"]),
              "ms": round((time.monotonic() - started) * 1000)}
    if written is not None:
        written(counts)
    log.info("handed over to the successor: %(rooms)d rooms, %(holds)d held players "
             "(%(remote_rooms)d rooms of other workers), %(closed)d connections closed, "
             "in %(ms)d ms", counts)
    return counts


def snapshot(server) -> dict:
    holds = []
    local = set()
    for session in server.holds.sessions():
        player = session.player
        if player is None or player.room is None:
            continue
        local.add(player.player_id)
        holds.append({
            "token": session.resume_token, "card": player.to_card(), "db_id": player.db_id,
            "account": session.account, "entered": session.entered,
            "characters": [(c.db_id, c.name, c.player_type) for c in session.characters],
            "player_ids": list(session.player_ids),
            "first": session.first_kept, "kept": session.kept_run()})
    rooms = []
    for room in server.rooms.all():
        try:
            state = room.on_handover()
            check_plain(state, f"room {room.room_id} ({room.kind}): on_handover()")
            carried = True
        except Exception:
            # Its members still go over; the room starts its own state
            # afresh there (on_create), as after its owner's crash.
            log.exception("room %d (%s): on_handover failed: its state is not carried",
                          room.room_id, room.kind)
            state, carried = None, False
        members = []
        for pid, player in room.players.items():
            if player.gateway is not None:
                members.append((pid, player.to_card(), tuple(player.gateway)))
            elif pid in local:
                members.append((pid, None, None))
            else:
                log.warning("room %d: player %d is neither held nor of another worker: "
                            "not handed over", room.room_id, pid)
        rooms.append({"id": room.room_id, "tick_rate": room.tick_rate, "state": state,
                      "carried": carried, "members": members})
    return {"version": VERSION, "slot": server.link.slot, "link": server.link.export_state(),
            "rooms": rooms, "holds": holds}


def take_over(server, path: str) -> dict:
    """Become the predecessor's incarnation from its handover at `path`
    (read once, then removed)."""
    state = read(path)
    os.unlink(path)
    if state.get("version") != VERSION or state.get("slot") != server.link.slot:
        raise ValueError(f"{path}: a handover of version {state.get('version')} for "
                         f"{state.get('slot')}, not {VERSION} for {server.link.slot}")
    game, holds = server.game, server.holds
    players = {}
    for h in state["holds"]:
        if holds is None:
            break
        session = game.session_class(server)
        player = game.player_class.from_card(h["card"], None)
        player.db_id = h["db_id"]
        player.session = session
        session.account, session.entered = h["account"], h["entered"]
        session.characters = tuple(Character(*c) for c in h["characters"])
        session.player_ids = tuple(h["player_ids"])
        session.player = player
        session.resume_asked = True
        session.state = State.IN_GAME
        session.restore_kept(h["first"], copy_frames(h["kept"]) if h["kept"] else None, holds.buffer_bytes)
        holds.adopt(session, h["token"])
        players[player.player_id] = player
    server.link.import_state(state["link"], players)
    player_class = game.player_class
    for r in state["rooms"]:
        members = [players[pid] if card is None else player_class.from_card(card, gateway)
                   for pid, card, gateway in r["members"] if card is not None or pid in players]
        server.rooms.restore(r["id"], members, r["state"], r["tick_rate"], r["carried"])
    server.link.take_over()
    counts = {"rooms": len(state["rooms"]), "holds": len(players)}
    log.info("took over from the predecessor: %(rooms)d rooms, %(holds)d held players", counts)
    return counts


# -- the file ----------------------------------------------------------------------------

def check_plain(value, where: str, depth: int = 0) -> None:
    """TypeError unless `value` is plain data (what the loader takes)."""
    if depth > 64:
        raise TypeError(f"{where}: nested too deep")
    if isinstance(value, (list, tuple)):
        for item in value:
            check_plain(item, where, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, where, depth + 1)
            check_plain(item, where, depth + 1)
    elif type(value) not in _PLAIN:
        raise TypeError(f"{where}: {type(value).__name__} is not plain data (None, bool, "
                        "int, float, str, bytes, and lists, tuples and dicts of them)")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"a handover names {module}.{name}: only plain data")


def write(path: str, state: dict) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def read(path: str) -> dict:
    with open(path, "rb") as f:
        state = _PlainUnpickler(io.BufferedReader(f)).load()
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a handover")
    return state
