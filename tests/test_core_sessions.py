"""Sessions and services end to end: echo, limits, errors in handlers, shutdown."""
import asyncio
import gc

import pytest

import netcore
from netcore import (
    ClientService, DisconnectReason, MalformedPacketError, ServerService, Session,
)
from netcore.loop import uvloop_available
from support import (
    Echo, FakeTransport, Recorder, ServerSessions, closed_by_peer,
    collector_as_the_server_runs_it, packet, raw_client,
)


def test_echo_through_200_sessions_accounts_for_every_packet(run):
    async def go():
        made = ServerSessions(Echo)
        async with ServerService(made) as server:
            clients = ClientService(Recorder, port=server.port, count=200)
            sessions = await clients.start()
            assert len(sessions) == 200
            for n, s in enumerate(sessions):
                for seq in range(50):
                    s.send(netcore.make_packet(1004, b"%d:%d" % (n, seq)))
            for n, s in enumerate(sessions):
                got = await s.wait_packets(50)
                assert got == [(1004, b"%d:%d" % (n, seq)) for seq in range(50)]
            await clients.close()
            for e in made.made:
                await e.wait_gone()
            assert sum(len(e.packets) for e in made.made) == 200 * 50
            assert len(server.sessions) == 0
            assert {e.reason.kind for e in made.made} == {DisconnectReason.PEER_CLOSED}
    run(go(), timeout=60)


class Raises(Recorder):
    def on_recv_packet(self, pkt_id, payload):
        super().on_recv_packet(pkt_id, payload)
        if pkt_id == 1:
            raise MalformedPacketError(pkt_id, "bad varint")
        if pkt_id == 2:
            raise KeyError("bug in a handler")


@pytest.mark.parametrize("pkt_id, kind, detail", [
    (1, DisconnectReason.PROTOCOL_ERROR, "malformed payload for packet id 1: bad varint"),
    (2, DisconnectReason.HANDLER_ERROR, "packet 2: KeyError('bug in a handler')"),
])
def test_an_exception_in_a_handler_closes_only_its_session(run, caplog, pkt_id, kind, detail):
    async def go():
        made = ServerSessions(Raises)
        async with ServerService(made) as server:
            victim, bystander = await ClientService(Recorder, port=server.port, count=2).start()
            victim.send(netcore.make_packet(pkt_id, b""))
            victim.send(netcore.make_packet(3, b"never handled"))
            bystander.send(netcore.make_packet(3, b"fine"))
            sessions = await made.wait_count(2)
            offender = next(s for s in sessions if s.peername == victim.transport.get_extra_info("sockname"))
            other = next(s for s in sessions if s is not offender)
            reason = await offender.wait_gone()
            assert (reason.kind, reason.detail) == (kind, detail)
            assert offender.packets == [(pkt_id, b"")]
            assert await other.wait_packets(1) == [(3, b"fine")]
            await victim.wait_gone()
            assert other.reason is None
    run(go())
    assert f"disconnected: {kind.value}" in caplog.text


def test_max_sessions_refuses_the_extra_connection_and_keeps_serving(run):
    async def go():
        made = ServerSessions(Echo)
        async with ServerService(made, max_sessions=2) as server:
            a, b = await ClientService(Recorder, port=server.port, count=2).start()
            await made.wait_count(2)
            reader, writer = await raw_client(server.port)
            assert await closed_by_peer(reader)            # closed at once
            third = made.made[2]        # made before the close we have just read
            assert (await third.wait_gone()).kind is DisconnectReason.SERVER_FULL
            assert server.rejected == 1
            a.send(netcore.make_packet(1004, b"ok"))
            assert await a.wait_packets(1) == [(1004, b"ok")]
            writer.close()
    run(go())


def test_a_connection_refused_as_server_full_is_aborted_at_once(run):
    # Nothing was sent to it: a graceful close would only linger 3 s with a
    # descriptor that no session count sees.
    async def go():
        server = ServerService(Recorder, max_sessions=1)
        first = server._accept()
        first.connection_made(FakeTransport())
        extra = server._accept()
        t = FakeTransport()
        extra.connection_made(t)
        assert t.aborted and not t.eof_written
        assert extra.close_reason.kind is DisconnectReason.SERVER_FULL
        assert extra.close_reason.detail == "1 sessions"
        assert len(server) == 1 and server.rejected == 1
    run(go())


def test_close_delivers_what_is_queued_then_ends_every_session(run):
    async def go():
        made = ServerSessions(Recorder)
        server = await ServerService(made).start()
        sessions = await ClientService(Recorder, port=server.port, count=10).start()
        peers = await made.wait_count(10)
        for p in peers:
            for i in range(100):
                p.send(netcore.make_packet(1005, b"%d" % i))
        await server.close()                 # queued packets go out before the close
        for s in sessions:
            assert [p for _, p in await s.wait_packets(100)] == [b"%d" % i for i in range(100)]
            assert (await s.wait_gone()).kind is DisconnectReason.PEER_CLOSED
        assert {p.reason.kind for p in peers} == {DisconnectReason.SHUTDOWN}
        assert not server.listening
        with pytest.raises(OSError):
            await raw_client(server.port)
    run(go())


def test_close_returns_once_every_session_is_gone_even_a_straggler(run):
    # A peer that neither reads nor closes outlasts the close timeout; it is
    # aborted, and close() still returns only once its session has ended, so
    # nothing of it (a game's leave) runs after the caller moved on.
    async def go():
        made = ServerSessions(Recorder)
        server = await ServerService(made).start()
        _, writer = await raw_client(server.port)
        (peer,) = await made.wait_count(1)
        await server.close(timeout=0.05)
        assert peer.reason is not None and len(server.sessions) == 0
        assert (peer.reason.kind, peer.reason.detail) == (DisconnectReason.SHUTDOWN,
                                                          "close timed out")
        writer.close()
    run(go())


def test_half_close_still_delivers_what_was_sent_before_it(run):
    async def go():
        made = ServerSessions(Echo)
        async with ServerService(made) as server:
            reader, writer = await raw_client(server.port)
            writer.write(packet(1004, b"last words"))
            writer.write_eof()
            assert await reader.read() == packet(1004, b"last words")
            (echo,) = await made.wait_count(1)
            assert (await echo.wait_gone()).kind is DisconnectReason.PEER_CLOSED
            writer.close()
    run(go())


class LineSession(Session):
    """A raw Session: consumes only whole newline-terminated lines."""

    def __init__(self):
        self.lines = []
        self.got = asyncio.Event()
        self.up = asyncio.Event()

    def on_connected(self):
        self.up.set()

    def on_recv(self, data):
        end = data.rfind(b"\n") + 1
        self.lines += data[:end].splitlines()
        if self.lines:
            self.got.set()
        return end


def test_a_raw_session_sees_unconsumed_bytes_again(run):
    async def go():
        made = ServerSessions(LineSession)
        async with ServerService(made) as server:
            _, writer = await raw_client(server.port)
            writer.write(b"hel")
            await writer.drain()
            writer.write(b"lo\nwor")
            await writer.drain()
            writer.write(b"ld\n")
            (s,) = await made.wait_count(1)
            while len(s.lines) < 2:
                s.got.clear()
                await asyncio.wait_for(s.got.wait(), 10)
            assert s.lines == [b"hello", b"world"]
            writer.close()
    run(go())


def test_the_loop_choice_is_validated(monkeypatch):
    monkeypatch.setenv("NETCORE_LOOP", "asyncio")
    assert netcore.resolve_loop_kind() == "asyncio"
    if uvloop_available():
        assert netcore.resolve_loop_kind("uvloop") == "uvloop"
    else:                                       # Windows: a clear error, not an ImportError
        with pytest.raises(RuntimeError, match="uvloop was asked for but is not installed"):
            netcore.resolve_loop_kind("uvloop")
    with pytest.raises(ValueError, match="unknown event loop"):
        netcore.resolve_loop_kind("tokio")
    monkeypatch.delenv("NETCORE_LOOP")
    assert netcore.resolve_loop_kind() == ("uvloop" if uvloop_available() else "asyncio")


def test_services_and_sessions_are_freed_by_their_reference_count(run):
    # With the collector off, as good as a server's rare collections: backlogs
    # drained a packet per read, timeouts swept, closes lingered, clients
    # dialled by a ClientService; once over, every object of theirs is freed
    # by its reference count.
    async def serve_once():
        made = ServerSessions(Echo)
        async with ServerService(made, max_packets_per_read=1, login_timeout=60) as server:
            clients = ClientService(Recorder, port=server.port, count=20, idle_timeout=60)
            for c in await clients.start():
                c.transport.write(packet(1004, b"a") + packet(1004, b"b") + packet(1004, b"c"))
            for c in list(clients.sessions.values()):
                await c.wait_packets(3)
            await clients.close()
            for e in made.made:
                await e.wait_gone()
        made.made.clear()       # the test's own record of the sessions it served

    def alive():
        kinds = (Session, ServerService, ClientService, netcore.JobQueue)
        return [type(o).__name__ for o in gc.get_objects()
                if isinstance(o, kinds) or type(o).__name__.endswith("Transport")]

    with collector_as_the_server_runs_it():
        run(serve_once())
        assert alive() == []
