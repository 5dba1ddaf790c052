"""netcore's own TCP transport (netcore.tcp), on both loops: what a session
sees of it (backpressure, half-close, resets, addresses, options inherited
from the listener), and when its descriptor is closed."""
import asyncio
import contextlib
import os
import socket
import struct
import sys

import pytest

from netcore import DisconnectReason, ServerService, make_packet
from netcore.service import ListenSocket
from netcore.tcp import TcpAcceptor, TcpPoller, TcpTransport
from support import (
    Echo, Recorder, ServerSessions, closed_by_peer, packet, raw_client, stingy_connection,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="netcore's TCP path is Linux's")


def service(factory, **kw):
    return ServerService(factory, tcp_transport="netcore", **kw)


@contextlib.asynccontextmanager
async def one_connection(made=None, **kw):
    """A service on netcore's path, one raw client: (its server session,
    the client's reader and writer); the client is closed on the way out."""
    made = ServerSessions() if made is None else made
    async with service(made, **kw) as server:
        reader, writer = await raw_client(server.port)
        (s,) = await made.wait_count(1)
        try:
            yield s, reader, writer
        finally:
            writer.close()


class Flood(Recorder):
    """Sends `count` packets of `size` bytes once connected, numbered."""

    count, size = 200, 60_000

    def __init__(self):
        super().__init__()
        self.pauses = self.resumes = 0

    def pause_writing(self):
        self.pauses += 1
        super().pause_writing()
        self._changed.set()

    def resume_writing(self):
        self.resumes += 1
        super().resume_writing()
        self._changed.set()

    def on_connected(self):
        super().on_connected()
        body = b"x" * (self.size - 8)
        for i in range(self.count):
            self.send(make_packet(7, struct.pack("<I", i) + body))


def test_a_reader_that_stalls_pauses_writing_then_gets_every_byte_in_order(run):
    async def main():
        async with one_connection(ServerSessions(Flood), max_pending_bytes=64 << 20) as (
                s, reader, writer):
            assert type(s.transport) is TcpTransport
            # 12 MB against the socket buffers: the transport holds the rest
            # and tells the session to stop flushing.
            await s.until(lambda: s.pauses or s.reason is not None)
            assert s.transport.get_write_buffer_size() > 0 and s.resumes == 0
            for i in range(Flood.count):
                header = await reader.readexactly(4)
                size, pkt_id = struct.unpack("<HH", header)
                body = await reader.readexactly(size - 4)
                assert (size, pkt_id, struct.unpack("<I", body[:4])[0]) == (Flood.size, 7, i)
            await s.until(lambda: s.resumes == s.pauses)
            assert s.transport.get_write_buffer_size() == 0 and s.reason is None
            writer.close()
            assert (await s.wait_gone()).kind is DisconnectReason.PEER_CLOSED
    run(main())


def test_a_peer_that_half_closes_still_gets_its_answers(run):
    async def main():
        made = ServerSessions()
        async with service(made) as server:
            reader, writer = await raw_client(server.port)
            writer.write(packet(1004, b"one") + packet(1004, b"two"))
            writer.write_eof()
            got = await reader.readexactly(2 * len(packet(1004, b"one")))
            assert got == packet(1004, b"one") + packet(1004, b"two")
            assert await closed_by_peer(reader)
            (s,) = made.made
            assert (await s.wait_gone()).kind is DisconnectReason.PEER_CLOSED
            writer.close()
    run(main())


def test_a_reset_ends_the_session_as_a_connection_error(run):
    async def main():
        made = ServerSessions()
        async with service(made) as server:
            c = socket.create_connection(("127.0.0.1", server.port))
            (s,) = await made.wait_count(1)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()                   # an RST, not a FIN
            reason = await s.wait_gone()
            assert reason.kind is DisconnectReason.CONNECTION_ERROR
            assert "reset" in reason.detail.lower()
    run(main())


def test_addresses_and_the_listeners_options_are_the_connections(run):
    async def main():
        made = ServerSessions()
        async with service(made, keepalive_idle=30, keepalive_interval=5) as server:
            c = socket.create_connection(("127.0.0.1", server.port))
            (s,) = await made.wait_count(1)
            t = s.transport
            assert t.get_extra_info("peername") == c.getsockname() == s.peername
            assert t.get_extra_info("sockname") == c.getpeername()
            sock = t.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert t.get_extra_info("sslcontext") is None
            assert t.get_extra_info("nothing", "default") == "default"
            c.close()
            await s.wait_gone()
            assert sock.fileno() == -1      # its duplicate closed with the connection
    run(main())


def test_an_ipv6_peer_has_the_socket_modules_four_tuple(run):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def main():
        made = ServerSessions()
        try:
            server = await service(made, host="::1").start()
        except OSError:
            pytest.skip("no IPv6 loopback here")
        try:
            c = socket.create_connection(("::1", server.port))
            (s,) = await made.wait_count(1)
            assert s.peername == c.getsockname()[:2] + (0, 0)
            c.close()
            await s.wait_gone()
        finally:
            await server.close()
    run(main())


def test_the_descriptor_stays_the_sessions_until_connection_lost_has_run(run):
    """A session may write to its descriptor until it is told the connection
    is lost: the number must not name another connection before then."""
    seen = {}

    class Watch(Echo):
        def on_disconnected(self, reason):
            super().on_disconnected(reason)
            seen["open in on_disconnected"] = _is_open(self.transport_fd)

        def on_connected(self):
            super().on_connected()
            self.transport_fd = self.transport.fd

    async def main():
        made = ServerSessions(Watch)
        async with service(made) as server:
            reader, writer = await raw_client(server.port)
            (s,) = await made.wait_count(1)
            s.disconnect()
            assert await closed_by_peer(reader)
            await s.wait_gone()     # resumed a loop turn after on_disconnected: closed by now
            seen["open after"] = _is_open(s.transport_fd)
            writer.close()
    run(main())
    assert seen == {"open in on_disconnected": True, "open after": False}


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_a_connection_the_factory_cannot_serve_is_closed_and_the_next_is_served(run, caplog):
    async def main():
        made = ServerSessions()
        calls = []

        def factory():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("no session for you")
            return made()

        async with service(factory) as server:
            first_r, first_w = await raw_client(server.port)
            assert await closed_by_peer(first_r)
            reader, writer = await raw_client(server.port)
            writer.write(packet(1004, b"hi"))
            assert await reader.readexactly(len(packet(1004, b"hi"))) == packet(1004, b"hi")
            for w in (first_w, writer):
                w.close()
    run(main())
    assert "a new connection could not be set up" in caplog.text
    assert "no session for you" in caplog.text


def test_write_after_write_eof_is_refused_and_after_close_dropped(run):
    async def main():
        made = ServerSessions()
        async with service(made) as server:
            reader, writer = await raw_client(server.port)
            other_reader, other_writer = await raw_client(server.port)
            s, other = await made.wait_count(2)
            t = s.transport
            t.write(packet(1004, b"before"))
            t.write_eof()
            with pytest.raises(RuntimeError, match="write_eof"):
                t.write(b"after")
            assert await reader.readexactly(len(packet(1004, b"before"))) == packet(1004, b"before")
            assert await reader.read() == b""   # the FIN
            other.transport.close()
            other.transport.write(b"dropped")   # closing: nothing sent, nothing raised
            assert other.transport.is_closing()
            assert await other_reader.read() == b""
            for w in (writer, other_writer):
                w.close()
            await s.wait_gone()
            await other.wait_gone()
    run(main())


def test_write_buffer_limits_follow_asyncio(run):
    async def main():
        async with one_connection() as (s, reader, writer):
            t = s.transport
            t.set_write_buffer_limits(high=1000)
            assert t.get_write_buffer_limits() == (250, 1000)
            t.set_write_buffer_limits(low=100)
            assert t.get_write_buffer_limits() == (100, 400)
            with pytest.raises(ValueError):
                t.set_write_buffer_limits(high=10, low=20)
            writer.close()
            await s.wait_gone()
    run(main())


def test_one_readiness_reads_every_connection_even_past_a_batch(run):
    """A loop iteration that fans out to thousands takes long; what arrived
    meanwhile must all be read at the next one, or reads fall behind for
    good. With 4 events per epoll_wait, 20 connections that each sent a
    packet are all read in one loop iteration (full batches are repeated)."""
    async def main():
        loop = asyncio.get_running_loop()
        poller = TcpPoller(loop, batch=4)
        made = ServerSessions(Recorder)
        sock = ListenSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        acceptor = TcpAcceptor(loop, poller, sock, made, 64)
        clients = [socket.create_connection(sock.getsockname()) for _ in range(20)]
        sessions = await made.wait_count(20)
        for c in clients:           # all in the kernel before the loop runs again
            c.sendall(packet(1004, b"x"))
        iterations = 0

        def tick():
            nonlocal iterations
            iterations += 1
            if not all(s.packets for s in sessions):
                loop.call_soon(tick)
        loop.call_soon(tick)
        await asyncio.wait_for(asyncio.gather(*(s.wait_packets(1) for s in sessions)), 10)
        assert iterations <= 2, f"20 reads took {iterations} loop iterations"
        for c in clients:
            c.close()
        for s in sessions:
            await s.wait_gone()
        acceptor.close()
        poller.close()
    run(main())


class PausedAtStart(Echo):
    def on_connected(self):
        super().on_connected()
        self.pause_reading()        # as a game might while it loads the account


def test_a_pause_in_on_connected_holds_until_resumed(run):
    async def main():
        made = ServerSessions(PausedAtStart)
        async with service(made) as server:
            paused_r, paused_w = await raw_client(server.port)
            (paused,) = await made.wait_count(1)
            paused_w.write(packet(1004, b"wait"))
            await paused_w.drain()
            # The fence: a packet sent after that one, on another connection,
            # read and answered: the first would have been read by then.
            made.cls = Echo
            fence_r, fence_w = await raw_client(server.port)
            fence_w.write(packet(1004, b"fence"))
            assert await fence_r.readexactly(len(packet(1004, b"fence"))) == packet(1004, b"fence")
            assert paused.packets == [] and not paused.transport.is_reading()
            paused.resume_reading()
            assert await paused.wait_packets(1) == [(1004, b"wait")]
            for w in (paused_w, fence_w):
                w.close()
    run(main())


def test_a_connection_whose_session_fails_to_start_ends_with_the_error(run, caplog):
    class Broken(Recorder):
        def on_connected(self):
            raise RuntimeError("bug in on_connected")

    async def main():
        made = ServerSessions(Broken)
        async with service(made) as server:
            reader, writer = await raw_client(server.port)
            (s,) = await made.wait_made(1)
            reason = await s.wait_gone()
            assert reason.kind is DisconnectReason.CONNECTION_ERROR
            assert reason.detail == "bug in on_connected"
            assert await closed_by_peer(reader)
            writer.close()
    run(main())
    assert "a new connection could not be set up" in caplog.text


def test_what_is_written_after_a_close_still_follows_the_buffered_bytes(run):
    async def main():
        async with one_connection() as (s, reader, writer):
            t = s.transport
            body = b"x" * 4_000_000         # more than the socket takes at once
            t.write(body)
            assert t.get_write_buffer_size() > 0
            t.close()
            t.write(b"TAIL")                # buffered bytes remain: it follows them
            got = await reader.read()       # to the FIN
            assert len(got) == len(body) + 4 and got.endswith(b"TAIL")
            await s.wait_gone()
            writer.close()
    run(main())


def test_the_transports_socket_cannot_be_made_blocking_and_it_is_not_made_by_hand(run):
    with pytest.raises(TypeError, match="made by TcpAcceptor"):
        TcpTransport()

    async def main():
        async with one_connection() as (s, reader, writer):
            sock = s.transport.get_extra_info("socket")
            with pytest.raises(ValueError, match="cannot be blocking"):
                sock.setblocking(True)
            writer.close()
            await s.wait_gone()
    run(main())


# -- every graceful close has a deadline ------------------------------------------------

LINGER_S = 3.0              # session.pxd: LINGER_MS


class Unread(Recorder):
    """Queues `size` bytes for its peer once connected; `paused` once its
    transport holds some of them (past the high-water mark)."""

    size = 900_000          # under max_pending_bytes (1 MiB): nobody is a slow consumer

    def __init__(self):
        super().__init__()
        self.paused = False

    def pause_writing(self):
        super().pause_writing()
        self.paused = True
        self._changed.set()

    def on_connected(self):
        super().on_connected()
        body = b"u" * 59_996
        for _ in range(self.size // 60_000):
            self.send(make_packet(7, body))


@pytest.mark.parametrize("transport", ["netcore", "loop"])
def test_a_peer_that_half_closes_and_reads_nothing_is_cut_off_after_the_linger(run, transport):
    # Its FIN comes while the transport still holds output for it; it never
    # reads. The close that follows its FIN waits for a drain that never
    # comes: without a deadline the session, its buffers and (in a game) its
    # room place are held for ever.
    async def main():
        made = ServerSessions(Unread)
        async with ServerService(made, tcp_transport=transport) as server:
            sock = await stingy_connection(server.port)
            (s,) = await made.wait_count(1)
            await s.until(lambda: s.paused)         # the kernels are full, the transport holds
            loop = asyncio.get_running_loop()
            sock.shutdown(socket.SHUT_WR)
            began = loop.time()
            reason = await s.wait_gone(timeout=LINGER_S + 7)
            assert reason.kind is DisconnectReason.PEER_CLOSED
            assert loop.time() - began >= LINGER_S - 0.5         # it had its linger
            assert server.sessions == {} and server.pending_bytes == 0
            sock.close()
    run(main())
