"""Logs an operator can live with: each disconnect once, connects and normal
disconnects at DEBUG, addresses as host:port, per-client lines rate limited
(and counted), a periodic INFO summary, and no write on the event loop."""
import asyncio
import logging
import re
import signal
import subprocess
import sys
import threading

import pytest

from netcore import logs, make_packet
from netcore_packets import Protocol_pb2 as pb

from netcore_server.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from game_support import ServerProcess, connect, in_game, leave
from test_operations import free_port, scrape


@pytest.fixture
def budget():
    """The process's per-peer line budget, restored after the test."""
    saved = (logs.PEER_LINES.rate, logs.PEER_LINES.burst)
    yield logs.PEER_LINES
    logs.configure_peer_lines(*saved)


def lines_about(log: str, port: int) -> list[str]:
    return [line for line in log.splitlines() if f"127.0.0.1:{port}" in line]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_connects_and_normal_disconnects_are_debug_lines_once_each(run, tmp_path, loop_kind,
                                                                   level):
    with ServerProcess(tmp_path, loop_kind, "--log-level", level) as server:
        async def go():
            (c,) = await connect(server.port)
            assert (await c.login()).success
            port = c.transport.get_extra_info("sockname")[1]
            await leave(c)
            return port

        port = run(go())
        assert server.stop() == 0
    about = lines_about(server.log_text(), port)
    if level == "INFO":
        assert about == []
        return
    assert len(about) == 2, about
    assert re.search(r" DEBUG netcore\.session: session (\d+) connected from 127\.0\.0\.1:\d+$",
                     about[0])
    assert re.search(r" DEBUG netcore\.session: session (\d+) from 127\.0\.0\.1:\d+ "
                     r"disconnected: peer closed$", about[1])


def test_an_abnormal_disconnect_is_logged_once_as_a_warning(run, tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind) as server:
        async def go():
            (c,) = await connect(server.port)
            port = c.transport.get_extra_info("sockname")[1]
            c.send(make_packet(4242, b""))              # an unknown packet id
            await c.until(lambda: c.reason is not None)
            return port

        port = run(go())
        assert server.stop() == 0
    (line,) = lines_about(server.log_text(), port)
    assert re.search(r" WARNING netcore\.session: session \d+ from 127\.0\.0\.1:\d+ "
                     r"disconnected: protocol error: unknown packet id 4242$", line)


def test_refusals_are_counted_in_full_and_logged_within_the_budget(run, tmp_path, caplog,
                                                                   budget):
    caplog.set_level(logging.INFO, logger="netcore_server.handlers")
    logs.configure_peer_lines(0.001, 3)         # three lines, then nothing for 1,000 s
    suppressed = budget.suppressed

    async def go():
        async with GameServer(ServerConfig(port=0), SQLiteDatabase(tmp_path / "g.db")) as server:
            (c,) = await connect(server.port)
            for i in range(50):
                c.send_pkt(pb.C_CHAT(msg=f"early {i}"))       # each one a refusal
            assert (await c.login()).success                  # the fence: all 50 handled
            counts = dict(server.refusals.counts)
            await leave(c)
            return counts

    counts = run(go())
    assert counts["chat", "wrong_state"] == 50
    lines = [r.getMessage() for r in caplog.records if "chat dropped" in r.getMessage()]
    assert len(lines) == 3
    assert budget.suppressed - suppressed == 47


def test_the_server_logs_a_summary_every_so_often(run, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="netcore_server.server")
    config = ServerConfig(port=0, log_summary_seconds=0.05)

    async def go():
        async with GameServer(config, SQLiteDatabase(tmp_path / "g.db")) as server:
            a, b = await in_game(server.port, 2, room=1)
            (c,) = await connect(server.port)
            c.send_pkt(pb.C_CHAT(msg="too early"))
            assert (await c.login()).success
            assert not (await c.enter(7)).success             # no such character
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not any("chat/wrong_state 1" in r.getMessage() for r in caplog.records):
                assert loop.time() < deadline, "no summary with the refusals in 10 s"
                await asyncio.sleep(0.05)
            await leave(a, b, c)

    run(go())
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("summary: ")]
    line = next(s for s in summaries if "chat/wrong_state 1" in s)
    assert re.fullmatch(r"summary: 3 sessions \(2 in game\), 1 rooms, [\d.]+ logins/s, "
                        r"packets/s in \d+ out \d+, \d+ bytes unsent; refusals: .*", line)
    assert "enter/bad_index 1" in "".join(summaries)
    assert all(r.levelname == "INFO" for r in caplog.records if "summary" in r.getMessage())


def test_refusals_are_metrics_from_the_start(run, tmp_path, loop_kind):
    metrics_port = free_port()
    with ServerProcess(tmp_path, loop_kind, "--metrics-port", str(metrics_port)) as server:
        before = scrape(metrics_port)

        async def go():
            (c,) = await connect(server.port)
            c.send_pkt(pb.C_CHAT(msg="too early"))
            assert (await c.login()).success
            await leave(c)

        run(go())
        after = scrape(metrics_port)
    key = ("netcore_refusals_total", (("reason", "wrong_state"), ("refused", "chat")))
    assert before[key] == 0 and after[key] == 1
    assert before[("netcore_refusals_total", (("reason", "address_busy"), ("refused", "login")))] == 0
    assert before[("netcore_refusals_total", (("reason", "room_full"), ("refused", "enter")))] == 0
    for name in ("netcore_log_lines_suppressed_total", "netcore_log_records_dropped_total",
                 "netcore_slow_consumers_shed_total", "netcore_logins_in_flight"):
        assert after[(name, ())] == 0


def test_a_stderr_nobody_reads_never_stalls_the_game(run, tmp_path, loop_kind):
    # The server's stderr is a pipe we do not read: 64 KiB of log lines and a
    # write would block. Every line is let through (--peer-log-rate 0) and one
    # client provokes one per packet; players chat on regardless.
    cmd = [sys.executable, "-m", "netcore_game.cli", "--port", "0", "--db",
           str(tmp_path / "g.db"), "--loop", loop_kind, "--log-level", "DEBUG",
           "--peer-log-rate", "0", "--packet-rate", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = proc.stdout.readline().decode()
        assert "listening on" in banner, banner
        port = int(banner.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

        async def go():
            a, b = await in_game(port, 2, room=2)
            (noisy,) = await connect(port)
            noisy.transport.write(bytes(make_packet(1004, pb.C_CHAT(msg="x").SerializeToString()))
                                  * 30_000)
            for i in range(100):
                a.send_pkt(pb.C_CHAT(msg=str(i)))
                await b.wait_chats(i + 1)
            assert [m for _, m in b.chats] == [str(i) for i in range(100)]
            await leave(a, b, noisy)

        run(go(), timeout=60)
    finally:
        # Now read it: the server can write its backlog and stop.
        err = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        reader.join(30)
        proc.stdout.close()
    assert code == 0
    assert b"chat dropped in state connected" in err[0] and b"Traceback" not in err[0]
