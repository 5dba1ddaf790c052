"""netcore-server --workers N: real worker processes, a real nats-server, real clients.

The kernel spreads connections over the workers (SO_REUSEPORT); a player's id
says which worker it is on, so each test connects until every worker has the
clients it needs, and knows from the placement which worker owns each room.
"""
import os
import signal
import sys

import pytest

from netcore_packets import Protocol_pb2 as pb

from cluster_support import (
    ClusterProcess, assert_one_order, chat_rounds, clients_on_every_worker, wait_for,
)
from game_support import connect, leave

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX processes")


@pytest.mark.parametrize("workers", [2, 3])
def test_one_room_across_workers_every_chat_once_in_one_order(run, tmp_path, loop_kind, workers):
    with ClusterProcess(tmp_path, loop_kind, workers) as server:
        async def go():
            clients = await clients_on_every_worker(server, room=0, per_worker=4)
            await chat_rounds(clients, 20)
            expected = {f"{c.player_id}:{k}" for c in clients for k in range(20)}
            for c in clients:
                await c.wait_chats(len(expected))
            assert_one_order(clients, expected)
            await leave(*clients)
        run(go(), timeout=60)
        assert server.stop() == 0


def test_many_rooms_across_three_workers_each_hears_only_its_room(run, tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 3) as server:
        # Rooms of every owner, and members of each room on every worker.
        rooms = [r for slot in server.cmap.slots for r in server.rooms_owned_by(slot, 2)]

        async def go():
            groups = {r: await clients_on_every_worker(server, room=r, per_worker=2) for r in rooms}
            everyone = [c for g in groups.values() for c in g]
            await chat_rounds(everyone, 10)
            for r, group in groups.items():
                expected = {f"{c.player_id}:{k}" for c in group for k in range(10)}
                for c in group:
                    await c.wait_chats(len(expected))
                assert_one_order(group, expected)
                assert all(len(c.chats) == len(expected) for c in group)    # nothing else
            await leave(*everyone)
        run(go(), timeout=90)
        assert server.stop() == 0


def test_sigterm_during_cross_worker_chat_delivers_everything_accepted(run, tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        async def go():
            clients = await clients_on_every_worker(server, room=5, per_worker=5)
            await chat_rounds(clients, 30)
            server.proc.send_signal(signal.SIGTERM)          # mid-stream
            for c in clients:
                await c.until(lambda c=c: c.reason is not None, timeout=30)
            return clients
        clients = run(go(), timeout=60)
        assert server.stop(None) == 0
    # Whatever the server accepted, every member got, in the same order.
    orders = [[m for _, m in c.chats] for c in clients]
    assert all(o == orders[0] for o in orders)
    assert len(set(orders[0])) == len(orders[0])
    sent = {f"{c.player_id}:{k}" for c in clients for k in range(30)}
    assert set(orders[0]) <= sent


def test_a_killed_worker_is_restarted_and_no_other_player_loses_anything(run, tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 3) as server:
        victim = server.cmap.slots[1]
        # A room the victim owns, and one owned elsewhere.
        owned = server.rooms_owned_by(victim, 1)[0]
        other = server.rooms_owned_by(server.cmap.slots[2], 1)[0]

        async def go():
            pids = server.worker_pids()
            groups = {r: await clients_on_every_worker(server, room=r, per_worker=3)
                      for r in (owned, other)}
            survivors = {r: [c for c in g if server.slot_of(c.player_id) != victim]
                         for r, g in groups.items()}
            doomed = [c for g in groups.values() for c in g if server.slot_of(c.player_id) == victim]
            await chat_rounds([c for g in survivors.values() for c in g], 5, tag="a")
            os.kill(pids[victim], signal.SIGKILL)
            for c in doomed:        # its own clients are cut off
                await c.until(lambda c=c: c.reason is not None, timeout=20)
            # The others keep chatting, in both rooms, while it is down and after.
            await chat_rounds([c for g in survivors.values() for c in g], 5, tag="b")
            await wait_for(lambda: server.worker_pids().get(victim, pids[victim]) != pids[victim],
                           what="the restarted worker")
            await chat_rounds([c for g in survivors.values() for c in g], 5, tag="c")
            for r, group in survivors.items():
                expected = {f"{t}{c.player_id}:{k}" for c in group for t in "abc"
                            for k in range(5)}
                for c in group:
                    await c.until(lambda c=c: sum(m in expected for _, m in c.chats)
                                  >= len(expected), timeout=30)
                assert_tagged_once_in_one_order(group, expected)
            # New connections are served, on the restarted worker too.
            fresh = await clients_on_every_worker(server, room=owned, per_worker=1)
            fresh[0].send_pkt(pb.C_CHAT(msg="fresh"))
            for c in fresh + survivors[owned]:
                await c.until(lambda c=c: any(m == "fresh" for _, m in c.chats), timeout=20)
            await leave(*fresh, *[c for g in survivors.values() for c in g])
        run(go(), timeout=120)
        assert "died (signal 9)" in server.log_text()
        assert server.stop() == 0


def assert_tagged_once_in_one_order(clients, expected):
    orders = [[m for _, m in c.chats if m in expected] for c in clients]
    assert sorted(orders[0]) == sorted(expected)
    assert all(o == orders[0] for o in orders)


def test_workers_share_the_database_and_racing_account_creation_makes_one(run, tmp_path, loop_kind):
    import sqlite3
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        async def go():
            clients = await connect(server.port, 40)
            for c in clients:                   # all at once, across both workers
                c.send_pkt(pb.C_LOGIN(account="racer", password="pw"))
            replies = [await c.expect("S_LOGIN") for c in clients]
            assert all(r.success for r in replies)
            assert {len(r.players) for r in replies} == {2}
            slots = {server.slot_of((await c.enter(0, 0)).playerId) for c in clients}
            assert slots == {"t-0", "t-1"}      # both workers created or found it
            (wrong,) = await connect(server.port)
            assert not (await wrong.login("racer", "other")).success
            await leave(*clients, wrong)
        run(go(), timeout=60)
        assert server.stop() == 0
    db = sqlite3.connect(server.db)
    assert db.execute("SELECT count(*) FROM accounts WHERE name = 'racer'").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM characters").fetchone() == (2,)


def test_the_dummy_loads_a_multi_worker_server_unchanged(tmp_path, loop_kind):
    import json
    import subprocess
    import sys
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.port), "--json",
             "--clients", "200", "--rooms", "6", "--duration", "3", "--loop", loop_kind],
            capture_output=True, text=True, timeout=120)
        report = json.loads(proc.stdout.splitlines()[-1])
        assert proc.returncode == 0, proc.stderr
        assert report["in_game"] == 200 and report["lost"] == 0 and report["duplicated"] == 0
        assert report["received"] == report["expected"] > 0
        assert server.stop() == 0


def test_one_scrape_gives_every_worker_and_the_broker_figures(run, tmp_path, loop_kind):
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from cluster_support import free_port
    port = free_port()
    with ClusterProcess(tmp_path, loop_kind, 2, "--metrics-port", str(port)) as server:
        room = server.rooms_owned_by("t-1", 1)[0]

        async def go():
            clients = await clients_on_every_worker(server, room=room, per_worker=2)
            await chat_rounds(clients, 5)
            expected = {f"{c.player_id}:{k}" for c in clients for k in range(5)}
            for c in clients:
                await c.wait_chats(len(expected))
            await leave(*clients)
        run(go(), timeout=60)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((s.labels, s.value))

        def value(name, **labels):
            found = [v for l, v in samples.get(name, []) if labels.items() <= l.items()]
            assert len(found) == 1, (name, labels, found)
            return found[0]

        for slot in ("t-0", "t-1"):
            assert value("netcore_worker_up", worker=slot, node="t") == 1
            assert value("netcore_cluster_info", worker=slot, slot=slot) == 1
            assert value("netcore_packets_out_total", worker=slot, packet="S_CHAT") > 0
        # t-0's players got the room from t-1 through the broker; t-1 ran the ops.
        assert value("netcore_cluster_deliveries_relayed_total", worker="t-0") == 2 * 20
        assert value("netcore_cluster_ops_total", worker="t-0", event="forwarded") > 0
        assert value("netcore_cluster_ops_total", worker="t-1", event="applied") > 0
        assert value("netcore_cluster_messages_total", worker="t-1", direction="out") > 0
        assert value("netcore_cluster_forward_delay_seconds_count", worker="t-0") > 0
        assert value("netcore_cluster_batch_packets_count", worker="t-1") > 0
        assert value("netcore_worker_restarts_total") == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert json.loads(r.read()) == {"workers": {"t-0": True, "t-1": True}}
        assert server.stop() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_supervisor_leaves_no_worker_or_broker_behind(run, tmp_path, loop_kind):
    with ClusterProcess(tmp_path, loop_kind, 2) as server:
        children = [int(p) for p in open(
            f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read().split()]
        workers = list(server.worker_pids().values())
        assert len(workers) == 2 and set(workers) < set(children)
        assert len(children) == 3                   # and the private nats-server
        server.proc.kill()
        server.proc.wait(10)

        def alive(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False
        run(wait_for(lambda: not any(alive(p) for p in children), what="the children to exit"))
        assert "the supervisor is gone; shutting down" in server.log_text()


def test_workers_share_the_websocket_port_and_its_players_chat_across_them(run, tmp_path,
                                                                           loop_kind):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ws_port = s.getsockname()[1]
    with ClusterProcess(tmp_path, loop_kind, 2, "--ws-port", str(ws_port)) as server:
        assert server.ws_port == ws_port
        async def go():
            ws = await clients_on_every_worker(server, room=4, per_worker=2, transport="ws")
            tcp = await clients_on_every_worker(server, room=4, per_worker=1)
            everyone = ws + tcp
            await chat_rounds(everyone, 5)
            expected = {f"{c.player_id}:{k}" for c in everyone for k in range(5)}
            for c in everyone:
                await c.wait_chats(len(expected))
            assert_one_order(everyone, expected)
            await leave(*everyone)
        run(go(), timeout=90)
        assert server.stop() == 0
