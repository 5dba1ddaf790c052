"""The cluster's faults over real processes: the broker stopped and restarted, a
worker too slow for its room streams, and two NATS nodes with a server on each."""
import os
import re
import signal
import time

import pytest

from netcore_packets import Protocol_pb2 as pb

from cluster_support import (
    ClusterProcess, NatsProcess, assert_one_order, chat_rounds, clients_on_every_worker, wait_for,
)
from game_support import connect, leave

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX processes")


def count(server, pattern):
    return len(re.findall(pattern, server.log_text()))


def test_the_broker_stopped_and_restarted(run, tmp_path, loop_kind):
    nats = NatsProcess(tmp_path).start()
    try:
        with ClusterProcess(tmp_path, loop_kind, 2, "--nats", nats.url) as server:
            cross = server.rooms_owned_by("t-1", 1)[0]      # members on both workers
            local = server.rooms_owned_by("t-0", 1)[0]      # members on t-0 only

            async def go():
                spanning = await clients_on_every_worker(server, room=cross, per_worker=3)
                alone = [c for c in await clients_on_every_worker(server, local, per_worker=3)
                         if server.slot_of(c.player_id) == "t-0"]
                await chat_rounds(spanning, 3, tag="a")
                await wait_all(spanning, {f"a{c.player_id}:{k}" for c in spanning for k in range(3)})

                nats.stop()
                await wait_for(lambda: count(server, "lost the broker") >= 2, what="both workers")
                # A room owned where all its members are keeps working without the broker.
                await chat_rounds(alone, 3, tag="b")
                await wait_all(alone, {f"b{c.player_id}:{k}" for c in alone for k in range(3)})
                await chat_rounds(spanning, 3, tag="x")         # during the outage

                nats.start()
                await wait_for(lambda: count(server, "broker reconnected") >= 2, what="reconnects")
                # A member the outage made miss packets is told so: disconnected, with
                # the reason. A probe from the owner's side shows who is still in.
                probe = next(c for c in spanning if server.slot_of(c.player_id) == "t-1")
                probe.send_pkt(pb.C_CHAT(msg="probe"))
                for c in spanning:
                    await c.until(lambda c=c: c.reason is not None
                                  or any(m == "probe" for _, m in c.chats), timeout=20)
                survivors = [c for c in spanning if c.reason is None]
                cut = len(spanning) - len(survivors)
                await wait_for(lambda: count(server, f"disconnected: lost packets: room {cross} ") == cut,
                               what=f"{cut} disconnects for lost packets logged")
                # Cross-worker delivery resumes by itself.
                await chat_rounds(survivors, 3, tag="c")
                after = {f"c{c.player_id}:{k}" for c in survivors for k in range(3)}
                await wait_all(survivors, after)
                assert_one_order(survivors, after)
                # The outage's chats: delivered in one order, or their loss said out loud.
                during = {f"x{c.player_id}:{k}" for c in spanning for k in range(3)}
                got = [[m for _, m in c.chats if m in during] for c in survivors]
                assert all(g == got[0] for g in got)
                assert len(set(got[0])) == len(got[0])
                if len(got[0]) < len(during) or len(survivors) < len(spanning):
                    assert "never arrived" in server.log_text()
                await leave(*survivors, *alone)
            run(go(), timeout=90)
            assert server.stop() == 0
            assert "Traceback" not in server.log_text()
    finally:
        nats.stop(signal.SIGKILL)


def test_a_slow_worker_is_cut_off_by_the_broker_not_waited_for(run, tmp_path, loop_kind):
    # A broker that buffers little for a consumer that stops reading.
    nats = NatsProcess(tmp_path, config="max_pending: 262144\nmax_payload: 65536\nwrite_deadline: \"1s\"\n").start()
    try:
        with ClusterProcess(tmp_path, loop_kind, 2, "--nats", nats.url,
                            "--packet-rate", "0") as server:
            room = server.rooms_owned_by("t-1", 1)[0]

            async def go():
                clients = await clients_on_every_worker(server, room=room, per_worker=3)
                fast = [c for c in clients if server.slot_of(c.player_id) == "t-1"]
                slow = [c for c in clients if server.slot_of(c.player_id) == "t-0"]
                pid = server.worker_pids()["t-0"]
                os.kill(pid, signal.SIGSTOP)
                try:
                    # The owner's own players keep getting the room at once while
                    # megabytes of it pile up for the stopped worker.
                    big = "y" * 480
                    per_round = 100 * len(fast)
                    for k in range(40):
                        for c in fast:
                            for i in range(100):
                                c.send_pkt(pb.C_CHAT(msg=f"{big}{c.player_id}:{k}:{i}"))
                        started = time.monotonic()
                        for c in fast:
                            await c.until(lambda c=c: len(c.chats) >= per_round * (k + 1))
                        assert time.monotonic() - started < 2.0
                    await wait_for(lambda: "Slow Consumer" in nats.log_text(), timeout=30,
                                   what="the broker to cut off the stopped worker")
                finally:
                    os.kill(pid, signal.SIGCONT)
                # The stopped worker's players: told by a disconnect that they missed the room.
                for c in slow:
                    await c.until(lambda c=c: c.reason is not None, timeout=30)
                await wait_for(lambda: "never arrived" in server.log_text(), what="the gap logged")
                # And the worker serves again.
                fresh = await clients_on_every_worker(server, room=room, per_worker=1)
                fresh[0].send_pkt(pb.C_CHAT(msg="again"))
                for c in fresh:
                    await c.until(lambda c=c: any(m == "again" for _, m in c.chats), timeout=20)
                await wait_for(lambda: count(server, "disconnected: lost packets: room") == len(slow),
                               what="a disconnect for lost packets logged for each slow client")
                await leave(*fresh, *fast)
            run(go(), timeout=120)
            assert server.stop() == 0
    finally:
        nats.stop(signal.SIGKILL)


def test_two_machines_on_a_two_node_nats_cluster(run, tmp_path, loop_kind):
    from cluster_support import free_port
    ports = [free_port() for _ in range(2)]
    a = NatsProcess(tmp_path, "na", cluster_port=ports[0],
                    routes=[f"nats://127.0.0.1:{ports[1]}"])
    b = NatsProcess(tmp_path, "nb", cluster_port=ports[1],
                    routes=[f"nats://127.0.0.1:{ports[0]}"])
    a.start(), b.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        cluster = "alpha=1,beta=1"
        with ClusterProcess(tmp_path / "a", loop_kind, 1, "--nats", a.url, node="alpha",
                            cluster=cluster) as ma, \
                ClusterProcess(tmp_path / "b", loop_kind, 1, "--nats", b.url, node="beta",
                               cluster=cluster) as mb:
            rooms = [ma.rooms_owned_by("alpha-0", 1)[0], ma.rooms_owned_by("beta-0", 1)[0]]

            async def go():
                for room in rooms:
                    (on_a,) = await connect(ma.port)
                    (on_b,) = await connect(mb.port)
                    for c in (on_a, on_b):
                        assert (await c.login()).success
                        c.player_id = (await c.enter(0, room)).playerId
                    assert ma.slot_of(on_a.player_id) == "alpha-0"
                    assert mb.slot_of(on_b.player_id) == "beta-0"
                    await chat_rounds([on_a, on_b], 5)
                    expected = {f"{c.player_id}:{k}" for c in (on_a, on_b) for k in range(5)}
                    await wait_all([on_a, on_b], expected)
                    assert_one_order([on_a, on_b], expected)
                    await leave(on_a, on_b)
            run(go(), timeout=60)
            assert ma.stop() == 0 and mb.stop() == 0
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)


async def wait_all(clients, expected, partial=False, timeout=20.0):
    for c in clients:
        await c.until(lambda c=c: sum(m in expected for _, m in c.chats) >= len(expected)
                      or (c.reason is not None and not partial), timeout=timeout)
