"""Rooms with bounds: a maximum of players, a bounded job queue, and no room
kept alive by its own tick or drain job once its last player has left."""
import asyncio

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from netcore_server.db import SQLiteDatabase
from netcore_server.player import Player
from netcore_server.room import Rooms
from netcore_game.room import ChatRoom
from netcore_game.server import GameServer, ServerConfig
from netcore_server.session import GameSession
from game_support import connect, in_game, leave
from support import FakeTransport, feed, packet

C_LOGIN, C_ENTER_GAME, C_CHAT = (PACKET_IDS[n] for n in ("C_LOGIN", "C_ENTER_GAME", "C_CHAT"))
S_CHAT = PACKET_IDS["S_CHAT"]


def test_a_full_room_refuses_enter_until_a_place_frees(run, tmp_path):
    config = ServerConfig(port=0, max_room_players=2)

    async def go():
        async with GameServer(config, SQLiteDatabase(tmp_path / "game.db")) as server:
            a, b = await in_game(server.port, 2, room=3)
            c, d = await connect(server.port, 2)
            assert (await c.login()).success and (await d.login()).success
            assert not (await c.enter(0, 3)).success                # the third: refused
            assert (await c.enter(0, 4)).success                    # another room has places
            b.disconnect()
            await b.wait_closed()
            await server.rooms.drain()                              # b's leave has run
            assert len(server.rooms.get(3).players) == 1 and server.rooms.get(3).entering == 0
            entered = await d.enter(1, 3)
            assert entered.success
            a.send_pkt(pb.C_CHAT(msg="hello"))
            assert await d.wait_chats(1) == [(a.player_id, "hello")]
            counts = dict(server.refusals.counts)
            await leave(a, c, d)
            return counts

    counts = run(go())
    assert counts["enter", "room_full"] == 1


def wire(pkt_id, msg) -> bytes:
    return packet(pkt_id, msg.SerializeToString())


def test_chats_past_the_room_queue_bound_are_dropped_and_counted(run, tmp_path):
    # Driven read by read through a session of our own: one read of 50 chats,
    # all handled before the room runs a job.
    async def go():
        config = ServerConfig(port=0, max_room_queue=4)
        server = GameServer(config, SQLiteDatabase(tmp_path / "game.db"))
        session = GameSession(server)
        transport = FakeTransport()
        session.connection_made(transport)
        feed(session, wire(C_LOGIN, pb.C_LOGIN()) + wire(C_ENTER_GAME, pb.C_ENTER_GAME(roomId=8)))
        await server.rooms.drain()                  # the enter has run: the queue is empty
        room = server.rooms.get(8)
        feed(session, b"".join(wire(C_CHAT, pb.C_CHAT(msg=f"c{i}")) for i in range(50)))
        assert room.pending == 4
        assert server.refusals.counts["chat", "room_queue_full"] == 46
        await server.rooms.drain()
        await asyncio.sleep(0)                      # the flusher writes what the room sent
        sent = b"".join(transport.written)
        chats = []
        while sent:
            size = int.from_bytes(sent[:2], "little")
            if int.from_bytes(sent[2:4], "little") == S_CHAT:
                chats.append(pb.S_CHAT.FromString(sent[4:size]).msg)
            sent = sent[size:]
        assert chats == ["c0", "c1", "c2", "c3"]
        session.connection_lost(None)
        server.rooms.close()

    run(go())


class FakeSession:
    def enqueue(self, buf):
        pass


@pytest.mark.parametrize("pending", ["tick", "drain", "both"])
def test_a_room_kept_alive_only_by_its_own_jobs_is_dropped_with_its_last_player(run, pending):
    async def go():
        rooms = Rooms(ChatRoom)
        room = rooms.get_or_create(5)
        player = Player(1, 0, "Knight1", 1, None)
        # The drain's task pushes its job first thing, before the room runs:
        # the queue is then enter, leave, [tick], [drain].
        drained = asyncio.ensure_future(rooms.drain()) if pending in ("drain", "both") else None
        assert room.admit()
        room.do_async(room.enter, player)
        room.do_async(room.leave, player)
        if pending in ("tick", "both"):
            room.do_async(room.announce)        # queued behind the leave, as a tick would be
        await asyncio.sleep(0)                  # the drain pushes; the room runs its slice
        await asyncio.sleep(0)
        assert rooms.get(5) is None and room.closed and len(rooms) == 0
        if drained is not None:
            await asyncio.wait_for(drained, 5)  # released, though its job never ran
        await rooms.drain()

    run(go())


def test_a_room_with_a_timer_is_dropped_when_its_last_player_leaves(run, tmp_path):
    # The tick is an interval timer; whatever it has queued, the room goes.
    async def go():
        config = ServerConfig(port=0, room_announce_seconds=0.01)
        async with GameServer(config, SQLiteDatabase(tmp_path / "game.db")) as server:
            rooms_before = len(server.rooms)
            for _ in range(20):
                (c,) = await in_game(server.port, 1, room=6)
                await c.until(lambda: any(pid == 0 for pid, _ in c.chats))   # it ticked
                c.disconnect()
                await c.wait_closed()
                await server.rooms.drain()
                assert server.rooms.get(6) is None
            assert len(server.rooms) == rooms_before

    run(go(), timeout=60)


@pytest.mark.parametrize("flags, message", [
    (["--max-room-players", "0"], "--max-room-players 0: must be >= 1"),
    (["--max-room-queue", "0"], "--max-room-queue 0: must be >= 1"),
])
def test_bad_room_limits_are_refused_at_start(capsys, flags, message):
    from netcore_game.cli import parse_args
    with pytest.raises(SystemExit) as exc:
        parse_args(flags)
    assert exc.value.code == 2 and message in capsys.readouterr().err
