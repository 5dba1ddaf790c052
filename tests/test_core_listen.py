"""Listening sockets: with uvloop's own transports on Linux a group of
SO_REUSEPORT sockets per address (libuv accepts one connection per listening
socket per loop iteration, so a storm of connections is accepted a group at
a time), on a port that stays the service's own; netcore's acceptor (the
default under uvloop) takes every pending connection from one socket; the
settings and their bounds."""
import asyncio
import socket
import sys

import pytest

from netcore import ServerService
from netcore.service import listen_socket_count, tcp_transport_kind
from netcore.websocket import WebSocketListener
from support import ServerSessions, packet

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT spreads connections on Linux only")


def listening_on(port: int) -> int:
    """Sockets in LISTEN on 127.0.0.1:port (/proc/net/tcp: any process's)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            ip, local_port = fields[1].split(":")
            if fields[3] == "0A" and ip == "0100007F" and int(local_port, 16) == port:
                n += 1
    return n


@pytest.mark.parametrize("transport", ["auto", "netcore", "loop"])
def test_the_group_listens_on_one_port_and_serves_every_client(run, loop_kind, transport):
    async def main():
        made = ServerSessions()
        async with ServerService(made, tcp_transport=transport) as server:
            chosen = "netcore" if transport == "auto" and loop_kind == "uvloop" else (
                "loop" if transport == "auto" else transport)
            assert server.tcp_transport == chosen
            want = 16 if loop_kind == "uvloop" and chosen == "loop" else 1
            assert server.listen_sockets == want
            assert listening_on(server.port) == want
            clients = [await asyncio.open_connection("127.0.0.1", server.port)
                       for _ in range(48)]
            for i, (_, w) in enumerate(clients):
                w.write(packet(1004, b"%d" % i))
            for i, (r, _) in enumerate(clients):
                assert await r.readexactly(4 + len(b"%d" % i)) == packet(1004, b"%d" % i)
            assert len(made.made) == 48
            for _, w in clients:
                w.close()
        assert listening_on(server.port) == 0
    run(main())


@pytest.mark.parametrize("transport, most", [("loop", 32), ("netcore", 2)])
def test_a_burst_of_connections_is_accepted_a_group_at_a_time(run, loop_kind, transport, most):
    """64 connections waiting in the kernel's backlogs: one listening socket
    takes a loop iteration for each with uvloop's transports, the group of 16
    a handful; netcore's acceptor takes them all at one readiness."""
    if loop_kind != "uvloop" and transport == "loop":
        pytest.skip("the selector loop accepts up to its backlog per readiness")

    async def main():
        loop = asyncio.get_running_loop()
        made = ServerSessions()
        async with ServerService(made, tcp_transport=transport) as server:
            clients = []
            for _ in range(64):     # connected in the kernel; the loop has not run yet
                c = socket.create_connection(("127.0.0.1", server.port))
                clients.append(c)
            iterations = 0

            def tick():             # once per loop iteration until all are accepted
                nonlocal iterations
                iterations += 1
                if len(made.made) < 64:
                    loop.call_soon(tick)
            loop.call_soon(tick)
            await made.wait_count(64)
            for c in clients:
                c.close()
        assert iterations <= most, f"64 connections took {iterations} loop iterations"
    run(main())


def test_a_port_in_use_is_refused_and_free_again_after_close(run):
    async def main():
        first = await ServerService(ServerSessions()).start()
        for listen_sockets in (1, 4, 0):
            with pytest.raises(OSError, match="address already in use"):
                await ServerService(ServerSessions(), port=first.port,
                                    listen_sockets=listen_sockets).start()
        port = first.port
        await first.close()
        again = await ServerService(ServerSessions(), port=port, listen_sockets=4).start()
        assert again.port == port and listening_on(port) == 4
        await again.close()
    run(main())


def test_workers_sharing_a_port_join_one_group(run):
    """reuse_port=True is the workers' shared port: no exclusivity check."""
    async def main():
        a = await ServerService(ServerSessions(), reuse_port=True, listen_sockets=3).start()
        b = await ServerService(ServerSessions(), port=a.port, reuse_port=True,
                                listen_sockets=2).start()
        assert listening_on(a.port) == 5
        await b.close()
        await a.close()
    run(main())


def test_the_websocket_listener_listens_with_a_group_too(run, loop_kind):
    async def main():
        service = await ServerService(ServerSessions()).start()
        listener = await WebSocketListener(service, "127.0.0.1", 0, listen_sockets=3).start()
        auto = await WebSocketListener(service, "127.0.0.1", 0).start()
        assert listening_on(listener.port) == listener.listen_sockets == 3
        assert listening_on(auto.port) == auto.listen_sockets == (
            16 if loop_kind == "uvloop" else 1)
        await service.close()
    run(main())


@pytest.mark.parametrize("bad", [-1, 65])
def test_listen_sockets_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="listen_sockets must be in 0..64"):
        ServerService(ServerSessions(), listen_sockets=bad)


def test_the_defaults_follow_the_loop(run, loop_kind):
    async def main():
        loop = asyncio.get_running_loop()
        assert listen_socket_count(0, loop) == (16 if loop_kind == "uvloop" else 1)
        assert listen_socket_count(0, loop, "netcore") == 1
        assert listen_socket_count(5, loop) == listen_socket_count(5, loop, "netcore") == 5
        assert tcp_transport_kind("auto", loop) == ("netcore" if loop_kind == "uvloop" else "loop")
        assert tcp_transport_kind("netcore", loop) == "netcore"
        assert tcp_transport_kind("loop", loop) == "loop"
    run(main())


@pytest.mark.parametrize("bad", ["uv", "", "NETCORE"])
def test_an_unknown_tcp_transport_is_refused(bad):
    with pytest.raises(ValueError, match="tcp_transport must be one of auto, netcore, loop"):
        ServerService(ServerSessions(), tcp_transport=bad)


def test_out_of_descriptors_a_shedding_pass_closes_one_batch_and_returns():
    # A pass (ListenSocket._shed_pending: what accept does on EMFILE) that
    # ran until the backlog was empty would hold the event loop for as long
    # as a connect flood kept refilling it. 300 pending: one pass sheds one
    # batch (128, service.pxd SHED_BATCH); the rest waits for the next.
    from netcore.service import ListenSocket
    server = ListenSocket(socket.AF_INET, socket.SOCK_STREAM)
    clients = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(1024)
        clients = [socket.create_connection(server.getsockname()) for _ in range(300)]
        server._shed_pending()
        server.setblocking(False)
        left = 0
        while True:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                break
            conn.close()
            left += 1
        assert left == 300 - 128
    finally:
        for c in clients:
            c.close()
        server.close()
