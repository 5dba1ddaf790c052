"""Operating the server: the config file, --print-config, Prometheus metrics."""
import asyncio
import json
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import netcore
from netcore import DisconnectReason, make_packet
from netcore_packets import Protocol_pb2 as pb

from netcore_server.config_file import ConfigError, build, load_file, render
from netcore_server.db import SQLiteDatabase
from netcore_server.metrics import LOOP_STALLED_SECONDS
from netcore_game.server import GameServer, ServerConfig
from game_support import ServerProcess, connect, in_game


def server_cli(*args):
    return subprocess.run([sys.executable, "-m", "netcore_game.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    conf = tmp_path / "server.toml"
    conf.write_text('port = 1234\nmax-chat-bytes = 100\n[server]\nlog_level = "WARNING"\n'
                    'packet-rate = 5\n')
    out = server_cli("--config", str(conf), "--port", "4321", "--print-config")
    assert out.returncode == 0, out.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(out.stdout)
    effective = build(load_file(printed, ServerConfig), {}, ServerConfig)
    assert effective.port == 4321                       # the flag
    assert effective.max_chat_bytes == 100              # the file
    assert effective.log_level == "WARNING"             # the file's [server] table
    assert effective.packet_rate == 5.0                 # an int in TOML for a float setting
    assert effective.max_sessions == ServerConfig().max_sessions    # the default


def test_print_config_round_trips(tmp_path):
    config = ServerConfig(host="0.0.0.0", db='a "quoted" path', loop="asyncio", idle_timeout=30.5)
    path = tmp_path / "roundtrip.toml"
    path.write_text(render(config))
    assert build(load_file(path, ServerConfig), {}, ServerConfig) == config


@pytest.mark.parametrize("text, message", [
    ("prot = 7777\n", "unknown setting 'prot'"),
    ('port = "7777"\n', "port must be int, not str"),
    ("packet-rate = true\n", "packet-rate must be float, not bool"),
    ("port = \n", "not valid TOML"),
])
def test_a_bad_config_file_is_refused_with_the_key_named(tmp_path, text, message):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_file(conf)
    out = server_cli("--config", str(conf))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    out = server_cli("--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "cannot read config" in out.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    """(status, body) of GET path on the metrics endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(port):
    status, text = get(port, "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(port):
    samples = {}
    for family in families(port).values():
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_are_served_and_count_what_happened(run, tmp_path, loop_kind):
    metrics_port = free_port()
    with ServerProcess(tmp_path, loop_kind, "--metrics-port", str(metrics_port)) as server:
        async def go():
            a, b = await in_game(server.port, 2, room=4)
            (idle,) = await connect(server.port)
            for i in range(5):
                a.send_pkt(pb.C_CHAT(msg=f"m{i}"))
            await b.wait_chats(5)
            await a.wait_chats(5)
            before = scrape(metrics_port)
            bad = (await connect(server.port))[0]
            bad.send(make_packet(4242, b""))            # an unknown packet id
            await bad.until(lambda: bad.reason is not None)
            return before, idle

        before, _ = run(go())
        after = scrape(metrics_port)

    assert before[("netcore_sessions", (("state", "in_game"),))] == 2
    assert before[("netcore_sessions", (("state", "connected"),))] == 1
    assert before[("netcore_rooms", (("kind", "field"),))] == 1
    assert before[("netcore_packets_in_total", (("packet", "C_CHAT"),))] == 5
    assert before[("netcore_packets_in_total", (("packet", "C_LOGIN"),))] == 2
    assert before[("netcore_packets_out_total", (("packet", "S_CHAT"),))] == 10   # 5 chats x 2
    assert before[("netcore_bytes_in_total", (("packet", "C_CHAT"),))] == 5 * (4 + 4)
    assert after[("netcore_disconnects_total", (("reason", "protocol_error"),))] == 1
    assert after[("netcore_packets_in_total", (("packet", "unknown"),))] == 1
    # Every answer was flushed: nothing is left queued in any session.
    assert before[("netcore_send_queue_bytes", ())] == 0
    assert after[("netcore_send_queue_bytes", ())] == 0
    # One observation per time slice of a room (a slice runs every job queued by then).
    assert after[("netcore_job_queue_delay_seconds_count", ())] >= 1


def poll(condition, timeout=10.0):
    """Wait until condition() (a scrape) holds; the metrics thread answers on its own time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_metrics_follow_prometheus_conventions(run, tmp_path, loop_kind):
    metrics_port = free_port()
    with ServerProcess(tmp_path, loop_kind, "--metrics-port", str(metrics_port)) as server:
        fresh = families(metrics_port)
        # Every label value of netcore's own series is snake_case, or a packet's name.
        for name, family in fresh.items():
            if name.startswith("netcore_") and name != "netcore_build_info":
                for s in family.samples:
                    for key, value in s.labels.items():
                        if key == "packet":
                            assert re.fullmatch(r"[A-Z][A-Z0-9_]*|unknown", value), s
                        elif key != "le":
                            assert re.fullmatch(r"[a-z][a-z0-9_]*", value), s
        # Every series that can move is there from the start, at 0.
        reasons = {s.labels["reason"]: s.value for s in fresh["netcore_disconnects"].samples
                   if s.name.endswith("_total")}
        assert reasons == {r.name.lower() if r is not DisconnectReason.CLOSED else "closed_locally": 0
                           for r in DisconnectReason}
        assert "peer_closed" in reasons
        states = {s.labels["state"]: s.value for s in fresh["netcore_sessions"].samples}
        assert states == {"connected": 0, "logging_in": 0, "logged_in": 0, "in_game": 0,
                          "resuming": 0, "resumed": 0, "relayed": 0}
        packets_in = {s.labels["packet"] for s in fresh["netcore_packets_in"].samples}
        packets_out = {s.labels["packet"] for s in fresh["netcore_packets_out"].samples}
        # ...and none that cannot: a server never receives an S_ packet or sends a C_ one.
        assert packets_in == {"C_LOGIN", "C_ENTER_GAME", "C_CHAT", "C_MOVE", "C_RESUME",
                              "C_LEAVE", "unknown"}
        assert packets_out == {"S_LOGIN", "S_ENTER_GAME", "S_CHAT", "S_MOVE", "S_SPAWN",
                               "S_DESPAWN", "S_RESUME"}
        # Resumption's series, at 0 (netcore_server.resume).
        assert fresh["netcore_resume_holding"].samples[0].value == 0
        ended = {s.labels["why"]: s.value for s in fresh["netcore_resume_holds_ended"].samples
                 if s.name.endswith("_total")}
        assert ended == {"window": 0, "buffer": 0}
        # Latencies are histograms, read by any number of scrapers without a reset.
        for name in ("netcore_event_loop_lag_seconds", "netcore_job_queue_delay_seconds"):
            assert fresh[name].type == "histogram"
        lag_count = ("netcore_event_loop_lag_seconds_count", ())
        poll(lambda: scrape(metrics_port)[lag_count] >= 2)
        first = scrape(metrics_port)
        poll(lambda: scrape(metrics_port)[lag_count] > first[lag_count])
        second = scrape(metrics_port)
        inf_bucket = ("netcore_event_loop_lag_seconds_bucket", (("le", "+Inf"),))
        assert second[inf_bucket] == second[lag_count] > first[lag_count]
        # Build, platform and process information, as the default registry has it.
        assert second[("netcore_build_info", (("game", "netcore"),
                                              ("game_version", netcore.__version__),
                                              ("python", platform.python_version()),
                                              ("version", netcore.__version__)))] == 1
        assert "python_info" in fresh
        if sys.platform.startswith("linux"):
            assert ("process_open_fds", ()) in second
        # /metrics serves metrics, /healthz health, anything else is not found.
        assert get(metrics_port, "/")[0] == 404
        assert get(metrics_port, "/metricsx")[0] == 404
        status, body = get(metrics_port, "/healthz")
        assert status == 200
        assert json.loads(body)["accepting"] and json.loads(body)["loop_alive"]
        assert server.stop() == 0


def test_healthz_says_when_the_server_does_not_accept_or_its_loop_stalls(run, tmp_path):
    config = ServerConfig(port=0, db=str(tmp_path / "game.db"), metrics_port=free_port())

    async def go():
        server = await GameServer(config, SQLiteDatabase(config.db)).start()
        loop = asyncio.get_running_loop()
        port = config.metrics_port
        try:
            healthy = await loop.run_in_executor(None, get, port, "/healthz")
            server.service.stop_accepting()
            closed = await loop.run_in_executor(None, get, port, "/healthz")
            server.metrics.lag.stop()           # the loop no longer beats...
            server.metrics.lag.last_beat -= LOOP_STALLED_SECONDS     # ...for this long
            stalled = await loop.run_in_executor(None, get, port, "/healthz")
        finally:
            await server.stop()
        return healthy, closed, stalled

    healthy, closed, stalled = run(go())
    assert healthy[0] == 200
    assert closed[0] == 503
    assert json.loads(closed[1]) | {"seconds_since_loop_beat": 0} == {
        "accepting": False, "loop_alive": True, "seconds_since_loop_beat": 0}
    assert stalled[0] == 503 and json.loads(stalled[1])["loop_alive"] is False


def test_one_process_logs_a_sighup_and_serves_on(run, tmp_path, loop_kind):
    # A rolling restart needs --workers N: one process has nobody to hand
    # its players to. SIGHUP's default would kill it; it says so instead.
    with ServerProcess(tmp_path, loop_kind) as server:
        (before,) = run(in_game(server.port, 1))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "a rolling restart needs --workers N" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.02)        # another process's log: nothing to await
        (after,) = run(in_game(server.port, 1))
        assert server.proc.poll() is None
        before.disconnect()
        after.disconnect()
        assert server.stop() == 0
