"""Trusted proxies on the WebSocket port: an upgrade from a trusted HTTP
reverse proxy takes its session's address from Forwarded (RFC 7239) or
X-Forwarded-For, the right-most entry; with proxy_protocol on, a trusted
TCP proxy's connection begins with a PROXY header and the request's
headers count only if the client it names is itself trusted. From anyone
else the headers are ignored. Real loopback sockets, both event loops: the
proxy is 127.0.0.2, an untrusted peer 127.0.0.3."""
import asyncio
import contextlib
import logging

import pytest

from netcore import ServerService
from netcore.websocket import WebSocketListener
from proxy_support import OTHER_HOST, PROXY_HOST, raw_from, v1, v2
from support import ServerSessions, closed_by_peer
from ws_support import raw_ws, read_close, upgrade, upgrade_request


@contextlib.asynccontextmanager
async def ws_behind_proxy(made=None, *, proxy_protocol=False, trusted=PROXY_HOST, ws=None,
                          **limits):
    made = ServerSessions() if made is None else made
    limits.setdefault("exempt_networks", "")
    limits.setdefault("max_sessions_per_address", 100)
    service = await ServerService(made, "127.0.0.1", 0, trusted_proxies=trusted,
                                  **limits).start()
    listener = await WebSocketListener(service, "127.0.0.1", 0, proxy_protocol=proxy_protocol,
                                       listen_sockets=1, **(ws or {})).start()
    try:
        yield service, listener, made
    finally:
        await service.close()


FROM_HEADERS = [
    ("Forwarded IPv6", ['Forwarded: for="[2001:db8:cafe::17]:4711";proto=https'],
     ("2001:db8:cafe::17", 4711, 0, 0)),
    ("Forwarded right-most", ["Forwarded: for=192.0.2.43", "Forwarded: for=198.51.100.17"],
     ("198.51.100.17", 0)),
    ("X-Forwarded-For right-most", ["X-Forwarded-For: 198.51.100.1, 203.0.113.9"],
     ("203.0.113.9", 0)),
    ("Forwarded before X-Forwarded-For",
     ["X-Forwarded-For: 203.0.113.9", "Forwarded: for=198.51.100.17"], ("198.51.100.17", 0)),
    ("Forwarded unknown", ["Forwarded: for=unknown", "X-Forwarded-For: 203.0.113.9"], None),
    ("Forwarded obfuscated", ['Forwarded: for="_hidden"'], None),
    ("X-Forwarded-For garbage", ["X-Forwarded-For: 203.0.113.9, nonsense"], None),
    ("no header", [], None),
]


@pytest.mark.parametrize("headers, client", [c[1:] for c in FROM_HEADERS],
                         ids=[c[0] for c in FROM_HEADERS])
@pytest.mark.parametrize("peer", [PROXY_HOST, OTHER_HOST], ids=["trusted", "untrusted"])
def test_a_trusted_proxy_names_the_client_in_its_headers_and_nobody_else_does(
        run, peer, headers, client):
    async def main():
        async with ws_behind_proxy() as (service, listener, made):
            reader, writer = await raw_ws(listener.port, local_addr=(peer, 0), headers=headers)
            (s,) = await made.wait_count(1)
            own = writer.get_extra_info("sockname")
            assert s.peername == (client if client is not None and peer == PROXY_HOST else own)
            writer.close()
            await s.wait_gone()

    run(main())


def test_the_client_behind_an_http_proxy_is_what_per_address_caps_count(run):
    # Two players behind the proxy with the same address: the second is the
    # one too many. The proxy's own address holds three sessions meanwhile.
    async def main():
        async with ws_behind_proxy(max_sessions_per_address=1) as (service, listener, made):
            players = []
            for client in ("203.0.113.9", "203.0.113.10", "203.0.113.9"):
                players.append(await raw_ws(listener.port, local_addr=(PROXY_HOST, 0),
                                            headers=[f"X-Forwarded-For: {client}"]))
            code, reason = await read_close(players[2][0])
            assert code == 4007 and "1 sessions from 203.0.113.9" in reason
            assert service.address_sessions == {"203.0.113.9": 1, "203.0.113.10": 1}
            for _, writer in players:
                writer.close()

    run(main())


def test_upgrades_from_an_http_proxy_are_not_counted_per_address(run):
    # The proxy's address would count all its clients' upgrades together.
    async def main():
        async with ws_behind_proxy(ws={"max_upgrades_per_address": 1}) as (
                service, listener, made):
            idle = [await raw_from(listener.port, PROXY_HOST) for _ in range(3)]
            # One listening socket: the three were taken before this one.
            reader, writer = await raw_ws(listener.port, local_addr=(PROXY_HOST, 0))
            assert listener.upgrading == 3 and listener.upgrading_by_address == {}
            assert listener.refused_upgrades == 0
            # An untrusted address still has its cap.
            others = [await raw_from(listener.port, OTHER_HOST) for _ in range(2)]
            assert await closed_by_peer(others[1][0])
            assert listener.refused_upgrades == 1
            for _, w in idle + others + [(reader, writer)]:
                w.close()

    run(main())


# -- behind a TCP proxy: proxy_protocol -----------------------------------------------------

def test_a_tcp_proxys_header_names_the_client_and_its_requests_headers_are_ignored(run):
    async def main():
        async with ws_behind_proxy(proxy_protocol=True) as (service, listener, made):
            # The client's own X-Forwarded-For reaches us through a TCP proxy: not believed.
            reader, writer = await raw_ws(listener.port, local_addr=(PROXY_HOST, 0),
                                          before=v2("2001:db8::7", 4711),
                                          headers=["X-Forwarded-For: 198.51.100.66"])
            (s,) = await made.wait_count(1)
            assert s.peername == ("2001:db8::7", 4711, 0, 0)
            assert service.address_sessions == {"2001:db8::/64": 1}
            writer.close()
            # A v1 header in pieces, then the request: the same.
            reader, writer = await raw_from(listener.port, PROXY_HOST)
            for piece in (b"PROXY TCP4 203.0.1", b"13.8 192.0.2.1 4712 ", b"80\r\n"):
                writer.write(piece)
                await writer.drain()
            await upgrade(reader, writer, listener.port)
            (_, s2) = await made.wait_count(2)
            assert s2.peername == ("203.0.113.8", 4712)
            writer.close()

    run(main())


def test_headers_behind_a_tcp_proxy_count_when_the_header_names_a_trusted_proxy(run):
    # A TCP load balancer (127.0.0.2) in front of an HTTP proxy (127.0.0.4).
    async def main():
        async with ws_behind_proxy(proxy_protocol=True, trusted="127.0.0.2,127.0.0.4") as (
                service, listener, made):
            reader, writer = await raw_ws(listener.port, local_addr=(PROXY_HOST, 0),
                                          before=v1("127.0.0.4", 5000),
                                          headers=["Forwarded: for=198.51.100.66"])
            (s,) = await made.wait_count(1)
            assert s.peername == ("198.51.100.66", 0)
            writer.close()

    run(main())


@pytest.mark.parametrize("before, why", [
    (b"", "missing"),                                                   # the request at once
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 07\r\n", "malformed"),
    (v2("203.0.113.7", 1, length=4090), "oversized"),
])
def test_a_tcp_proxys_bad_header_closes_the_connection(run, caplog, before, why):
    caplog.set_level(logging.WARNING, logger="netcore.service")

    async def main():
        async with ws_behind_proxy(proxy_protocol=True) as (service, listener, made):
            reader, writer = await raw_from(listener.port, PROXY_HOST)
            writer.write(before + upgrade_request(listener.port))
            assert await closed_by_peer(reader)
            writer.close()
            assert made.made == [] and service.proxy_header_failures[why] == 1
            assert listener.upgrading == 0 and listener.upgrades == 0

    run(main())
    assert f"connection from proxy {PROXY_HOST}:" in caplog.text


def test_a_tcp_proxys_slow_header_is_closed_at_the_handshake_deadline(run):
    async def main():
        async with ws_behind_proxy(proxy_protocol=True, ws={"handshake_timeout": 0.2}) as (
                service, listener, made):
            reader, writer = await raw_from(listener.port, PROXY_HOST)
            writer.write(v2("203.0.113.7", 1)[:20])
            assert await closed_by_peer(reader)
            writer.close()
            assert service.proxy_header_failures["timeout"] == 1
            assert listener.handshake_timeouts == 1 and listener.upgrading == 0

    run(main())


def test_upgrades_behind_a_tcp_proxy_are_counted_under_their_clients_address(run):
    async def main():
        async with ws_behind_proxy(proxy_protocol=True, ws={"max_upgrades_per_address": 1}) as (
                service, listener, made):
            pair = [await raw_from(listener.port, PROXY_HOST) for _ in range(2)]
            for i, (_, writer) in enumerate(pair):
                writer.write(v2("203.0.113.7", 4000 + i))       # no request yet
            other = await raw_from(listener.port, PROXY_HOST)
            other[1].write(v2("203.0.113.8", 4002))
            # Whichever of the pair came second is one upgrade too many from 203.0.113.7.
            ends = {asyncio.ensure_future(closed_by_peer(r)): i for i, (r, _) in enumerate(pair)}
            done, pending = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            assert len(done) == 1 and listener.refused_upgrades == 1
            survivor = pair[1 - ends[done.pop()]]
            await upgrade(*survivor, listener.port)
            await upgrade(*other, listener.port)
            sessions = await made.wait_count(2)
            assert sorted(s.peername[0] for s in sessions) == ["203.0.113.7", "203.0.113.8"]
            for _, writer in pair + [other]:
                writer.close()

    run(main())


def test_an_untrusted_peers_proxy_header_is_a_bad_request(run):
    async def main():
        async with ws_behind_proxy(proxy_protocol=True) as (service, listener, made):
            reader, writer = await raw_from(listener.port, OTHER_HOST)
            writer.write(v1("203.0.113.7", 4711) + upgrade_request(listener.port))
            answer = await reader.read()            # to the end: the server closes
            assert answer.startswith(b"HTTP/1.1 400 ")
            writer.close()
            assert made.made == [] and not any(service.proxy_header_failures.values())

    run(main())
