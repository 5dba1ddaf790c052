"""Two workers in one process (one event loop), each a GameServer with its own
ClusterLink to a real nats-server: what crosses the broker, and what does not."""
import asyncio

import pytest

from netcore_cluster.link import ClusterLink
from netcore_cluster.placement import ClusterMap
from netcore_server.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from netcore_packets import Protocol_pb2 as pb

from cluster_support import NatsProcess, assert_one_order, chat_rounds
from game_support import connect, in_game, leave

CMAP = ClusterMap.single("w", 2)


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    with NatsProcess(tmp_path_factory.mktemp("nats")) as server:
        yield server


class Pair:
    """Workers w-0 and w-1; `owner_of[slot]` a room that slot owns."""

    def __init__(self, nats, tmp_path, game=None, config=None, **link_options):
        """game: a netcore_server Game (default: the chat, netcore-server's);
        config: its settings (default: its defaults, on a free port)."""
        self.servers = {}
        for i, slot in enumerate(CMAP.slots):
            link = ClusterLink(CMAP, slot, [nats.url], rebuild_timeout=0.5, **link_options)
            db = SQLiteDatabase(tmp_path / f"{slot}.db", scrypt_n=2 ** 10)
            self.servers[slot] = GameServer(config or ServerConfig(port=0), db, link=link,
                                            player_id_base=(i + 1) << 32, game=game)
        placement = self.servers["w-0"].link.placement
        self.owner_of = {slot: next(r for r in range(100) if placement.owner(r) == slot)
                         for slot in CMAP.slots}

    def link(self, slot):
        return self.servers[slot].link

    async def __aenter__(self):
        for server in self.servers.values():
            await server.start()
        # Both know each other's epoch before a test starts.
        for slot, server in self.servers.items():
            other = next(s for s in CMAP.slots if s != slot)
            await wait_until(lambda: other in server.link.known, "hello")
        return self

    async def __aexit__(self, *exc):
        for server in self.servers.values():
            await server.stop()


async def wait_until(predicate, what, timeout=10.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)       # state of another worker's link: no event to await
    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_a_room_stream_reaches_only_workers_with_members(run, nats, tmp_path):
    async def go():
        async with Pair(nats, tmp_path) as pair:
            room = pair.owner_of["w-0"]
            owner, gateway = pair.link("w-0"), pair.link("w-1")
            # Members only on the owner: nothing is published for the room.
            local = await in_game(pair.servers["w-0"].port, 3, room=room)
            await chat_rounds(local, 5)
            for c in local:
                await c.wait_chats(15)
            assert room not in gateway._subs and room not in gateway.gateway.rooms
            assert gateway.stats["deliveries_relayed"] == 0
            assert f"netcore.r.{room}" not in {s.subject for s in gateway.nc._subs.values()}

            # A member on the other worker: its worker subscribes, and gets the room.
            (remote,) = await in_game(pair.servers["w-1"].port, 1, room=room)
            assert room in gateway._subs
            await chat_rounds(local + [remote], 3, tag="b")
            expected = {f"b{c.player_id}:{k}" for c in local + [remote] for k in range(3)}
            for c in local + [remote]:
                await c.until(lambda c=c: sum(m in expected for _, m in c.chats) == len(expected))
            assert_one_order(local + [remote], expected)
            relayed = gateway.stats["deliveries_relayed"]
            assert relayed == len(expected)            # one member there, every chat once

            # It leaves: the worker unsubscribes, and the owner stops publishing.
            await leave(remote)
            await wait_until(lambda: room not in gateway.gateway.rooms and room not in gateway._subs,
                             "the gateway to drop the room")
            await wait_until(lambda: owner.owner.streams[room].remote == 0, "the owner to see it leave")
            published = owner.stats["messages_out"]
            await chat_rounds(local, 3, tag="c")
            for c in local:
                await c.until(lambda c=c: sum(m.startswith("c") for _, m in c.chats) == 9)
            assert owner.stats["messages_out"] == published     # nothing more on the broker
            assert gateway.stats["deliveries_relayed"] == relayed
            await leave(*local)
    run(go())


def test_members_come_and_go_on_a_remote_room_and_the_owner_agrees(run, nats, tmp_path):
    async def go():
        async with Pair(nats, tmp_path) as pair:
            room = pair.owner_of["w-0"]
            owner_room = None
            for cycle in range(4):
                # Enter and leave quickly, the last leave racing the next enter.
                clients = await in_game(pair.servers["w-1"].port, 3, room=room)
                owner_room = pair.servers["w-0"].rooms.get(room)
                assert owner_room is not None
                assert sorted(owner_room.players) == sorted(c.player_id for c in clients)
                clients[0].send_pkt(pb.C_CHAT(msg=f"cycle {cycle}"))
                for c in clients:
                    await c.until(lambda c=c: (clients[0].player_id, f"cycle {cycle}") in c.chats)
                await leave(*clients)
            await wait_until(lambda: pair.servers["w-0"].rooms.get(room) is None,
                             "the owner to drop the room once all left")
            assert pair.link("w-0").owner.remote_members == {}
            assert pair.link("w-1").gateway.pending_ops() == 0
    run(go())


def test_ops_for_an_owner_that_is_away_are_bounded_and_counted(run, nats, tmp_path):
    async def go():
        async with Pair(nats, tmp_path, max_pending_ops=50) as pair:
            room = pair.owner_of["w-0"]
            (c,) = await in_game(pair.servers["w-1"].port, 1, room=room)
            gateway = pair.link("w-1")
            # The owner is away (its epoch unknown): ops wait, up to the bound.
            epoch = gateway.known.pop("w-0")
            for k in range(150):         # within the default packet burst
                c.send_pkt(pb.C_CHAT(msg=f"m{k}"))
            await wait_until(lambda: gateway.stats["ops_dropped"] == 100, "the bound")
            assert len(gateway.gateway.rooms[room].pending) == 50
            # Back: what was kept is resent, and runs once, in order.
            gateway.known["w-0"] = epoch
            await c.until(lambda: len(c.chats) == 50)
            assert [m for _, m in c.chats] == [f"m{k}" for k in range(50)]
            await leave(c)
    run(go())


def test_a_full_room_refuses_a_player_of_another_worker_who_can_then_choose_again(
        run, nats, tmp_path):
    async def go():
        async with Pair(nats, tmp_path) as pair:
            for server in pair.servers.values():
                server.rooms.max_players = 2
            room = pair.owner_of["w-0"]
            await in_game(pair.servers["w-0"].port, 2, room=room)      # full, on its owner
            (c,) = await connect(pair.servers["w-1"].port)
            assert (await c.login()).success
            assert not (await c.enter(0, room)).success
            # Back to choosing a room: another one takes it.
            other = pair.owner_of["w-1"]
            entered = await c.enter(0, other)
            assert entered.success
            c.send_pkt(pb.C_CHAT(msg="in"))
            await c.until(lambda: (entered.playerId, "in") in c.chats)
            server = pair.servers["w-1"]
            assert server.refusals.counts["enter", "room_full"] == 1
            assert len(pair.servers["w-0"].rooms.get(room).players) == 2
    run(go())
