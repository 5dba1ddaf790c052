"""Behind a trusted proxy (--trusted-proxies 127.0.0.2), against a real
server while twenty bystanders chat: the per-address limits count the
clients the proxy names, and what a proxy or anyone else can send in place
of a PROXY header closes only that connection.

The proxy is on loopback, which is exempt from per-address limits (the
default), as a local TLS terminator or load balancer is: before
--trusted-proxies, 1,000 named logins through it from one client took every
login slot and a returning player's login was refused at once.
"""
import asyncio
import re
import time

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from arena import eventually
from game_support import leave
from proxy_support import OTHER_HOST, PROXY_HOST, raw_from, v1, v2, via_proxy
from support import closed_by_peer, packet

SERVER_ARGS = ("--trusted-proxies", PROXY_HOST, "--proxy-header-timeout", "1")
C_LOGIN = PACKET_IDS["C_LOGIN"]
FLOOD = 1000
CONCURRENCY = 100
RETURNING_WITHIN_S = 1.0
FLOOD_CLIENT = "203.0.113.66"


async def login_flood(port: int, tag: str, progress: list) -> None:
    """FLOOD connections through the proxy, each naming FLOOD_CLIENT: the
    header, one C_LOGIN with a fresh account name, close without reading."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i):
        async with sem:
            _, writer = await raw_from(port, PROXY_HOST)
            writer.write(v1(FLOOD_CLIENT, 20000 + i) + packet(C_LOGIN, pb.C_LOGIN(
                account=f"{tag}{i}", password="pw").SerializeToString()))
            writer.close()
            await writer.wait_closed()
            progress[0] += 1

    await asyncio.gather(*[one(i) for i in range(FLOOD)])


async def timed_login(port: int, client: str, account: str) -> float:
    c = await via_proxy(port, v2(client, 4711))
    started = time.monotonic()
    reply = await c.login(account, "secret")
    took = time.monotonic() - started
    assert reply.success, f"{account} from {client} refused after {took:.2f} s"
    await leave(c)
    return took


def test_a_login_flood_through_the_proxy_locks_nobody_else_out(arena, case):
    tag = f"proxied{case.number}-"
    returning = f"behind{case.number}"

    async def go():
        port = arena.server.port
        await timed_login(port, "198.51.100.20", returning)       # the account exists
        await asyncio.gather(*[timed_login(port, f"198.51.100.{30 + i}",
                                           f"warm{case.number}-{i}") for i in range(8)])
        case.rebaseline_rss()
        alone = await timed_login(port, "198.51.100.20", returning)
        progress = [0]
        flood = asyncio.ensure_future(login_flood(port, tag, progress))
        waits = []
        for share in (0.2, 0.5, 0.8):                           # while the flood runs
            await eventually(lambda: progress[0] >= share * FLOOD or flood.done(), 60,
                             f"{share:.0%} of the flood")
            waits.append(await timed_login(port, "198.51.100.20", returning))
        await flood
        await case.finish()
        return alone, waits

    alone, waits = case.run(go(), timeout=120)
    bound = max(RETURNING_WITHIN_S, 4 * alone)      # see test_logins.py
    assert max(waits) < bound, f"returning player waited {waits} s (alone: {alone:.3f} s)"
    log = case.log_text
    assert f"named logins in flight from {FLOOD_CLIENT} (max 8)" in log
    assert "named logins in flight (max 64)" not in log     # never the server's bound
    assert f"connected from {FLOOD_CLIENT}:" in log and "connected from 127.0.0.2:" not in log


HOSTILE = 40


def test_headers_that_are_not_honoured_close_only_their_connection(arena, case):
    async def go():
        port = arena.server.port
        closed = []

        async def send(host, data, close=True):
            reader, writer = await raw_from(port, host)
            writer.write(data)
            if close:
                closed.append(await closed_by_peer(reader))
            return writer

        for i in range(HOSTILE):
            # Anyone else's PROXY header is bytes to the game: a protocol error.
            await send(OTHER_HOST, v1(f"198.51.100.{i}", 1000 + i))
            # The proxy's connections: no header, a malformed one, an oversized one.
            await send(PROXY_HOST, packet(C_LOGIN, b""))
            await send(PROXY_HOST, f"PROXY TCP4 198.51.100.{i} 192.0.2.1 0{i} 7777\r\n".encode())
            await send(PROXY_HOST, v2(f"198.51.100.{i}", 1, length=60000))
        slow = [await send(PROXY_HOST, v2("198.51.100.1", 1)[:14], close=False)
                for _ in range(10)]
        # Nothing more comes: each is closed at --proxy-header-timeout (1 s).
        await eventually(lambda: case.log().count("no complete PROXY header within 1 s") == 10,
                         15, "the slow headers' deadline")
        for writer in slow:
            writer.close()
        await case.finish()
        return closed

    closed = case.run(go(), timeout=120)
    assert closed == [True] * (4 * HOSTILE)
    log = case.log_text
    assert len(re.findall(r"session \d+ from 127\.0\.0\.3:\d+ disconnected: protocol error",
                          log)) == HOSTILE
    proxy = re.escape(PROXY_HOST)
    for what in ("no PROXY header: the connection begins with", "source port is not 0..65535",
                 "(at most 4096)"):
        lines = re.findall(rf"WARNING netcore\.service: connection from proxy {proxy}:\d+ "
                           rf"closed: .*{re.escape(what)}", log)
        assert len(lines) == HOSTILE, (what, len(lines))
