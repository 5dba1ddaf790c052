"""The WebSocket transport (netcore.websocket): the same packets, sessions and
limits as TCP, in binary messages. Peers: the `websockets` library (an
independent implementation) and a raw RFC 6455 client (ws_support.py)."""
import asyncio
import logging
import socket
import struct
import sys

import pytest
import websockets

import netcore
from netcore import ClientService, DisconnectReason, PacketSession, make_packet
from netcore.origins import OriginPolicy
from netcore.websocket import WebSocketListener, close_reason_bytes

from support import (
    Echo, Recorder, ServerSessions, closed_by_peer, packet, raw_client, stingy_connection,
)
from ws_support import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, frame, http_get, raw_ws, read_close,
    read_frame, upgrade, ws_service,
)


# A client that makes the server's kernel hold little of what it is sent
# (support.stingy_socket): the figures below are Linux's.
LINUX_BUFFERS = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                   reason="socket buffer sizes as Linux has them")


def url(listener):
    return f"ws://127.0.0.1:{listener.port}/ws"


async def closed_with(conn):
    """(code, reason) of the server's close frame as a websockets client saw it."""
    try:
        while True:
            await asyncio.wait_for(conn.recv(), 10)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None, f"no close frame from the server: {exc}"
        return exc.rcvd.code, exc.rcvd.reason


# -- packets both ways ------------------------------------------------------------------

def test_packets_round_trip_and_each_flush_is_one_binary_message(run):
    async def go():
        made = ServerSessions()
        service, listener = await ws_service(made)
        async with websockets.connect(url(listener)) as conn:
            # Three packets in one message, each echoed: the three answers are
            # queued in one loop iteration and leave as ONE message.
            await conn.send(packet(1, b"a") + packet(2, b"bb") + packet(3, b""))
            assert await asyncio.wait_for(conn.recv(), 10) == (
                packet(1, b"a") + packet(2, b"bb") + packet(3, b""))
            (s,) = await made.wait_count(1)
            assert s.transport_kind == "ws"
            assert s.packets == [(1, b"a"), (2, b"bb"), (3, b"")]
            assert s.writes == 1 and s.packets_sent == 3
            assert s.direct_writes == 0     # never raw packets on a WebSocket's socket
            assert service.sessions[s.session_id] is s
            assert s.peername[0] == "127.0.0.1"
        await s.wait_gone()
        assert s.reason.kind is DisconnectReason.PEER_CLOSED
        assert s.reason.detail == "close 1000"
        await service.close()
    run(go())


def test_a_client_service_speaks_websocket(run):
    async def go():
        service, listener = await ws_service(Echo)
        client = ClientService(Recorder, "127.0.0.1", listener.port, count=3, transport="ws")
        sessions = await client.start()
        assert len(sessions) == 3 and client.failures == []
        for i, s in enumerate(sessions):
            assert s.transport_kind == "ws"
            s.send(make_packet(1000 + i, b"x" * (100 * i)))
            assert await s.wait_packets(1) == [(1000 + i, b"x" * (100 * i))]
        await client.close()
        assert [s.reason.kind for s in sessions] == [DisconnectReason.CLOSED] * 3
        await service.close()
    run(go())


def test_a_client_service_records_a_refused_upgrade(run):
    async def go():
        service, listener = await ws_service(Echo)
        listener.stop_accepting()
        await listener.wait_closed()
        client = ClientService(Recorder, "127.0.0.1", listener.port, count=1, transport="ws")
        assert await client.start() == []
        assert len(client.failures) == 1 and isinstance(client.failures[0], OSError)
        await service.close()
    run(go())


def test_a_client_service_refuses_an_unknown_transport():
    with pytest.raises(ValueError, match="transport must be 'tcp' or 'ws'"):
        ClientService(Recorder, transport="udp")


def test_a_large_message_of_many_packets_is_parsed_whole(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made)
        payloads = [bytes([i % 251]) * (i * 37 % 1900) for i in range(60)]
        assert 50_000 < sum(len(p) + 4 for p in payloads) <= 65536
        async with websockets.connect(url(listener)) as conn:
            await conn.send(b"".join(packet(1000 + i, p) for i, p in enumerate(payloads)))
            (s,) = await made.wait_count(1)
            got = await s.wait_packets(60)
        assert got == [(1000 + i, p) for i, p in enumerate(payloads)]
        await service.close()
    run(go())


def test_a_fragmented_message_is_put_together(run):
    async def go():
        made = ServerSessions()
        service, listener = await ws_service(made)
        reader, writer = await raw_ws(listener.port)
        data = packet(5, b"hello") + packet(6, b"world")
        writer.write(frame(OP_BINARY, data[:3], fin=False) + frame(OP_CONT, data[3:11], fin=False)
                     + frame(OP_CONT, data[11:]))
        (s,) = await made.wait_count(1)
        assert await s.wait_packets(2) == [(5, b"hello"), (6, b"world")]
        fin, opcode, payload = await read_frame(reader)
        assert (fin, opcode, payload) == (True, OP_BINARY, data)
        writer.close()
        await service.close()
    run(go())


# -- WebSocket-level faults: a defined close code, a logged reason --------------------------

@pytest.mark.parametrize("frames, code, detail", [
    ([frame(OP_TEXT, b"hello")], 1003, "websocket: a text frame"),
    ([frame(OP_CONT, packet(1))], 1002, "websocket: a continuation frame with no message"),
    ([frame(OP_BINARY, packet(1), fin=False), frame(OP_BINARY, packet(2))], 1002,
     "websocket: a new message began inside a fragmented one"),
    ([frame(OP_BINARY, packet(1, b"abc")[:5])], 4001, "ends inside a packet"),
    ([frame(OP_BINARY, packet(1) + b"\x09\x00")], 4001, "ends inside a packet"),
    ([frame(OP_BINARY, b"\x02\x00\x01\x00")], 4000, "size 2"),
    ([frame(OP_BINARY, struct.pack("<HH", 9000, 1) + b"x" * 4)], 4000, "9000"),
    # Past max_message_size (1024 here): one frame, or fragments adding up.
    ([frame(OP_BINARY, b"\x00" * 2000)], 1009, ""),
    ([frame(OP_BINARY, packet(1, b"x" * 600), fin=False), frame(OP_CONT, packet(1, b"y" * 600))],
     1009, "websocket: a fragmented message past 1024 bytes"),
    ([frame(OP_BINARY, packet(1), mask=False)], 1002, "websocket: "),
], ids=["text", "orphan-continuation", "interleaved", "truncated-header", "truncated-body",
        "size-too-small", "size-too-large", "message-too-big", "fragments-too-big", "unmasked"])
def test_a_websocket_fault_closes_with_its_code_and_a_logged_reason(run, caplog, frames, code,
                                                                      detail):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made, max_message_size=1024, max_packet_size=1024)
        (bystander,) = await ClientService(Recorder, "127.0.0.1", listener.port,
                                           transport="ws").start()
        reader, writer = await raw_ws(listener.port)
        (_, s) = await made.wait_count(2)
        writer.write(b"".join(frames))
        got_code, reason = await read_close(reader)
        assert got_code == code
        assert (await s.wait_gone()).kind is DisconnectReason.PROTOCOL_ERROR
        assert detail in s.reason.detail
        if code < 4000 or code == 4001:
            assert s.reason.detail.startswith("websocket: ")
        writer.close()
        # Nobody else is touched.
        bystander.send(make_packet(1, b"still here"))
        await asyncio.wait_for(bystander.up.wait(), 5)
        assert bystander.reason is None
        await service.close()
        return s
    with caplog.at_level(logging.INFO, "netcore"):
        s = run(go())
    assert f"session {s.session_id} from 127.0.0.1:" in caplog.text
    assert f"disconnected: protocol error: {s.reason.detail}" in caplog.text


def test_a_close_reason_fits_a_close_frame():
    assert close_reason_bytes("short") == b"short"
    long = close_reason_bytes("protocol error: " + "é" * 100)
    assert len(long) <= 123
    long.decode("utf-8")                    # cut on a character boundary


# -- every limit of the TCP path ----------------------------------------------------------

def test_the_rate_limit_applies_to_websocket_packets(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made, packet_rate=10, packet_burst=5)
        async with websockets.connect(url(listener)) as conn:
            await conn.send(b"".join(packet(1, b"%d" % i) for i in range(50)))
            assert await closed_with(conn) == (
                4002, "rate limited: more than 10 packets/s (burst 5)")
        (s,) = made.made
        assert (await s.wait_gone()).kind is DisconnectReason.RATE_LIMITED
        assert len(s.packets) == 5
        await service.close()
    run(go())


def test_a_capped_read_leaves_the_rest_for_later_iterations_in_order(run):
    class Marking(Recorder):
        """Records, for each packet, how many loop iterations had begun."""
        iterations = 0

        def on_recv_packet(self, pkt_id, payload):
            super().on_recv_packet(pkt_id, payload)
            self.seen_at = getattr(self, "seen_at", []) + [Marking.iterations]

    async def tick():
        while True:
            Marking.iterations += 1
            await asyncio.sleep(0)

    async def go():
        made = ServerSessions(Marking)
        service, listener = await ws_service(made, max_packets_per_read=4)
        ticker = asyncio.ensure_future(tick())
        reader, writer = await raw_ws(listener.port)
        (s,) = await made.wait_count(1)
        # Two messages in one write (likely one read): the second waits
        # behind the first's backlog, and order is kept across both.
        first = b"".join(packet(1, b"%d" % i) for i in range(10))
        second = b"".join(packet(2, b"%d" % i) for i in range(10, 19))
        writer.write(frame(OP_BINARY, first) + frame(OP_BINARY, second))
        await s.wait_packets(19)
        ticker.cancel()
        assert [p for _, p in s.packets] == [b"%d" % i for i in range(19)]
        # Never more than 4 packets of one read handled in one iteration.
        per_iteration = {}
        for it in s.seen_at:
            per_iteration[it] = per_iteration.get(it, 0) + 1
        assert max(per_iteration.values()) <= 4
        assert len(per_iteration) >= 5
        assert s.reason is None
        writer.close()
        await service.close()
    run(go())


def test_the_login_deadline_aborts_with_4004(run):
    async def go():
        service, listener = await ws_service(Recorder, login_timeout=0.2)
        async with websockets.connect(url(listener)) as conn:
            assert await closed_with(conn) == (4004, "login timeout: not logged in within 0.2 s")
        await service.close()
    run(go())


def test_a_full_server_and_a_full_address_close_with_their_codes(run):
    async def go():
        service, listener = await ws_service(Recorder, max_sessions=1)
        async with websockets.connect(url(listener)) as first:
            async with websockets.connect(url(listener)) as second:
                assert await closed_with(second) == (4006, "server full: 1 sessions")
            first_open = first.state is websockets.protocol.State.OPEN
        assert first_open
        await service.close()

        service, listener = await ws_service(Recorder, max_sessions_per_address=1,
                                             exempt_networks="")
        async with websockets.connect(url(listener)):
            async with websockets.connect(url(listener)) as second:
                assert await closed_with(second) == (4007, "address full: 1 sessions from 127.0.0.1")
        assert service.rejected_by_address == 1
        await service.close()
    run(go())


def test_a_slow_consumer_is_cut_off_with_4003(run):
    class Flood(Recorder):
        def on_connected(self):
            super().on_connected()
            for _ in range(40):
                self.send(make_packet(1, b"z" * 60000))

    async def go():
        made = ServerSessions(Flood)
        service, listener = await ws_service(made, max_pending_bytes=200_000)
        reader, writer = await raw_ws(listener.port)
        (s,) = await made.wait_count(1)
        assert (await s.wait_gone()).kind is DisconnectReason.SLOW_CONSUMER
        code, reason = await read_close(reader)
        assert code == 4003 and reason.startswith("slow consumer: ")
        writer.close()
        await service.close()
    run(go())



# -- frames that carry no packet ---------------------------------------------------------

FREE_RIDERS = {
    "ping": frame(OP_PING, b"p") * 50,
    "pong": frame(OP_PONG, b"p") * 50,        # unasked: the server sends no pings
    "empty message": frame(OP_BINARY) * 50,
    "fragment": frame(OP_BINARY, b"\x01", fin=False) + frame(OP_CONT, b"\x01", fin=False) * 49,
}


@pytest.mark.parametrize("kind", FREE_RIDERS)
def test_every_frame_costs_the_packet_rate_whatever_it_carries(run, kind):
    # 50 frames with no packet in them, in one write: each costs what a
    # packet costs, so the sixth is past a burst of 5.
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made, packet_rate=10, packet_burst=5)
        reader, writer = await raw_ws(listener.port)
        (s,) = await made.wait_count(1)
        writer.write(FREE_RIDERS[kind])
        assert await read_close(reader, timeout=5) == (
            4002, "rate limited: more than 10 packets/s (burst 5)")
        assert (await s.wait_gone()).kind is DisconnectReason.RATE_LIMITED
        assert s.packets == []
        writer.close()
        await service.close()
    run(go())


def test_a_peer_that_pings_and_never_reads_costs_one_pong_not_one_per_ping(run):
    # No packet rate here: the write side alone must hold. 20,000 pings of
    # 125 bytes, none of their pongs read: answered one by one they would be
    # 2.6 MB in the server's transport. While the peer does not read, only
    # the latest ping is remembered; its pong goes once it reads again.
    n = 20_000

    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made)
        reader, writer = await raw_ws(listener.port,
                                      sock=await stingy_connection(listener.port))
        (s,) = await made.wait_count(1)
        writer.transport.pause_reading()
        for i in range(n):
            writer.write(frame(OP_PING, b"%08d" % i + b"p" * 117))
            if i % 1000 == 999:
                await writer.drain()
        writer.write(frame(OP_BINARY, packet(1, b"after the pings")))
        await s.wait_packets(1)         # every ping before it has been handled
        conn = s.transport
        assert conn.get_write_buffer_size() <= 65536 + 200, conn.get_write_buffer_size()
        assert conn.pings == n and s.reason is None
        writer.transport.resume_reading()
        last = -1
        while last != n - 1:            # pongs in order, the last for the last ping
            _, opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
            assert opcode == OP_PONG and int(payload[:8]) > last
            last = int(payload[:8])
        assert s.reason is None
        writer.close()
        await service.close()
    run(go(), timeout=60)


# -- a close frame behind a capped message ---------------------------------------------------

def test_a_close_frame_in_the_same_read_as_a_capped_message_loses_nothing(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made, max_packets_per_read=4)
        reader, writer = await raw_ws(listener.port)
        (s,) = await made.wait_count(1)
        writer.write(frame(OP_BINARY, b"".join(packet(1, b"%d" % i) for i in range(100)))
                     + frame(OP_CLOSE, struct.pack("!H", 1000) + b"done"))
        code, _ = await read_close(reader)
        assert code == 1000
        assert (await s.wait_gone()).detail == "close 1000 'done'"
        assert [p for _, p in s.packets] == [b"%d" % i for i in range(100)]
        writer.close()
        await service.close()
    run(go())


# -- connections that are no session yet ---------------------------------------------------

def test_connections_that_never_upgrade_are_capped_server_wide(run):
    async def go():
        service, listener = await ws_service(Recorder, max_upgrades=3, listen_sockets=1)
        held = [await raw_client(listener.port) for _ in range(3)]      # connected, silent
        reader, writer = await raw_client(listener.port)
        # Aborted at once (the handshake deadline is 5 s away).
        assert await asyncio.wait_for(closed_by_peer(reader), 2)
        writer.close()
        assert listener.upgrading == 3 and listener.refused_upgrades == 1
        # One of them upgrades: a session now, and its place is free again.
        reader, writer = await upgrade(*held.pop(0), listener.port)
        assert listener.upgrading == 2 and len(service) == 1
        held.append(await raw_ws(listener.port))
        assert listener.upgrading == 2 and len(service) == 2
        for _, w in held + [(reader, writer)]:
            w.close()
        await service.close()
    run(go())


def test_connections_that_never_upgrade_are_capped_per_address(run):
    async def go():
        service, listener = await ws_service(Recorder, max_upgrades_per_address=2,
                                             exempt_networks="", listen_sockets=1)
        held = [await raw_client(listener.port) for _ in range(2)]
        reader, writer = await raw_client(listener.port)
        assert await asyncio.wait_for(closed_by_peer(reader), 2)
        writer.close()
        assert listener.upgrading_by_address == {"127.0.0.1": 2}
        # Another address is counted on its own.
        other = await raw_ws(listener.port, local_addr=("127.0.0.2", 0))
        assert len(service) == 1 and listener.refused_upgrades == 1
        for _, w in held + [other]:
            w.close()
        await service.close()
    run(go())


async def until(predicate, timeout=10.0):
    """Wait for a condition of the server's that it announces nowhere,
    checking every 10 ms until `timeout`."""
    async def wait():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


@LINUX_BUFFERS
def test_an_upgrade_not_done_in_time_is_aborted(run):
    page = b"x" * 4_000_000

    async def go():
        service, listener = await ws_service(Recorder, handshake_timeout=0.5,
                                             pages={"/": ("text/plain", page)})
        loop = asyncio.get_running_loop()
        began = loop.time()
        silent = await raw_client(listener.port)
        partial = await raw_client(listener.port)
        partial[1].write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # and no more
        # A page asked for and never read: its graceful close would wait for ever.
        slow = await asyncio.open_connection(sock=await stingy_connection(listener.port))
        slow[1].transport.pause_reading()
        slow[1].write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for reader, _ in (silent, partial):
            assert await asyncio.wait_for(closed_by_peer(reader), 5)
        assert loop.time() - began >= 0.4
        await until(lambda: listener.upgrading == 0)
        assert listener.handshake_timeouts == 3 and listener.pages_served == 1
        slow[1].transport.resume_reading()
        got = 0
        try:
            while data := await asyncio.wait_for(slow[0].read(1 << 16), 5):
                got += len(data)
        except ConnectionResetError:
            pass
        assert got < len(page)          # aborted: the rest was never sent
        for _, w in (silent, partial, slow):
            w.close()
        await service.close()
    run(go())


# -- every graceful close has a deadline ---------------------------------------------------

class Unread(Recorder):
    """Queues 900 KB for its peer once connected; `paused` once its transport
    holds some of them."""

    def __init__(self):
        super().__init__()
        self.paused = False

    def pause_writing(self):
        super().pause_writing()
        self.paused = True
        self._changed.set()

    def on_connected(self):
        super().on_connected()
        for _ in range(15):
            self.send(make_packet(7, b"u" * 59_996))


@LINUX_BUFFERS
@pytest.mark.parametrize("ending", ["close frame", "fin"])
def test_a_peer_that_ends_and_reads_nothing_is_cut_off_after_the_linger(run, ending):
    async def go():
        made = ServerSessions(Unread)
        service, listener = await ws_service(made)
        reader, writer = await raw_ws(listener.port,
                                      sock=await stingy_connection(listener.port))
        writer.transport.pause_reading()
        (s,) = await made.wait_count(1)
        await s.until(lambda: s.paused)
        if ending == "close frame":
            writer.write(frame(OP_CLOSE, struct.pack("!H", 1000)))
        else:
            writer.write_eof()
        reason = await s.wait_gone(timeout=10)      # the linger is 3 s
        assert reason.kind is DisconnectReason.PEER_CLOSED
        assert reason.detail == ("close 1000" if ending == "close frame"
                                 else "without a close frame")
        assert service.sessions == {}
        writer.close()
        await service.close()
    run(go())


# -- closing ---------------------------------------------------------------------------

def test_a_graceful_close_delivers_what_is_queued_first(run):
    class Farewell(Recorder):
        def on_recv_packet(self, pkt_id, payload):
            super().on_recv_packet(pkt_id, payload)
            for i in range(5):
                self.send(make_packet(7, b"bye %d" % i))
            self.disconnect()

    async def go():
        made = ServerSessions(Farewell)
        service, listener = await ws_service(made)
        async with websockets.connect(url(listener)) as conn:
            await conn.send(packet(1))
            assert await asyncio.wait_for(conn.recv(), 10) == b"".join(
                packet(7, b"bye %d" % i) for i in range(5))
            assert await closed_with(conn) == (1000, "closed locally")
        (s,) = made.made
        assert (await s.wait_gone()).kind is DisconnectReason.CLOSED
        await service.close()
    run(go())


def test_shutdown_closes_websocket_sessions_with_1001(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made)
        async with websockets.connect(url(listener)) as conn:
            await made.wait_count(1)
            closing = asyncio.ensure_future(service.close())
            assert await closed_with(conn) == (1001, "shutdown")
            await closing
        assert not listener.listening
        assert listener.closes[1001] == 1
    run(go())


def test_a_peer_that_vanishes_without_a_close_frame_ends_its_session(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made)
        reader, writer = await raw_ws(listener.port)
        (s,) = await made.wait_count(1)
        writer.close()
        reason = await s.wait_gone()
        assert reason.kind is DisconnectReason.PEER_CLOSED
        assert reason.detail == "without a close frame"
        assert service.sessions == {}
        await service.close()
    run(go())


# -- the HTTP side: origins and pages --------------------------------------------------------

def test_an_upgrade_from_a_foreign_origin_is_refused_with_403(run):
    async def go():
        service, listener = await ws_service(Recorder)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url(listener), origin="http://evil.example")
        assert refused.value.response.status_code == 403
        assert listener.refused_origins == 1 and service.sessions == {}
        # Its own origin, loopback pages and programs that send no Origin are let in.
        for origin in (f"http://127.0.0.1:{listener.port}", "http://localhost:3000", None):
            async with websockets.connect(url(listener), origin=origin):
                pass
        reader, writer = await raw_ws(listener.port, host=f"game.example:{listener.port}",
                                      origin=f"https://game.example:{listener.port}")
        writer.close()
        assert listener.upgrades == 4
        await service.close()
    run(go())


def test_an_exact_origin_list_lets_only_those_in(run):
    async def go():
        service, listener = await ws_service(Recorder, origins="https://play.example.com")
        async with websockets.connect(url(listener), origin="https://play.example.com"):
            pass
        for origin in ("http://localhost:3000", "https://play.example.com.evil.example"):
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(url(listener), origin=origin)
        await service.close()
    run(go())


@pytest.mark.parametrize("spec, origin, host, allowed", [
    ("self,loopback", None, "x:1", True),
    ("self,loopback", "http://x:1", "x:1", True),
    ("self,loopback", "https://x", "x", True),
    ("self,loopback", "http://x:2", "x:1", False),
    ("self,loopback", "http://127.0.0.5:9", "x:1", True),
    ("self,loopback", "http://[::1]:9", "x:1", True),
    ("self,loopback", "http://app.localhost", "x:1", True),
    ("self,loopback", "null", "x:1", False),
    ("self,loopback,null", "null", "x:1", True),
    ("self,loopback", "not an origin", "x:1", False),
    ("*", "http://anything.example", "x", True),
    ("", "http://localhost", "localhost", False),
    ("HTTPS://Play.Example.com:443", "https://play.example.com", "x", True),
])
def test_the_origin_policy(spec, origin, host, allowed):
    assert OriginPolicy(spec).allows(origin, host) is allowed


@pytest.mark.parametrize("spec", ["ftp://x", "http://x/path", "http://x:99999", "example.com"])
def test_a_bad_origin_policy_is_refused(spec):
    with pytest.raises(ValueError):
        OriginPolicy(spec)


def test_plain_http_gets_the_pages_and_404(run):
    async def go():
        service, listener = await ws_service(
            Recorder, pages={"/": ("text/html; charset=utf-8", b"<h1>page</h1>")})
        status, headers, body = await http_get(listener.port, "/")
        assert (status, headers["content-type"], body) == (
            200, "text/html; charset=utf-8", b"<h1>page</h1>")
        status, _, body = await http_get(listener.port, "/?x=1")
        assert status == 200
        status, _, _ = await http_get(listener.port, "/favicon.ico")
        assert status == 404
        assert (listener.pages_served, listener.not_found) == (2, 1)
        assert service.sessions == {}
        await service.close()
    run(go())


def test_the_listener_refuses_a_message_limit_below_the_packet_limit():
    async def go():
        service = netcore.ServerService(Recorder, max_packet_size=4096)
        with pytest.raises(ValueError, match="cannot carry a packet"):
            WebSocketListener(service, max_message_size=1000)
    netcore.run(go(), "asyncio")


def test_websocket_and_tcp_sessions_share_one_service(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made)
        (tcp,) = await ClientService(PacketSession, "127.0.0.1", service.port).start()
        async with websockets.connect(url(listener)):
            sessions = await made.wait_count(2)
            assert sorted(s.transport_kind for s in sessions) == ["tcp", "ws"]
            assert len(service) == 2
            service.broadcast(make_packet(9, b"to all"))
            # ... and a server-side broadcast reaches both kinds.
        tcp.disconnect()
        await service.close()
    run(go())


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
def test_websocket_sessions_get_keepalive_probes_like_tcp_ones(run):
    async def go():
        made = ServerSessions(Recorder)
        service, listener = await ws_service(made, keepalive_idle=30, keepalive_interval=5)
        assert service.keepalive_inherited         # both listeners have the options
        async with websockets.connect(url(listener)):
            (s,) = await made.wait_count(1)
            sock = s.transport.get_extra_info("socket")
            got = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                   *(sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                     for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"))]
        await service.close()
        return got
    assert run(go()) == [1, 30, 5, 3]


# -- the receive path fed by hand, frame by frame, as picows delivers one read -------------

class SocketTransport:
    """FakeTransport plus what picows's WSTransport asks of a transport."""

    def __init__(self):
        import socket
        from support import FakeTransport
        self.fake = FakeTransport()
        self.sock = socket.socket()         # never connected: picows falls back to write()

    def __getattr__(self, name):
        return getattr(self.fake, name)

    def get_extra_info(self, name, default=None):
        return self.sock if name == "socket" else self.fake.get_extra_info(name, default)

    def get_write_buffer_size(self):
        return 0


def hand_fed_connection(service):
    from picows.picows import WSTransport
    from netcore.websocket import WsConnection
    s = service._accept()
    tcp = SocketTransport()
    conn = WsConnection(s, 65536)
    ws = WSTransport(False, tcp, logging.getLogger("test"), asyncio.get_running_loop())
    conn.on_ws_connected(ws)
    return s, tcp, conn, ws


def binary(data):
    from picows.picows import WSMsgType, _make_test_ws_frame
    return _make_test_ws_frame(WSMsgType.BINARY, data, True, False)


def test_messages_of_one_read_wait_behind_a_capped_parse_in_order():
    async def go():
        service = netcore.ServerService(Recorder, max_packets_per_read=4)
        s, tcp, conn, ws = hand_fed_connection(service)
        conn.on_ws_frame(ws, binary(b"".join(packet(1, b"%d" % i) for i in range(10))))
        assert len(s.packets) == 4 and not tcp.fake.reading     # the rest waits, reading paused
        # picows delivers the next message of the same read at once: it queues.
        conn.on_ws_frame(ws, binary(b"".join(packet(2, b"%d" % i) for i in range(10, 19))))
        assert len(s.packets) == 4
        await s.wait_packets(19)
        assert [p for _, p in s.packets] == [b"%d" % i for i in range(19)]
        assert tcp.fake.reading and s.reason is None and s.recv_buffer_size == 0
        tcp.sock.close()
    netcore.run(go(), "asyncio")


def test_a_truncated_message_behind_a_backlog_is_refused_too():
    async def go():
        service = netcore.ServerService(Recorder, max_packets_per_read=2)
        s, tcp, conn, ws = hand_fed_connection(service)
        conn.on_ws_frame(ws, binary(b"".join(packet(1, b"x") for _ in range(5))))
        conn.on_ws_frame(ws, binary(packet(2, b"whole") + packet(3, b"cut")[:-1]))
        assert s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR
        assert "ends inside a packet" in s.close_reason.detail
        assert conn.close_code == 4001 and tcp.fake.aborted
        assert len(s.packets) == 2              # nothing after the fault is handled
        tcp.sock.close()
    netcore.run(go(), "asyncio")


def close_frame(code, reason=b""):
    from picows.picows import WSMsgType, _make_test_ws_frame
    return _make_test_ws_frame(WSMsgType.CLOSE, struct.pack("!H", code) + reason, True, False)


def test_a_close_frame_behind_a_capped_message_waits_for_its_backlog():
    # picows parses a whole socket read at once: the close frame comes while
    # 6 of the message's packets still wait. They are handled first.
    async def go():
        service = netcore.ServerService(Recorder, max_packets_per_read=4)
        s, tcp, conn, ws = hand_fed_connection(service)
        conn.on_ws_frame(ws, binary(b"".join(packet(1, b"%d" % i) for i in range(10))))
        conn.on_ws_frame(ws, close_frame(1000, b"bye"))
        assert len(s.packets) == 4 and s.close_reason is None
        await s.wait_packets(10)
        assert [p for _, p in s.packets] == [b"%d" % i for i in range(10)]
        assert s.close_reason.kind is DisconnectReason.PEER_CLOSED
        assert s.close_reason.detail == "close 1000 'bye'" and conn.close_code == 1000
        tcp.sock.close()
    netcore.run(go(), "asyncio")


def test_an_upgrade_completed_after_stop_accepting_gets_503(run):
    # A connection accepted before stop_accepting() may finish its upgrade
    # after it: picows then asks the listener, which must not start a session
    # that the shutdown's close_sessions() would miss.
    from multidict import CIMultiDict
    from picows import WSUpgradeRequest

    async def go():
        service, listener = await ws_service(Recorder)
        request = WSUpgradeRequest()
        request.method, request.path, request.version = b"GET", b"/ws", b"HTTP/1.1"
        request.headers = CIMultiDict({"Upgrade": "websocket", "Host": "127.0.0.1"})
        assert listener._request(request).__class__.__name__ == "WsConnection"
        service.stop_accepting()
        answer = listener._request(request)
        assert answer.response.status == 503 and answer.listener is None
        await service.close()
    run(go())
