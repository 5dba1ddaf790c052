"""A game's own room across two workers, with no cluster code of its own: its
hooks and its tick run on the room's owner only, its client jobs reach the
owner with their arguments, and a refusal reaches the player's worker."""
import asyncio
import re

from netcore_packets import Protocol_pb2 as pb

from game_support import connect, in_game, leave
from layer_support import game, recording_room, system_chat
from cluster.test_cluster_link import Pair, wait_until
from cluster.test_cluster_link import nats  # noqa: F401  (the fixture, by name)


def ticks_heard(client):
    return [int(m.group(1)) for pid, msg in client.chats
            if pid == 0 and (m := re.fullmatch(r"tick (\d+)", msg))]


def test_a_games_room_runs_its_hooks_and_tick_on_its_owner_only(run, nats, tmp_path):
    log = []

    def on_tick(self, dt):
        self.ticks = getattr(self, "ticks", 0) + 1
        if self.ticks % 5 == 0:
            system_chat(self, f"tick {self.ticks}")

    room_class = recording_room(log, tick_rate=20, on_tick=on_tick)

    async def go():
        async with Pair(nats, tmp_path, game=game(room_class)) as pair:
            room_id = pair.owner_of["w-0"]
            owner, other = pair.servers["w-0"], pair.servers["w-1"]
            (here,) = await in_game(owner.port, 1, room=room_id)
            (there,) = await in_game(other.port, 1, room=room_id)
            for c in (here, there):
                await c.until(lambda c=c: len(ticks_heard(c)) >= 3)
            # One room ticks: one numbering, heard alike on both workers.
            for c in (here, there):
                heard = ticks_heard(c)
                assert heard == sorted(set(heard)) and all(b - a == 5 for a, b in
                                                           zip(heard, heard[1:])), heard
            assert other.rooms.get(room_id) is None             # a RemoteRoom there, no Room
            room = owner.rooms.get(room_id)
            assert room.ticker is not None and room.ticker.ticks >= 15
            # A client job from the other worker, with its arguments, runs on the owner.
            there.send_pkt(pb.C_CHAT(msg="args"))
            expected = (there.player_id, repr((1.5, -7, "text", b"raw", None, True)))
            await here.until(lambda: expected in here.chats)
            await leave(there)
            await here.until(lambda: (0, f"left {there.player_id}") in here.chats)
            await leave(here)
            await wait_until(lambda: owner.rooms.get(room_id) is None, "the room to go")
            return room_id, here.player_id, there.player_id

    room_id, here_id, there_id = run(go())
    assert [e for e in log if e[1] == room_id] == [
        ("create", room_id, None), ("join_attempt", room_id, here_id), ("join", room_id, here_id),
        ("join_attempt", room_id, there_id), ("join", room_id, there_id),
        ("leave", room_id, there_id), ("leave", room_id, here_id), ("dispose", room_id, None)]


def test_a_room_refusing_a_player_of_another_worker_sends_it_back_to_choose(run, nats, tmp_path):
    room_class = recording_room([])

    async def go():
        async with Pair(nats, tmp_path, game=game(room_class)) as pair:
            room_id = pair.owner_of["w-0"]
            other = pair.servers["w-1"]
            (c,) = await connect(other.port)
            login = await c.login()
            room_class.refuse = {login.players[0].id}
            assert not (await c.enter(0, room_id)).success
            assert other.refusals.counts["enter", "room_refused"] == 1
            assert (await c.enter(1, room_id)).success        # another character may
            c.send_pkt(pb.C_CHAT(msg="say in"))
            await c.until(lambda: any(msg == "in" for _, msg in c.chats))
            await leave(c)

    run(go())


def test_one_field_with_members_on_both_workers(run, nats, tmp_path):
    """netcore-server's field across two workers: each walker's view, built
    from its packets, is exactly what the owner's field holds, whichever
    worker it is connected to."""
    import random

    from netcore_game.server import ServerConfig
    from test_field_game import check_views, truth, walkers

    rng = random.Random(3)
    config = ServerConfig(port=0, field_size=60, view_radius=20, max_step=10)

    async def go():
        async with Pair(nats, tmp_path, config=config) as pair:
            room_id = pair.owner_of["w-0"]
            owner = pair.servers["w-0"]
            here = await walkers(owner.port, 3, room_id)
            there = await walkers(pair.servers["w-1"].port, 3, room_id)
            everyone = here + there

            async def settle():
                everyone[0].send_pkt(pb.C_CHAT(msg="settle"))
                for c in everyone:
                    await c.until(lambda c=c: any(m == "settle" for _, m in c.chats))
                    c.chats.clear()

            await settle()
            check_views(everyone, *truth(owner, room_id))
            for _ in range(8):
                await asyncio.gather(*[c.walk(rng.uniform(-9, 9), rng.uniform(-9, 9))
                                       for c in everyone])
                await settle()
                check_views(everyone, *truth(owner, room_id))
            await leave(*there)
            await settle_left(here, {c.my_id for c in there})
            await leave(*here)

    async def settle_left(clients, gone):
        for c in clients:
            await c.until(lambda c=c: not gone & c.view.keys())

    run(go(), timeout=60)
