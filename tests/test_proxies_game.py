"""netcore-server behind a proxy (--trusted-proxies): every per-address limit
of the game sees the client the proxy names, not the proxy. The failure
that was measured: behind a proxy on loopback (exempt, so counted by no
per-address limit) 1,000 named logins from one client take every slot of
--max-logins-in-flight, and a returning player's login from another client
is refused at once (server_busy). With the proxy trusted and each
connection's PROXY header naming its client, the flood holds only its own
address's 8 slots and the player gets in. Also: a PROXY header from anyone
else is a bad packet to the game (protocol error); the setting, its checks
and its metrics."""
import asyncio
import logging

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netcore import DisconnectReason
from netcore_packets import Protocol_pb2 as pb

from netcore_game.cli import parse_args
from netcore_game.server import GameServer, ServerConfig
from netcore_server.db import GUEST_CHARACTERS, Database, LoginResult, LoginStatus
from netcore_server.metrics import MetricsServer

from game_support import GameClient, connect_from, leave
from proxy_support import OTHER_HOST, PROXY_HOST, ProxiedClient, raw_from, v1, v2, via_proxy
from support import closed_by_peer

FLOOD = 1000
FLOOD_CLIENT = "203.0.113.66"
PLAYER_CLIENT = "198.51.100.20"


class FloodHeldDatabase(Database):
    """The flood's logins wait until the test lets them go; anyone else's
    are answered at once. Workers enough that the flood's held logins do
    not hold every one (the login gate hands the database that many)."""

    workers = 16

    def __init__(self):
        self.release = None

    async def open(self):
        self.release = asyncio.Event()

    async def close(self):
        pass

    async def login(self, account, password, *, create=True, wanted=None):
        if account.startswith("flood"):
            await self.release.wait()
        return LoginResult(LoginStatus.OK, GUEST_CHARACTERS)


class Answers:
    """How many S_LOGIN answers the flood has had; a test waits for a number."""

    def __init__(self):
        self.count = 0
        self.changed = asyncio.Event()

    async def reach(self, n, timeout=20.0):
        async def wait():
            while self.count < n:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


def flood_client(base, answers):
    class FloodClient(base):
        def on_recv_packet(self, pkt_id, payload):
            super().on_recv_packet(pkt_id, payload)
            answers.count += 1
            answers.changed.set()
    return FloodClient


async def flood(port, answers, through_proxy):
    """FLOOD connections, each sending one named login: through the proxy
    (a PROXY header naming FLOOD_CLIENT), or straight from loopback."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(100)
    proxied, plain = flood_client(ProxiedClient, answers), flood_client(GameClient, answers)

    async def one(i):
        async with sem:
            if through_proxy:
                client = await via_proxy(port, v1(FLOOD_CLIENT, 10000 + i), factory=proxied)
            else:
                _, client = await loop.create_connection(plain, "127.0.0.1", port)
            client.send_pkt(pb.C_LOGIN(account=f"flood{i}", password="pw"))
            return client

    return await asyncio.gather(*[one(i) for i in range(FLOOD)])


@pytest.mark.parametrize("trusted", [False, True], ids=["measured failure", "trusted proxy"])
def test_a_login_flood_behind_a_proxy_leaves_a_returning_player_room(run, trusted):
    config = ServerConfig(port=0, trusted_proxies=PROXY_HOST if trusted else "")
    assert (config.max_logins_in_flight, config.max_logins_in_flight_per_address) == (64, 8)
    db = FloodHeldDatabase()

    async def go():
        async with GameServer(config, db) as server:
            answers = Answers()
            clients = await flood(server.port, answers, trusted)
            held = 8 if trusted else 64         # the flood's logins in flight
            await answers.reach(FLOOD - held)   # every other one answered, refused
            assert server.logins.in_flight == held
            if trusted:
                player = await via_proxy(server.port, v2(PLAYER_CLIENT, 4711))
            else:
                player = await connect_from(server.port, OTHER_HOST)
            reply = await player.login("returning", "pw")
            refusals = dict(server.refusals.counts)
            db.release.set()
            await answers.reach(FLOOD)
            await leave(player, *clients)
            return reply.success, refusals

    success, refusals = run(go(), timeout=120)
    if trusted:
        assert success
        assert refusals["login", "address_busy"] == FLOOD - 8
        assert refusals["login", "server_busy"] == 0
    else:
        # What was measured: from behind a loopback proxy nobody is counted
        # per address, the flood fills the server and the player is refused.
        assert not success
        assert refusals["login", "server_busy"] == FLOOD - 64 + 1


def test_the_game_names_the_client_in_its_login_refusals(run, caplog):
    caplog.set_level(logging.INFO, logger="netcore_server.handlers")
    caplog.set_level(logging.DEBUG, logger="netcore.session")
    config = ServerConfig(port=0, trusted_proxies=PROXY_HOST, max_logins_in_flight_per_address=1)
    db = FloodHeldDatabase()

    async def go():
        async with GameServer(config, db) as server:
            a = await via_proxy(server.port, v1("2001:db8::66", 4711))
            b = await via_proxy(server.port, v1("2001:db8::67", 4712))    # the same /64
            a.send_pkt(pb.C_LOGIN(account="flood-a", password="pw"))
            assert not (await b.login("flood-b", "pw")).success
            db.release.set()
            assert (await a.expect("S_LOGIN")).success
            await leave(a, b)

    run(go())
    assert "login refused: 1 named logins in flight from 2001:db8::/64 (max 1)" in caplog.text
    assert "connected from [2001:db8::67]:4712" in caplog.text
    assert "from [2001:db8::66]:4711 disconnected" in caplog.text
    assert PROXY_HOST not in caplog.text


@pytest.mark.parametrize("data", [
    v1(FLOOD_CLIENT, 4711),
    # "\r\n" announces a packet of 2,573 bytes with id 0x0A0D: no such packet.
    v2(FLOOD_CLIENT, 4711) + b"\x00" * (2573 - 28),
], ids=["v1", "v2"])
def test_a_proxy_header_from_an_untrusted_peer_is_a_protocol_error(run, tmp_path, data):
    config = ServerConfig(port=0, db=str(tmp_path / "game.db"), trusted_proxies=PROXY_HOST)

    async def go():
        async with GameServer(config, FloodHeldDatabase()) as server:
            reader, writer = await raw_from(server.port, OTHER_HOST)
            writer.write(data)
            assert await closed_by_peer(reader)
            writer.close()
            return dict(server.service.disconnects), dict(server.service.proxy_header_failures)

    disconnects, failures = run(go())
    assert disconnects == {DisconnectReason.PROTOCOL_ERROR.value: 1}
    assert not any(failures.values())


def test_the_settings_reach_the_ports_and_the_failures_are_metrics(run, tmp_path):
    config, _ = parse_args([])
    assert (config.trusted_proxies, config.proxy_header_timeout, config.ws_proxy_protocol) == (
        "", 5.0, False)
    config, _ = parse_args(["--trusted-proxies", "10.0.0.0/8, 2001:db8::/32",
                            "--proxy-header-timeout", "2.5", "--ws-proxy-protocol", "true"])
    assert (config.trusted_proxies, config.proxy_header_timeout, config.ws_proxy_protocol) == (
        "10.0.0.0/8, 2001:db8::/32", 2.5, True)
    toml = tmp_path / "server.toml"
    toml.write_text('trusted-proxies = "192.0.2.10"\n')
    assert parse_args(["--config", str(toml)])[0].trusted_proxies == "192.0.2.10"
    config = ServerConfig(port=0, ws_port=0, trusted_proxies=PROXY_HOST, proxy_header_timeout=3)

    async def go():
        loop = asyncio.get_running_loop()
        async with GameServer(config, FloodHeldDatabase()) as server:
            assert PROXY_HOST in server.service.trusted_proxies
            assert server.service.proxy_header_timeout == 3
            reader, writer = await raw_from(server.port, PROXY_HOST)
            writer.write(b"\x08\x00\xe8\x03")               # a login packet, no header first
            assert await closed_by_peer(reader)
            writer.close()
            collector = MetricsServer(server, "127.0.0.1", 0)
            text = await loop.run_in_executor(None, generate_latest, collector.registry)
            return {(s.name, tuple(s.labels.items())): s.value
                    for f in text_string_to_metric_families(text.decode()) for s in f.samples}

    samples = run(go())
    assert samples["netcore_proxy_header_failures_total", (("reason", "missing"),)] == 1
    assert samples["netcore_proxy_header_failures_total", (("reason", "timeout"),)] == 0
    assert samples["netcore_proxy_headers_waiting", ()] == 0


@pytest.mark.parametrize("flags, message", [
    (["--trusted-proxies", "10.0.0.0/8,nonsense"],
     "trusted-proxies '10.0.0.0/8,nonsense': 'nonsense' is not an IP address or network"),
    (["--proxy-header-timeout", "0"], "proxy-header-timeout 0.0: must be > 0 seconds"),
    (["--proxy-header-timeout", "-1"], "--proxy-header-timeout -1: must be >= 0"),
    (["--ws-proxy-protocol", "maybe"], "--ws-proxy-protocol maybe: must be true or false"),
])
def test_bad_proxy_settings_are_refused_at_start(capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        parse_args(flags)
    assert exc.value.code == 2 and message in capsys.readouterr().err
