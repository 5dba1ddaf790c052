"""Several machines, one account store: two netcore-server "machines" (distinct
ports and --node-ids) on a two-node NATS cluster and one PostgreSQL."""
import signal

import pytest

from cluster_support import ClusterProcess, NatsProcess, assert_one_order, chat_rounds, free_port
from db_backends import ACCOUNT_ROWS
from game_support import connect, leave

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX processes")


def test_an_account_made_on_one_machine_plays_on_the_other(run, tmp_path, loop_kind, pg_backend):
    ports = [free_port() for _ in range(2)]
    na = NatsProcess(tmp_path, "na", cluster_port=ports[0], routes=[f"nats://127.0.0.1:{ports[1]}"])
    nb = NatsProcess(tmp_path, "nb", cluster_port=ports[1], routes=[f"nats://127.0.0.1:{ports[0]}"])
    na.start(), nb.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        cluster = "alpha=1,beta=1"
        with ClusterProcess(tmp_path / "a", loop_kind, 1, "--nats", na.url, node="alpha",
                            cluster=cluster, db=pg_backend.db_arg) as ma, \
                ClusterProcess(tmp_path / "b", loop_kind, 1, "--nats", nb.url, node="beta",
                               cluster=cluster, db=pg_backend.db_arg) as mb:

            async def go():
                (alice_a, bob_b) = (await connect(ma.port))[0], (await connect(mb.port))[0]
                made = {"alice": await alice_a.login("alice", "pw"),       # created through A
                        "bob": await bob_b.login("bob", "pw")}             # created through B
                assert all(m.success for m in made.values())
                await leave(alice_a, bob_b)
                # Each logs in through the other machine: its password is known
                # there (a wrong one is refused, not made a new account) and it
                # gets the same characters.
                alice_b, bob_a, wrong_b, wrong_a = (
                    *(await connect(mb.port)), *(await connect(ma.port)),
                    *(await connect(mb.port)), *(await connect(ma.port)))
                assert not (await wrong_b.login("alice", "not alice's")).success
                assert not (await wrong_a.login("bob", "not bob's")).success
                again = {"alice": await alice_b.login("alice", "pw"),
                         "bob": await bob_a.login("bob", "pw")}
                for name in made:
                    assert again[name].success
                    assert [(p.name, p.playerType) for p in again[name].players] == \
                        [(p.name, p.playerType) for p in made[name].players]
                # Their players, one on each machine, chat in one room.
                room = ma.rooms_owned_by("alpha-0", 1)[0]
                players = [alice_b, bob_a]
                for c in players:
                    c.player_id = (await c.enter(0, room)).playerId
                assert mb.slot_of(alice_b.player_id) == "beta-0"
                assert ma.slot_of(bob_a.player_id) == "alpha-0"
                await chat_rounds(players, 5)
                expected = {f"{c.player_id}:{k}" for c in players for k in range(5)}
                for c in players:
                    await c.until(lambda c=c: sum(m in expected for _, m in c.chats)
                                  >= len(expected) or c.reason is not None, timeout=20)
                assert_one_order(players, expected)
                await leave(*players, wrong_a, wrong_b)

            run(go(), timeout=60)
            assert ma.stop() == 0 and mb.stop() == 0
    finally:
        na.stop(signal.SIGKILL)
        nb.stop(signal.SIGKILL)
    assert sorted(pg_backend.rows(ACCOUNT_ROWS)) == [("alice", 2), ("bob", 2)]
    for machine in (ma, mb):
        log = machine.log_text()
        assert "postgresql://netcore:***@" in machine.banner and "Traceback" not in log


def test_an_unreachable_database_stops_the_supervisor_before_any_worker(tmp_path):
    pytest.importorskip("asyncpg")
    port = free_port()                  # nothing listens there
    server = ClusterProcess(tmp_path, "asyncio", 2,
                            db=f"postgresql://netcore:s3cret@127.0.0.1:{port}/game")
    try:
        with pytest.raises(RuntimeError, match="server did not start"):
            server.start()
        assert server.proc.returncode == 2
    finally:
        if server.proc is not None:
            server.stop(sig=None)
    log = server.log_text()
    assert [l for l in log.splitlines() if l.startswith("netcore-server:")] == [
        f"netcore-server: cannot use database postgresql://netcore:***@127.0.0.1:{port}/game: "
        f"connection refused"]
    assert "worker" not in log and "Traceback" not in log and "s3cret" not in log
