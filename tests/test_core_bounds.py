"""Transport bounds that know no game: connections per source address, TCP
keepalive on accepted sockets, the server-wide bound on unsent bytes."""
import asyncio
import ipaddress
import socket

import pytest

import netcore
from netcore import DisconnectReason, ServerService
from netcore.addresses import address_key, parse_networks
from netcore.session import flush_due
from support import Echo, FakeTransport, Recorder, ServerSessions, raw_client


async def dial(port, host="127.0.0.1"):
    """A Recorder connected from local address `host`."""
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(Recorder, "127.0.0.1", port, local_addr=(host, 0))
    return c


# -- connections per source address ------------------------------------------------

def test_connections_past_the_cap_of_one_address_are_refused_and_others_served(run):
    async def go():
        made = ServerSessions(Echo)
        async with ServerService(made, max_sessions_per_address=2,
                                 exempt_networks="") as server:
            a1, a2, a3 = [await dial(server.port) for _ in range(3)]
            b1 = await dial(server.port, "127.0.0.2")
            # The third from 127.0.0.1 is aborted at once; the server never serves it.
            await a3.wait_gone()
            for c in (a1, a2, b1):          # served: the server has them all by now
                c.send(netcore.make_packet(7, b"hi"))
                assert await c.wait_packets(1) == [(7, b"hi")]
            refused = [s for s in made.made if s.close_reason is not None]
            assert [s.close_reason.kind for s in refused] == [DisconnectReason.ADDRESS_FULL]
            assert refused[0].close_reason.detail == "2 sessions from 127.0.0.1"
            assert server.address_sessions == {"127.0.0.1": 2, "127.0.0.2": 1}
            assert server.rejected_by_address == 1 and len(server.sessions) == 3
            # A place freed is a place again.
            a1.disconnect()
            await a1.wait_gone()
            while server.address_sessions.get("127.0.0.1") != 1:
                await asyncio.sleep(0)      # the server's connection_lost runs
            a4 = await dial(server.port)
            a4.send(netcore.make_packet(7, b"again"))
            assert await a4.wait_packets(1) == [(7, b"again")]
            for c in (a2, b1, a4):
                c.disconnect()
                await c.wait_gone()
    run(go())


def test_exempt_networks_are_not_counted(run):
    async def go():
        # Loopback is exempt by default: tests, benchmarks, a proxy on the host.
        async with ServerService(ServerSessions(Echo), max_sessions_per_address=1) as server:
            clients = [await dial(server.port) for _ in range(5)]
            for c in clients:
                c.send(netcore.make_packet(7, b"x"))
                assert await c.wait_packets(1) == [(7, b"x")]
            assert server.address_sessions == {} and server.rejected_by_address == 0
            for c in clients:
                c.disconnect()
                await c.wait_gone()
    run(go())


@pytest.mark.parametrize("peer, exempt, key", [
    (("203.0.113.7", 5555), "", "203.0.113.7"),
    (("127.0.0.1", 1), "127.0.0.0/8,::1", None),
    (("127.0.0.2", 1), "127.0.0.0/8", None),
    (("::1", 1, 0, 0), "127.0.0.0/8,::1", None),
    (("::ffff:127.0.0.1", 1, 0, 0), "127.0.0.0/8", None),          # IPv4-mapped
    (("::ffff:203.0.113.7", 1, 0, 0), "", "203.0.113.7"),
    (("2001:db8:1:2:aaaa::1", 1, 0, 0), "", "2001:db8:1:2::/64"),   # one subscriber's /64
    (("2001:db8:1:2:bbbb::9", 1, 0, 0), "", "2001:db8:1:2::/64"),
    (("fe80::1%eth0", 1, 0, 2), "", "fe80::/64"),
    (None, "", None),
    (("not an address", 1), "", None),
    ("/tmp/unix.sock", "", None),
])
def test_the_address_key(peer, exempt, key):
    assert address_key(peer, parse_networks(exempt)) == key


def test_bad_exempt_networks_are_refused_by_name():
    assert parse_networks(" 10.0.0.0/8 , ,::1") == (ipaddress.ip_network("10.0.0.0/8"),
                                                     ipaddress.ip_network("::1"))
    with pytest.raises(ValueError, match="'10.0.0/33' is not an IP address or network"):
        parse_networks("10.0.0/33")
    with pytest.raises(ValueError, match="max_sessions_per_address must be >= 0"):
        ServerService(Echo, max_sessions_per_address=-1)


# -- TCP keepalive -------------------------------------------------------------------------

def keepalive_of(session):
    sock = session.transport.get_extra_info("socket")
    opts = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)]
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"):
        if hasattr(socket, name):
            opts.append(sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)))
    return opts


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
@pytest.mark.parametrize("idle, interval, want", [(30, 5, [1, 30, 5, 3]), (0, 10, None)])
def test_accepted_sockets_get_keepalive_probes(run, idle, interval, want):
    async def go():
        made = ServerSessions(Echo)
        async with ServerService(made, keepalive_idle=idle, keepalive_interval=interval) as server:
            # Linux: set once on the listener, inherited by every accepted socket.
            assert server.keepalive_inherited is bool(idle)
            c = await dial(server.port)
            (s,) = await made.wait_count(1)
            got = keepalive_of(s)
            c.disconnect()
            await c.wait_gone()
            return got

    got = run(go())
    if want is None:
        assert got[0] == 0          # off: the kernel's default, no keepalive
    else:
        assert got == want


@pytest.mark.parametrize("kwargs, message", [
    ({"keepalive_idle": 0.5}, "keepalive_idle must be a number of seconds in 1..32767 \\(or 0: off\\)"),
    ({"keepalive_idle": float("nan")}, "keepalive_idle"),
    ({"keepalive_idle": 40000}, "keepalive_idle must be a number of seconds in 1..32767"),
    ({"keepalive_idle": 60, "keepalive_interval": 0}, "keepalive_interval must be"),
])
def test_bad_keepalive_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServerService(Echo, **kwargs)


# -- the server-wide bound on unsent bytes --------------------------------------------------

def data(n):
    return netcore.make_packet(9, b"x" * (n - 4))          # n bytes on the wire


def test_past_the_total_bound_the_largest_queues_are_cut_first(run):
    async def go():
        service = ServerService(Recorder, max_pending_bytes_total=10_000,
                                max_pending_bytes=1 << 20)
        sessions = []
        for _ in range(4):
            s = service._accept()
            s.connection_made(FakeTransport())
            s.pause_writing()               # a client that does not read: all stays queued
            sessions.append(s)
        a, b, c, d = sessions
        a.send(data(4000))
        b.send(data(3000))
        c.send(data(2000))
        d.send(data(500))
        assert service.pending_bytes == 9500 and service.shed_sessions == 0
        c.send(data(1000))                  # 10,500 > 10,000: cut the largest, down to 7,500
        assert a.close_reason.kind is DisconnectReason.SLOW_CONSUMER
        assert a.close_reason.detail == ("4000 bytes pending, among the largest while all "
                                         "sessions held 10500 > 10000")
        assert [s.close_reason for s in (b, c, d)] == [None] * 3
        assert service.pending_bytes == 6500 and service.shed_sessions == 1
        # Under the bound again: nobody else is cut, and every byte is accounted.
        d.send(data(3000))
        assert service.pending_bytes == 9500 and service.shed_sessions == 1
        b.resume_writing()                  # b reads again: its queue leaves
        await asyncio.sleep(0)             # the flusher runs once per loop iteration
        assert service.pending_bytes == 6500 and b.transport.written
        c.disconnect(abort=True)
        assert service.pending_bytes == 3500
        for s in sessions:
            s.connection_lost(None)
        assert service.pending_bytes == 0
        assert service.sessions == {}

    run(go())


def test_without_a_total_bound_nobody_is_cut(run):
    async def go():
        service = ServerService(Recorder, max_pending_bytes=1 << 20)
        s = service._accept()
        s.connection_made(FakeTransport())
        s.pause_writing()
        for _ in range(200):
            s.send(data(4000))
        assert service.pending_bytes == 800_000 and s.close_reason is None
        s.connection_lost(None)
        assert service.pending_bytes == 0

    run(go())


class BrokenTransport(FakeTransport):
    """A transport whose write raises, as uvloop's does once it has closed a
    transport itself (every later call on it is refused)."""

    def write(self, data):
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


@pytest.mark.parametrize("ending", ["flush", "graceful close"])
def test_bytes_a_failed_write_took_leave_the_total_and_nobody_else_is_cut(run, ending):
    # The queue is emptied into one bytes object, then the write raises: the
    # bytes are gone either way, and must leave the server-wide total too.
    # Counted there still, they would cut off a session that holds nothing
    # near the bound.
    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made, max_pending_bytes_total=10_000) as server:
            reader, writer = await raw_client(server.port)
            (innocent,) = await made.wait_count(1)
            broken = server._accept()
            broken.connection_made(BrokenTransport())     # of the same service and flusher
            broken.send(data(6000))
            assert server.pending_bytes == 6000
            if ending == "flush":
                flush_due()                               # the flusher's run: the write raises
                assert broken.close_reason.kind is DisconnectReason.CONNECTION_ERROR
                assert "write failed" in broken.close_reason.detail
            else:
                broken.disconnect()                       # its final flush raises
                assert broken.close_reason.kind is DisconnectReason.CLOSED
            assert server.pending_bytes == 0
            innocent.send(data(5000))                     # far from the bound by itself
            assert innocent.close_reason is None and server.shed_sessions == 0
            assert await reader.readexactly(5000) == bytes(data(5000))
            broken.connection_lost(None)
            writer.close()
    run(go())
