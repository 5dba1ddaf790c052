"""Operating the server: the config file, --print-config, Prometheus metrics."""
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netcore import make_packet
from netcore_packets import Protocol_pb2 as pb

from netcore_game.config import ConfigError, build, load_file, render
from netcore_game.server import ServerConfig
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
    effective = build(load_file(printed), {})
    assert effective.port == 4321                       # the flag
    assert effective.max_chat_bytes == 100              # the file
    assert effective.log_level == "WARNING"             # the file's [server] table
    assert effective.packet_rate == 5.0                 # an int in TOML for a float setting
    assert effective.max_sessions == ServerConfig().max_sessions    # the default


def test_print_config_round_trips(tmp_path):
    config = ServerConfig(host="0.0.0.0", db='a "quoted" path', loop="asyncio", idle_timeout=30.5)
    path = tmp_path / "roundtrip.toml"
    path.write_text(render(config))
    assert build(load_file(path), {}) == config


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


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
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

    assert before[("netcore_sessions", (("state", "in game"),))] == 2
    assert before[("netcore_sessions", (("state", "connected"),))] == 1
    assert before[("netcore_rooms", ())] == 1
    assert before[("netcore_packets_in_total", (("packet", "C_CHAT"),))] == 5
    assert before[("netcore_packets_in_total", (("packet", "C_LOGIN"),))] == 2
    assert before[("netcore_packets_out_total", (("packet", "S_CHAT"),))] == 10   # 5 chats x 2
    assert before[("netcore_bytes_in_total", (("packet", "C_CHAT"),))] == 5 * (4 + 4)
    assert after[("netcore_disconnects_total", (("reason", "protocol error"),))] == 1
    assert after[("netcore_packets_in_total", (("packet", "4242"),))] == 1
    # Every answer was flushed: nothing is left queued in any session.
    assert before[("netcore_send_queue_bytes", ())] == 0
    assert after[("netcore_send_queue_bytes", ())] == 0
    assert 0 <= after[("netcore_event_loop_lag_seconds", ())] < 5
    assert ("netcore_job_queue_delay_seconds", ()) in after
