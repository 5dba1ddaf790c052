"""Trusted proxies on the game port (ServerService(trusted_proxies=...)):
a connection from a trusted network begins with a PROXY header, which is
read before any session exists; the session's peername, and so every
per-address limit and log line, is the client's. Without a header, or with
a bad or slow one, the connection is closed, counted and logged; a header
from anyone else is not honoured. On both event loops and both TCP
transports (netcore's own, and the loop's), over real loopback sockets:
the "proxy" is 127.0.0.2, an untrusted peer 127.0.0.3."""
import contextlib
import gc
import logging
import sys

import pytest

from netcore import DisconnectReason, ServerService
from netcore.service import _new_proxied
from proxy_support import OTHER_HOST, PROXY_HOST, raw_from, tlv, v1, v2
from support import (
    Echo, FakeTransport, ServerSessions, closed_by_peer, collector_as_the_server_runs_it, packet,
)

TRANSPORTS = ["netcore", "loop"] if sys.platform.startswith("linux") else ["loop"]


@pytest.fixture(params=TRANSPORTS)
def tcp_transport(request):
    return request.param


@contextlib.asynccontextmanager
async def proxied_service(tcp_transport, made=None, **kw):
    """A service that trusts PROXY_HOST, its packets at most 4096 bytes (as
    netcore-server's), and the factory of its sessions."""
    made = ServerSessions() if made is None else made
    kw.setdefault("trusted_proxies", PROXY_HOST)
    kw.setdefault("max_sessions_per_address", 100)
    kw.setdefault("exempt_networks", "")
    async with ServerService(made, tcp_transport=tcp_transport, max_packet_size=4096,
                             **kw) as service:
        yield service, made


CLIENTS = [
    ("v1 TCP4", v1("203.0.113.7", 4711), ("203.0.113.7", 4711), "203.0.113.7"),
    ("v1 TCP6", v1("2001:db8::7", 4711), ("2001:db8::7", 4711, 0, 0), "2001:db8::/64"),
    ("v2 TCP4", v2("203.0.113.7", 4711), ("203.0.113.7", 4711), "203.0.113.7"),
    ("v2 TCP6 TLVs", v2("2001:db8::7", 4711, tlvs=tlv(0x01, b"h2") + tlv(0x05, b"x" * 60)),
     ("2001:db8::7", 4711, 0, 0), "2001:db8::/64"),
]


@pytest.mark.parametrize("header, client, key", [c[1:] for c in CLIENTS],
                         ids=[c[0] for c in CLIENTS])
def test_a_trusted_proxys_header_names_the_client_and_the_session_sees_none_of_it(
        run, tcp_transport, header, client, key):
    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(header + packet(7, b"first"))         # one write: one read, mostly
            (s,) = await made.wait_count(1)
            assert s.peername == client
            assert await reader.readexactly(9) == packet(7, b"first")     # echoed
            assert s.packets == [(7, b"first")]
            assert service.address_sessions == {key: 1}
            assert service.proxied_waiting == 0
            assert service.proxy_header_failures == dict.fromkeys(service.proxy_header_failures, 0)
            writer.close()
            await s.wait_gone()
            assert service.address_sessions == {}

    run(main())


@pytest.mark.parametrize("header", [v2(), v2("203.0.113.7", 1, command=0), v2(fam=0x00),
                                    b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"],
                         ids=["v2 LOCAL", "v2 LOCAL with addresses", "v2 UNSPEC", "v1 UNKNOWN",
                              "v1 UNKNOWN with addresses"])
def test_local_and_unknown_keep_the_proxys_own_address(run, tcp_transport, header):
    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(header)
            writer.write(packet(7, b"health check"))
            (s,) = await made.wait_count(1)
            assert s.peername == writer.get_extra_info("sockname")
            assert await reader.readexactly(16) == packet(7, b"health check")
            writer.close()
            await s.wait_gone()

    run(main())


def test_a_header_in_pieces_is_read_whole(run, tcp_transport):
    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            data = v2("203.0.113.7", 4711) + packet(7, b"after")
            reader, writer = await raw_from(service.port, PROXY_HOST)
            for i in range(0, len(data), 5):
                writer.write(data[i:i + 5])
                await writer.drain()
            (s,) = await made.wait_count(1)
            assert s.peername == ("203.0.113.7", 4711)
            assert await reader.readexactly(9) == packet(7, b"after")
            writer.close()
            await s.wait_gone()

    run(main())


class ProxyTransport(FakeTransport):
    """A transport driven by hand whose peer is the proxy, whose protocol may change."""

    def __init__(self, peer):
        super().__init__()
        self.peer = peer
        self.protocol = None

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol


def deliver(transport, data, cuts):
    """data in reads ending at `cuts`, each into whichever protocol the
    transport has at that moment (as a transport reads)."""
    pos = 0
    for end in sorted(set(cuts)) + [len(data)]:
        while pos < end:
            protocol = transport.protocol
            buf = protocol.get_buffer(-1)
            n = min(len(buf), end - pos)
            buf[:n] = data[pos:pos + n]
            protocol.buffer_updated(n)
            pos += n


@pytest.mark.parametrize("header", [v1("2001:db8::7", 4711), v2("2001:db8::7", 4711)],
                         ids=["v1", "v2"])
def test_a_header_cut_anywhere_gives_the_same_session(run, header):
    # Every cut of header + two packets, read by read, and one byte a read.
    data = header + packet(7, b"one") + packet(8, b"two")
    cuttings = [[cut] for cut in range(1, len(data))] + [list(range(1, len(data)))]

    async def main():
        async with proxied_service("loop") as (service, made):
            for cuts in cuttings:
                transport = ProxyTransport((PROXY_HOST, 5555))
                transport.protocol = _new_proxied(service, False)   # what the loop's server makes
                transport.protocol.connection_made(transport)
                assert service.proxied_waiting == 1
                deliver(transport, data, cuts)
                s = transport.protocol
                assert isinstance(s, Echo) and s.peername == ("2001:db8::7", 4711, 0, 0)
                assert s.packets == [(7, b"one"), (8, b"two")], cuts
                assert service.proxied_waiting == 0
                s.connection_lost(None)
            assert len(made.made) == len(cuttings) and not service.sessions

    run(main())


BAD = [
    ("missing", packet(7, b"no header at all"), "no PROXY header: the connection begins with"),
    ("missing", b"GET / HTTP/1.1\r\n\r\n", "no PROXY header"),
    ("malformed", b"PROXY TCP4 203.0.113.7 192.0.2.1 04711 7777\r\n",
     "source port is not 0..65535"),
    ("malformed", v2("203.0.113.7", 1, command=3), "with command 3"),
    ("malformed", v2("203.0.113.7", 1, length=6), "length 6 is too short"),
    ("oversized", v2("203.0.113.7", 1, length=5000), "of 5016 bytes (at most 4096)"),
    ("oversized", b"PROXY TCP6 " + b"f" * 120, "without CRLF in its first 107 bytes"),
]


@pytest.mark.parametrize("reason, data, detail", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_header_closes_the_connection_with_its_reason(run, tcp_transport, caplog, reason,
                                                            data, detail):
    caplog.set_level(logging.DEBUG, logger="netcore.service")

    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(data)
            assert await closed_by_peer(reader)
            port = writer.get_extra_info("sockname")[1]
            writer.close()
            assert made.made == []                  # no session was ever made
            failures = dict(service.proxy_header_failures)
            assert failures.pop(reason) == 1 and not any(failures.values())
            assert service.proxied_waiting == 0
            return port

    port = run(main())
    lines = [r for r in caplog.records if "closed:" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage().startswith(f"connection from proxy {PROXY_HOST}:{port} closed: ")
    assert detail in lines[0].getMessage()


def test_a_slow_header_is_closed_at_its_deadline(run, tcp_transport, caplog):
    caplog.set_level(logging.INFO, logger="netcore.service")

    async def main():
        async with proxied_service(tcp_transport, proxy_header_timeout=0.2) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(v1("203.0.113.7", 4711)[:20])        # and nothing more
            assert await closed_by_peer(reader)
            writer.close()
            assert made.made == [] and service.proxy_header_failures["timeout"] == 1

    run(main())
    assert "closed: no complete PROXY header within 0.2 s" in caplog.text


def test_a_connection_that_ends_before_its_header_is_counted_as_closed(run, tcp_transport):
    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(v2("203.0.113.7", 4711)[:20])
            writer.write_eof()
            assert await closed_by_peer(reader)
            writer.close()
            assert made.made == [] and service.proxy_header_failures["closed"] == 1

    run(main())


def test_a_proxy_header_from_an_untrusted_peer_is_just_bytes_to_the_session(run, tcp_transport):
    # "PR" is a header announcing 21,072 bytes: past 4096, a protocol error.
    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, OTHER_HOST)
            writer.write(v1("203.0.113.7", 4711))
            (s,) = await made.wait_made(1)
            assert (await s.wait_gone()).kind is DisconnectReason.PROTOCOL_ERROR
            assert s.peername[0] == OTHER_HOST
            assert await closed_by_peer(reader)
            writer.close()
            # And an untrusted peer's packets are served as ever.
            reader, writer = await raw_from(service.port, OTHER_HOST)
            writer.write(packet(7, b"plain"))
            assert await reader.readexactly(9) == packet(7, b"plain")
            assert made.made[1].peername == writer.get_extra_info("sockname")
            writer.close()
            assert not any(service.proxy_header_failures.values())

    run(main())


def test_per_address_caps_count_the_clients_behind_the_proxy(run, tcp_transport):
    clients = ["203.0.113.7"] * 3 + ["203.0.113.8"] + ["2001:db8::1", "2001:db8::2",
                                                       "2001:db8::3", "2001:db8:0:1::1"]

    async def main():
        async with proxied_service(tcp_transport, max_sessions_per_address=2) as (service, made):
            writers = []
            for i, client in enumerate(clients):
                reader, writer = await raw_from(service.port, PROXY_HOST)
                writer.write(v2(client, 1000 + i))
                writers.append((reader, writer))
                await made.wait_made(i + 1)
            sessions = made.made
            for i in (2, 6):        # a third from 203.0.113.7, and from 2001:db8::/64
                assert (await sessions[i].wait_gone()).kind is DisconnectReason.ADDRESS_FULL
                assert await closed_by_peer(writers[i][0])
            assert service.address_sessions == {"203.0.113.7": 2, "203.0.113.8": 1,
                                                "2001:db8::/64": 2, "2001:db8:0:1::/64": 1}
            assert service.rejected_by_address == 2
            for _, writer in writers:
                writer.close()

    run(main())


def test_the_session_is_logged_under_the_clients_address(run, tcp_transport, caplog):
    caplog.set_level(logging.DEBUG, logger="netcore.session")

    async def main():
        async with proxied_service(tcp_transport) as (service, made):
            reader, writer = await raw_from(service.port, PROXY_HOST)
            writer.write(v1("2001:db8::7", 4711))
            (s,) = await made.wait_count(1)
            writer.close()
            await s.wait_gone()
            return s.session_id

    sid = run(main())
    assert f"session {sid} connected from [2001:db8::7]:4711" in caplog.text
    assert f"session {sid} from [2001:db8::7]:4711 disconnected: peer closed" in caplog.text
    assert f"{PROXY_HOST}:" not in caplog.text


def test_connections_waiting_for_their_header_count_against_max_sessions(run, tcp_transport):
    async def main():
        # One listening socket: connections are taken in the order they came.
        async with proxied_service(tcp_transport, max_sessions=2,
                                   listen_sockets=1) as (service, made):
            waiting = [await raw_from(service.port, PROXY_HOST) for _ in range(2)]
            for host in (PROXY_HOST, OTHER_HOST):       # a header-to-be and a session: full
                reader, writer = await raw_from(service.port, host)
                assert await closed_by_peer(reader)
                writer.close()
            assert service.rejected == 2 and service.proxied_waiting == 2
            # Stopping aborts them: no header can make a session now.
            service.stop_accepting()
            for reader, writer in waiting:
                assert await closed_by_peer(reader)
                writer.close()
            assert service.proxied_waiting == 0 and made.made[0].reason.kind is (
                DisconnectReason.SERVER_FULL)

    run(main())


def test_a_proxied_connection_leaves_nothing_for_the_collector(run, tcp_transport):
    # The server runs with the collector all but off (netcore.loop): a cycle
    # left by a header's reader, its timer or its hand-over would stay.
    from netcore.proxy import HeaderReader

    def readers():
        return sum(isinstance(o, HeaderReader) for o in gc.get_objects())

    async def main():
        async with proxied_service(tcp_transport, proxy_header_timeout=0.2) as (service, made):
            for data, served in ((v1("203.0.113.7", 1) + packet(7, b"x"), True),
                                 (packet(7, b"no header"), False),
                                 (v2("203.0.113.7", 1)[:20], False),       # times out
                                 (b"PROXY TCP4 nonsense\r\n", False)):
                reader, writer = await raw_from(service.port, PROXY_HOST)
                writer.write(data)
                if served:
                    assert await reader.readexactly(5) == packet(7, b"x")
                else:
                    assert await closed_by_peer(reader)
                writer.close()
            for s in made.made:
                await s.wait_gone()
            reader, writer = await raw_from(service.port, OTHER_HOST)     # untrusted
            writer.write(packet(7, b"y"))
            assert await reader.readexactly(5) == packet(7, b"y")
            writer.close()
            await made.made[-1].wait_gone()
            assert service.proxied_waiting == 0

    with collector_as_the_server_runs_it():
        before = readers()
        run(main())
        assert readers() == before


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="'nonsense' is not an IP address or network"):
        ServerService(Echo, trusted_proxies="10.0.0.0/8,nonsense")
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="proxy_header_timeout"):
            ServerService(Echo, trusted_proxies="10.0.0.0/8", proxy_header_timeout=bad)
    assert ServerService(Echo).trusted_proxies is None
    assert ServerService(Echo, trusted_proxies=None).trusted_proxies is None
    assert len(ServerService(Echo, trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies) == 2
