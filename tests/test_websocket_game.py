"""The game over WebSocket: netcore-server --ws-port, its settings, metrics,
the dummy's --transport ws, and WebSocket and TCP players in one room."""
import asyncio
import json
import socket
import subprocess
import sys

import pytest
import websockets
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netcore import make_packet

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from netcore_dummy.client import DummyConfig, run_dummy
from netcore_game.cli import parse_args
from netcore_server.db import SQLiteDatabase
from netcore_server.metrics import MetricsServer
from netcore_game.server import GameServer, ServerConfig

from game_support import ServerProcess, in_game, leave
from support import packet
from ws_support import http_get


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def game_config(tmp_path, **kw):
    return ServerConfig(port=0, db=str(tmp_path / "game.db"), ws_port=free_port(), **kw)


def msg(name, **fields):
    return packet(PACKET_IDS[name], getattr(pb, name)(**fields).SerializeToString())


def unpack(data):
    """[(name, message)] of every packet in one binary message."""
    names = {v: k for k, v in PACKET_IDS.items()}
    out, pos = [], 0
    while pos < len(data):
        size, pkt_id = int.from_bytes(data[pos:pos + 2], "little"), int.from_bytes(
            data[pos + 2:pos + 4], "little")
        name = names[pkt_id]
        out.append((name, getattr(pb, name).FromString(data[pos + 4:pos + size])))
        pos += size
    return out


# -- settings ---------------------------------------------------------------------------

def test_the_websocket_port_is_off_by_default_and_set_like_every_setting(tmp_path):
    config, _ = parse_args([])
    assert (config.ws_port, config.ws_origins, config.ws_max_message_bytes) == (
        0, "self,loopback", 65536)
    assert parse_args(["--ws-port", "8080", "--ws-origins", "*"])[0].ws_port == 8080
    toml = tmp_path / "server.toml"
    toml.write_text('ws_port = 9090\nws_origins = "https://play.example.com"\n')
    config, _ = parse_args(["--config", str(toml)])
    assert (config.ws_port, config.ws_origins) == (9090, "https://play.example.com")


def test_the_upgrade_bounds_are_settings_that_reach_the_port(run, tmp_path):
    """--ws-max-upgrades-per-address and --ws-handshake-timeout bound the
    connections that have not upgraded (yet): past the cap one is aborted
    before a byte is read; one that never upgrades is aborted at the
    deadline; both are metrics."""
    config, _ = parse_args(["--ws-max-upgrades", "3", "--ws-max-upgrades-per-address", "2",
                            "--ws-handshake-timeout", "0.5"])
    assert (config.ws_max_upgrades, config.ws_max_upgrades_per_address,
            config.ws_handshake_timeout) == (3, 2, 0.5)
    config = game_config(tmp_path, ws_max_upgrades=3, ws_max_upgrades_per_address=2,
                         ws_handshake_timeout=0.5, exempt_networks="")

    async def go():
        loop = asyncio.get_running_loop()
        async with GameServer(config, SQLiteDatabase(tmp_path / "game.db")) as server:
            assert (server.ws.max_upgrades, server.ws.max_upgrades_per_address) == (3, 2)
            idle = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.ws_port)
                idle.append((reader, writer))
            # The third from this address is aborted at once; the first two at the deadline.
            for reader, _ in idle:
                try:
                    assert await asyncio.wait_for(reader.read(), 5) == b""
                except ConnectionResetError:
                    pass
            for _, writer in idle:
                writer.close()
            collector = MetricsServer(server, "127.0.0.1", 0)
            text = await loop.run_in_executor(None, generate_latest, collector.registry)
            samples = {s.name: s.value for f in text_string_to_metric_families(text.decode())
                       for s in f.samples}
            return samples, server.ws.refused_upgrades, server.ws.handshake_timeouts

    samples, refused, timeouts = run(go())
    assert (refused, timeouts) == (1, 2)
    assert samples["netcore_websocket_upgrades_refused_total"] == 1
    assert samples["netcore_websocket_handshake_timeouts_total"] == 2
    assert samples["netcore_websocket_upgrading"] == 0


@pytest.mark.parametrize("flags, message", [
    (["--ws-port", "70000"], "--ws-port 70000: must be <= 65535"),
    (["--ws-handshake-timeout", "0"], "ws-handshake-timeout 0.0: must be > 0 seconds"),
    (["--ws-port", "-1"], "--ws-port -1: must be >= 0"),
    (["--ws-origins", "ftp://x"], "ws-origins 'ftp://x': 'ftp://x' is not an origin"),
    (["--ws-max-message-bytes", "1000"], "ws-max-message-bytes 1000 cannot carry a packet"),
    (["--ws-port", "7777", "--port", "7777"], "ws-port 7777: the game port is 7777"),
])
def test_a_bad_websocket_setting_is_one_line_and_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(flags)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_taken_websocket_port_is_a_one_line_start_error(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "netcore_game.cli", "--port", "0", "--db",
             str(tmp_path / "g.db"), "--ws-port", str(port)],
            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert (f"cannot listen on 127.0.0.1:{port} (websocket port): "
            f"address already in use") in proc.stderr


# -- players over both transports ----------------------------------------------------------

def test_websocket_and_tcp_players_chat_in_one_room(run, tmp_path):
    async def go():
        config = game_config(tmp_path)
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            (tcp,) = await in_game(server.port, 1, room=3)
            (ws_player,) = await in_game(server.ws_port, 1, room=3, transport="ws")
            # A third player from an independent WebSocket implementation, by hand.
            async with websockets.connect(f"ws://127.0.0.1:{server.ws_port}/") as conn:
                await conn.send(msg("C_LOGIN"))
                [(name, login)] = unpack(await conn.recv())
                assert name == "S_LOGIN" and login.success
                await conn.send(msg("C_ENTER_GAME", playerIndex=0, roomId=3))
                [(name, entered)] = unpack(await conn.recv())
                assert name == "S_ENTER_GAME" and entered.success
                await conn.send(msg("C_CHAT", msg="from websockets"))
                ws_player.send_pkt(pb.C_CHAT(msg="from netcore ws"))
                await ws_player.wait_chats(1)
                tcp.send_pkt(pb.C_CHAT(msg="from tcp"))
                expected = {(entered.playerId, "from websockets"),
                            (ws_player.player_id, "from netcore ws"), (tcp.player_id, "from tcp")}
                for client in (tcp, ws_player):
                    assert set(await client.wait_chats(3)) == expected
                heard = set()
                while len(heard) < 3:
                    heard |= {(m.playerId, m.msg) for n, m in unpack(await conn.recv())
                              if n == "S_CHAT"}
                assert heard == expected
                kinds = sorted(s.transport_kind for s in server.service.sessions.values())
                assert kinds == ["tcp", "ws", "ws"]
            await leave(tcp, ws_player)
    run(go(), timeout=60)


def test_the_metrics_count_sessions_by_transport_and_websocket_closes(run, tmp_path):
    async def go():
        config = game_config(tmp_path)
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            metrics = MetricsServer(server, "127.0.0.1", 0)
            families = {f.name: f for f in metrics.registry.collect()}
            by_transport = {s.labels["transport"]: s.value
                            for s in families["netcore_sessions_by_transport"].samples}
            assert by_transport == {"tcp": 0, "ws": 0}
            tcp = await in_game(server.port, 2)
            ws = await in_game(server.ws_port, 3, transport="ws")
            status, _, page = await http_get(server.ws_port, "/")
            assert status == 200 and b"<title>netcore chat</title>" in page
            ws[0].send(make_packet(1000, b"\xff\xff"))     # C_LOGIN that is not protobuf
            await ws[0].until(lambda: ws[0].reason is not None)
            text = generate_latest(metrics.registry).decode()
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples[("netcore_sessions_by_transport", (("transport", "tcp"),))] == 2
            assert samples[("netcore_sessions_by_transport", (("transport", "ws"),))] == 2
            assert samples[("netcore_websocket_upgrades_total", ())] == 3
            assert samples[("netcore_websocket_http_requests_total", (("answer", "page"),))] == 1
            assert samples[("netcore_websocket_closes_total", (("code", "4000"),))] == 1
            assert samples[("netcore_websocket_closes_total", (("code", "4002"),))] == 0
            await leave(*tcp, *ws[1:])
    run(go(), timeout=60)


# -- netcore-dummy --transport ws ------------------------------------------------------------

def test_the_dummy_runs_its_scenario_over_websocket(run, tmp_path):
    async def go():
        config = game_config(tmp_path)
        async with GameServer(config, SQLiteDatabase(config.db)) as server:
            report = await run_dummy(DummyConfig(port=server.ws_port, transport="ws", clients=30,
                                                 rooms=3, rate=4, duration=1, drain_timeout=5))
            assert report.ok, report
            assert report.in_game == 30 and report.lost == 0 and report.malformed == 0
            assert report.received == report.expected == 30 * 4 * 10
            assert server.ws.upgrades == 30
    run(go(), timeout=90)


def test_the_dummy_refuses_an_unknown_transport():
    with pytest.raises(ValueError, match="--transport must be one of tcp, ws"):
        DummyConfig(transport="quic").validate()


def test_netcore_server_and_dummy_over_websocket_from_the_command_line(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind, "--ws-port", str(free_port())) as server:
        assert server.ws_port is not None
        proc = subprocess.run(
            [sys.executable, "-m", "netcore_dummy.cli", "--port", str(server.ws_port),
             "--transport", "ws", "--json", "--clients", "50", "--rooms", "2", "--duration", "1",
             "--loop", loop_kind], capture_output=True, text=True, timeout=120)
        report = json.loads(proc.stdout.splitlines()[-1])
        assert proc.returncode == 0, proc.stderr
        assert report["run"]["transport"] == "ws"
        assert report["in_game"] == 50 and report["lost"] == 0
        assert report["received"] == report["expected"] > 0
        assert server.stop() == 0
