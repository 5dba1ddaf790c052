"""Test sessions and helpers over real loopback sockets."""
import asyncio
import contextlib
import gc
import socket
import struct

from netcore import PacketSession, make_packet
from netcore.loop import tune_gc_for_serving


def packet(pkt_id: int, payload: bytes = b"") -> bytes:
    """Wire bytes built independently of netcore, as a reference."""
    return struct.pack("<HH", len(payload) + 4, pkt_id) + payload


async def until_changed(changed: asyncio.Event, predicate, timeout=10.0):
    """Wait until predicate() holds, checked now and each time `changed` is set."""
    async def wait():
        while not predicate():
            changed.clear()
            await changed.wait()
    await asyncio.wait_for(wait(), timeout)


class Recorder(PacketSession):
    """Records packets and the disconnect reason; tests wait on them."""

    def __init__(self):
        self.packets = []
        self.reason = None
        self._want = 0
        self._enough = asyncio.Event()
        self._changed = asyncio.Event()
        self.up = asyncio.Event()
        self.gone = asyncio.Event()

    def on_connected(self):
        self.up.set()

    def on_recv_packet(self, pkt_id, payload):
        self.packets.append((pkt_id, payload))
        self._changed.set()
        if len(self.packets) >= self._want:
            self._enough.set()

    def on_disconnected(self, reason):
        self.reason = reason
        self.gone.set()
        self._enough.set()
        self._changed.set()

    async def until(self, predicate, timeout=10.0):
        """Wait until predicate() holds, checked after every packet and at the end."""
        await until_changed(self._changed, predicate, timeout)

    async def wait_packets(self, n, timeout=10.0):
        self._want = n
        if len(self.packets) < n:
            self._enough.clear()
            await asyncio.wait_for(self._enough.wait(), timeout)
        assert len(self.packets) >= n, f"got {len(self.packets)} of {n} packets ({self.reason})"
        return self.packets[:n]

    async def wait_gone(self, timeout=10.0):
        await asyncio.wait_for(self.gone.wait(), timeout)
        return self.reason


class Echo(Recorder):
    """Server side: records, then sends every packet back unchanged."""

    def on_recv_packet(self, pkt_id, payload):
        super().on_recv_packet(pkt_id, payload)
        self.send(make_packet(pkt_id, payload))


class ServerSessions:
    """A session factory that remembers what it made, so tests can wait for
    the server side of a connection."""

    def __init__(self, cls=Echo):
        self.cls = cls
        self.made = []
        self._new = asyncio.Event()

    def __call__(self):
        s = self.cls()
        self.made.append(s)
        self._new.set()
        return s

    async def wait_made(self, n, timeout=10.0):
        """The first n server sessions, once made (connected or not)."""
        async def made():
            while len(self.made) < n:
                self._new.clear()
                await self._new.wait()
        await asyncio.wait_for(made(), timeout)
        return self.made[:n]

    async def wait_count(self, n, timeout=10.0):
        """The first n server sessions, once each is connected."""
        async def connected():
            while len(self.made) < n:
                self._new.clear()
                await self._new.wait()
            for s in self.made[:n]:
                await s.up.wait()
        await asyncio.wait_for(connected(), timeout)
        return self.made[:n]


async def raw_client(port):
    return await asyncio.open_connection("127.0.0.1", port)


def stingy_socket():
    """A client socket that takes as little as it can (TCP_MAXSEG: Linux): a 4 KiB receive buffer
    and 536-byte segments, so that the kernels on both sides hold only about
    100 KB of what the server sends it (rather than megabytes on loopback)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if hasattr(socket, "TCP_MAXSEG"):       # not on Windows
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    return sock


async def stingy_connection(port):
    """A connected stingy_socket()."""
    sock = stingy_socket()
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def closed_by_peer(reader) -> bool:
    """Read until the peer has closed: True at end of stream, or at a reset
    (an aborted connection ends with FIN or RST depending on what the kernel
    still held unread; either is a close)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


class FakeTransport(asyncio.Transport):
    """Just enough transport to drive a session by hand, read by read."""

    def __init__(self):
        super().__init__()
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.written = []
        self.ended = asyncio.Event()        # set by close, abort or write_eof

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def get_extra_info(self, name, default=None):
        return ("fake", 0) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.written.append(bytes(data))

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof_written = True
        self.ended.set()

    def close(self):
        self.closed = True
        self.ended.set()

    def abort(self):
        self.closed = self.aborted = True
        self.ended.set()


def feed(session, data: bytes, cuts=()):
    """Deliver `data` in reads ending at `cuts` (taken modulo len(data) + 1),
    through get_buffer/buffer_updated as a transport does, until the session
    closes."""
    pos = 0
    for end in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        while pos < end and not session.close_reason:
            buf = session.get_buffer(-1)
            n = min(len(buf), end - pos)
            assert n > 0, "get_buffer offered no room"
            buf[:n] = data[pos:pos + n]
            session.buffer_updated(n)
            pos += n


async def feed_capped(s, t: FakeTransport, data: bytes, cuts, budget=None) -> bool:
    """feed(), for a session that handles at most max_packets_per_read packets
    of a read and leaves the rest to later loop iterations with reading
    paused: like a transport, deliver the next read only while reading, and
    at the end let the loop run until the session reads again (or closed).
    `budget`: at most this many loop iterations in all (AssertionError past
    it: a session that never reads again); None, no bound. True when the
    session did leave packets for later at least once."""
    pos = 0
    deferred = False

    async def until_reading():
        nonlocal budget, deferred
        while not t.reading and not s.close_reason:
            deferred = True
            if budget is not None:
                budget -= 1
                assert budget > 0, "a capped session never read again"
            await asyncio.sleep(0)

    for end in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        while pos < end and not s.close_reason:
            await until_reading()
            if s.close_reason:
                break
            buf = s.get_buffer(-1)
            n = min(len(buf), end - pos)
            assert n > 0, "get_buffer offered no room"
            buf[:n] = data[pos:pos + n]
            s.buffer_updated(n)
            pos += n
    await until_reading()
    return deferred


@contextlib.contextmanager
def collector_as_the_server_runs_it():
    """The cyclic collector as netcore-server sets it (tune_gc_for_serving:
    start-up frozen, young collections every 50,000 allocations), and then
    off: what reference counting does not free here is cyclic garbage, which
    the server keeps until a collection that may be hours away."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.collect()
    tune_gc_for_serving()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()
