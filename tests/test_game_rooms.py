"""Rooms as job queues under concurrent chat, and a room's own tick."""

from netcore_packets import Protocol_pb2 as pb

from netcore_server.db import SQLiteDatabase
from netcore_server import SYSTEM_PLAYER_ID
from netcore_game.server import GameServer, ServerConfig
from game_support import ServerProcess, in_game


def test_three_rooms_of_fifty_each_hear_exactly_their_own_room(run, tmp_path, loop_kind):
    rounds = 10

    async def go(port):
        rooms = [await in_game(port, 50, room=r) for r in (0, 1, 2)]
        for i in range(rounds):
            for members in rooms:
                for c in members:
                    c.send_pkt(pb.C_CHAT(msg=f"{c.player_id}:{i}"))
        for members in rooms:
            ids = {c.player_id for c in members}
            for c in members:
                got = await c.wait_chats(50 * rounds, timeout=30)
                assert {pid for pid, _ in got} == ids
                for sender in ids:      # per-sender order, each message exactly once
                    assert [m for pid, m in got if pid == sender] == [
                        f"{sender}:{i}" for i in range(rounds)]
        # A fence per room: nothing beyond the room's own chats ever arrived.
        for members in rooms:
            members[0].send_pkt(pb.C_CHAT(msg="fence"))
        for members in rooms:
            for c in members:
                await c.wait_chats(50 * rounds + 1)
                assert len(c.chats) == 50 * rounds + 1 and c.chats[-1][1] == "fence"

    with ServerProcess(tmp_path, loop_kind) as server:
        run(go(server.port), timeout=90)


def test_a_room_tick_announces_its_member_count(run, tmp_path):
    async def go():
        config = ServerConfig(port=0, room_announce_seconds=0.05)
        async with GameServer(config, SQLiteDatabase(tmp_path / "game.db")) as server:
            a, b = await in_game(server.port, 2, room=5)
            await a.until(lambda: any(pid == SYSTEM_PLAYER_ID and m == "room 5: 2 players"
                                      for pid, m in a.chats))
            b.disconnect()
            await a.until(lambda: any(pid == SYSTEM_PLAYER_ID and m == "room 5: 1 players"
                                      for pid, m in a.chats))
            room = server.rooms.get(5)
            (last,) = server.service.sessions.values()
            a.disconnect()
            await last.wait_closed()
            await server.rooms.drain()              # runs the leave job, which drops the room
            assert server.rooms.get(5) is None and room.closed
    run(go())


def test_a_chat_is_serialized_once_whatever_the_room_size(run, tmp_path, monkeypatch):
    import netcore_game.room
    calls = []
    real = netcore_game.room.make_send_buffer

    def counting(pkt):
        calls.append(type(pkt).__name__)
        return real(pkt)

    monkeypatch.setattr(netcore_game.room, "make_send_buffer", counting)

    async def go():
        config = ServerConfig(port=0)
        async with GameServer(config, SQLiteDatabase(tmp_path / "game.db")) as server:
            members = await in_game(server.port, 40, room=3)
            calls.clear()                   # the room answered each enter: 40 S_ENTER_GAME
            members[0].send_pkt(pb.C_CHAT(msg="once"))
            for c in members:
                assert await c.wait_chats(1) == [(members[0].player_id, "once")]
    run(go())
    assert calls == ["S_CHAT"]
