"""netcore-server's field (--field-size, the default): real clients walk, and
each one's view, built from its packets alone, is checked on every packet and
against the server's own positions; refusals, monsters, leaving, many fields,
--field-size 0, and one field across two workers."""
import asyncio
import math
import random

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Enum_pb2 import PLAYER_TYPE_MONSTER

from netcore_server.db import SQLiteDatabase
from netcore_game.room import enter_reply_payload
from netcore_game.server import GameServer, ServerConfig

from netcore import ClientService

from game_support import GameClient, leave


class FieldClient(GameClient):
    """A client that keeps its view from S_SPAWN, S_MOVE and S_DESPAWN, and
    notes every packet a correct server never sends."""

    def __init__(self):
        super().__init__()
        self.view = {}              # id -> (x, y, type)
        self.position = None
        self.violations = []
        self.moves_acked = 0
        self.order = []             # every packet's name, in order (the inbox gets consumed)

    def on_recv_packet(self, pkt_id, payload):
        super().on_recv_packet(pkt_id, payload)
        name, msg = self.inbox[-1]
        self.order.append(name)
        if name == "S_ENTER_GAME" and msg.success:
            self.entered = msg
            self.my_id, self.position = msg.playerId, (msg.x, msg.y)
        elif name == "S_SPAWN":
            for p in msg.players:
                if p.id == getattr(self, "my_id", None) or p.id in self.view:
                    self.violations.append(f"spawn of {p.id}")
                self.view[p.id] = (p.x, p.y, p.playerType)
        elif name == "S_DESPAWN":
            for i in msg.playerIds:
                if self.view.pop(i, None) is None:
                    self.violations.append(f"despawn of {i}, not in view")
        elif name == "S_MOVE":
            if msg.playerId == self.my_id:
                self.position = (msg.x, msg.y)
                self.moves_acked += 1
            elif msg.playerId in self.view:
                self.view[msg.playerId] = (msg.x, msg.y, self.view[msg.playerId][2])
            else:
                self.violations.append(f"move of {msg.playerId}, not in view")

    async def walk(self, dx, dy):
        """One move in flight: send it and wait for its answer (accepted or corrected)."""
        acked = self.moves_acked
        x, y = self.position
        self.send_pkt(pb.C_MOVE(x=x + dx, y=y + dy))
        await self.until(lambda: self.moves_acked > acked)


def config(**kw):
    return ServerConfig(port=0, **kw)


def serve(tmp_path, **kw):
    return GameServer(config(**kw), SQLiteDatabase(tmp_path / "game.db", scrypt_n=2 ** 10))


async def walkers(port, n, room):
    service = ClientService(FieldClient, port=port, count=n)
    clients = await service.start()
    assert len(clients) == n, service.failures
    for c in clients:
        assert (await c.login()).success and (await c.enter(0, room)).success
    return clients


def truth(server, room_id):
    """{player id: (x, y)} of every entity of the room's field, as the server has it."""
    room = server.rooms.get(room_id)
    players = {p.player_id: room.field.position(p.slot) for p in room.players.values()}
    monsters = {i: room.field.position(slot) for slot, i in room.monsters.items()}
    return {**players, **monsters}, room.field.radius


def check_views(clients, positions, radius):
    for c in clients:
        assert not c.violations, c.violations
        me = positions[c.my_id]
        assert c.position == me
        want = {i: p for i, p in positions.items() if i != c.my_id
                and (p[0] - me[0]) ** 2 + (p[1] - me[1]) ** 2 <= radius * radius}
        assert {i: v[:2] for i, v in c.view.items()} == want


async def settle(server, clients):
    """Every job run and every packet delivered: a chat round trip after it."""
    await server.rooms.drain()
    clients[0].send_pkt(pb.C_CHAT(msg="settle"))
    for c in clients:
        await c.until(lambda c=c: any(m == "settle" for _, m in c.chats))
        c.chats.clear()


def test_walkers_see_exactly_what_is_near_them(run, tmp_path):
    rng = random.Random(7)

    async def go():
        async with serve(tmp_path, field_size=80, view_radius=20, max_step=10) as server:
            clients = await walkers(server.port, 8, room=3)
            await settle(server, clients)
            check_views(clients, *truth(server, 3))
            for _ in range(15):
                await asyncio.gather(*[c.walk(rng.uniform(-9, 9), rng.uniform(-9, 9))
                                       for c in clients])
                await settle(server, clients)
                check_views(clients, *truth(server, 3))
            await leave(*clients)

    run(go(), timeout=60)


def test_enter_says_where_and_spawns_both_ways(run, tmp_path):
    async def go():
        async with serve(tmp_path, field_size=10, view_radius=50) as server:  # all see all
            (a,) = await walkers(server.port, 1, room=1)
            entered = a.entered
            assert 0 <= entered.x <= 10 and 0 <= entered.y <= 10
            assert entered.SerializeToString() == enter_reply_payload(
                entered.playerId, entered.x, entered.y)
            assert "S_SPAWN" not in a.order             # nobody to see
            (b,) = await walkers(server.port, 1, room=1)
            await b.until(lambda: "S_SPAWN" in b.order)
            assert b.order[b.order.index("S_ENTER_GAME") + 1] == "S_SPAWN"  # right behind it
            await a.until(lambda: b.my_id in a.view)
            assert b.view.keys() == {a.my_id}
            await leave(a, b)

    run(go())


@pytest.mark.parametrize("move, why", [
    ((0, 30), "too_far"), ("outside", "outside"), ((math.nan, 0), "not_finite"),
    ((math.inf, 0), "not_finite"),
])
def test_a_refused_move_corrects_only_the_mover_and_is_counted(run, tmp_path, move, why):
    async def go():
        async with serve(tmp_path, field_size=100, view_radius=200, max_step=10) as server:
            a, b = await walkers(server.port, 2, room=2)
            await settle(server, [a, b])
            before = list(b.inbox)
            x, y = a.position
            if move == "outside":
                target = (-1.0, y)
            elif math.isfinite(move[0]):        # a teleport, inside the field
                target = (x, y + 30 if y < 50 else y - 30)
            else:
                target = move
            a.send_pkt(pb.C_MOVE(x=target[0], y=target[1]))
            correction = await a.expect("S_MOVE")
            assert (correction.playerId, correction.x, correction.y) == (a.my_id, x, y)
            await settle(server, [a, b])
            assert [n for n, _ in b.inbox[len(before):]] == ["S_CHAT"]   # the settle chat only
            assert server.refusals.counts["move", why] == 1
            await leave(a, b)

    run(go())


def test_monsters_wander_on_the_tick_with_ids_of_their_own(run, tmp_path):
    async def go():
        async with serve(tmp_path, field_size=20, view_radius=50, max_step=2, npcs=3,
                         tick_rate=50) as server:
            (a,) = await walkers(server.port, 1, room=5)
            monsters = {i for i, v in a.view.items() if v[2] == PLAYER_TYPE_MONSTER}
            assert len(monsters) == 3 and a.my_id not in monsters
            assert monsters <= server.player_ids.held           # from the same id space
            start = {i: a.view[i][:2] for i in monsters}
            await a.until(lambda: all(a.view[i][:2] != start[i] for i in monsters))
            room = server.rooms.get(5)
            assert room.ticker.ticks > 0 and not a.violations
            await leave(a)
            await server.rooms.drain()
            assert not monsters & server.player_ids.held        # given back with the room

    run(go())


def test_leaving_and_dropping_despawn_for_those_who_saw(run, tmp_path):
    async def go():
        async with serve(tmp_path, field_size=10, view_radius=50) as server:
            a, b, c = await walkers(server.port, 3, room=4)
            await settle(server, [a, b, c])
            await leave(b)                                   # a clean leave
            c.transport.abort()                              # and a dropped connection
            await a.until(lambda: not a.view)
            assert not a.violations
            await leave(a)

    run(go())


def test_fields_are_apart(run, tmp_path):
    async def go():
        async with serve(tmp_path, field_size=10, view_radius=50) as server:
            a = (await walkers(server.port, 2, room=8))
            b = (await walkers(server.port, 2, room=9))
            await settle(server, a)
            await settle(server, b)
            assert a[0].view.keys() == {a[1].my_id} and b[0].view.keys() == {b[1].my_id}
            await leave(*a, *b)

    run(go())


def test_field_size_0_is_the_plain_chat_byte_for_byte(run, tmp_path):
    async def go():
        async with serve(tmp_path, field_size=0) as server:
            a, b = await walkers(server.port, 2, room=1)
            entered = a.entered
            assert entered.SerializeToString() == b"\x08\x01\x10" + bytes([entered.playerId])
            a.send_pkt(pb.C_MOVE(x=1, y=1))
            a.send_pkt(pb.C_CHAT(msg="hi"))
            await b.until(lambda: b.chats)
            assert [n for n in a.order + b.order if n in ("S_SPAWN", "S_MOVE", "S_DESPAWN")] == []
            assert server.refusals.counts["move", "no_field"] == 1
            await leave(a, b)

    run(go())
