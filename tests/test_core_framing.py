"""Receive side: framing, header validation, the receive buffer."""
import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netcore
from netcore import ClientService, DisconnectReason, ServerService, split_frames
from support import (
    FakeTransport, Recorder, ServerSessions, closed_by_peer, feed, packet, raw_client,
)


def reference_split(data: bytes, max_size: int):
    """An independent pure-Python reading of the wire format (the oracle)."""
    out, pos = [], 0
    while len(data) - pos >= 4:
        size, pkt_id = struct.unpack_from("<HH", data, pos)
        if size < 4 or size > max_size:
            return out, pos, True
        if size > len(data) - pos:
            break
        out.append((pkt_id, data[pos + 4:pos + size]))
        pos += size
    return out, pos, False


# -- the parser on its own -------------------------------------------------

def test_split_frames_reads_whole_packets_and_stops_at_a_partial_one():
    data = packet(1000) + packet(1004, b"hello") + packet(1005, b"xy")[:5]
    packets, consumed, error = split_frames(data)
    assert packets == [(1000, b""), (1004, b"hello")]
    assert consumed == 4 + 9
    assert error is None


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_sizes_below_the_header_are_protocol_errors(size):
    packets, consumed, error = split_frames(packet(1000, b"ok") + struct.pack("<HH", size, 1000))
    assert packets == [(1000, b"ok")] and consumed == 6
    assert error == f"header size {size} < 4"


def test_size_above_the_maximum_is_refused_from_the_header_alone():
    # Only the 4 header bytes of a 5,000-byte packet: refused without its body.
    _, consumed, error = split_frames(struct.pack("<HH", 5000, 1000), 4096)
    assert consumed == 0 and error == "header size 5000 > maximum 4096"


def test_split_frames_takes_contiguous_memory_only():
    data = packet(1004, b"hello") + packet(1005, b"world!")
    # A strided view: walked with a pointer it would be read outside its
    # bytes (backwards from the last one), so it is refused.
    for strided in (memoryview(data)[::-1], memoryview(data)[::2]):
        with pytest.raises(BufferError, match="contiguous"):
            split_frames(strided)
    # Any contiguous bytes-like object parses as its bytes do.
    assert split_frames(bytearray(data)) == split_frames(data)
    assert split_frames(memoryview(data)[9:]) == ([(1005, b"world!")], 10, None)
    assert split_frames(memoryview(b"")) == ([], 0, None)


def test_packets_are_made_from_contiguous_payloads_only():
    payload = b"payload bytes"
    with pytest.raises(BufferError, match="contiguous"):
        netcore.make_packet(1004, memoryview(payload)[::-1])
    with pytest.raises(BufferError, match="contiguous"):
        netcore.SendBufferPool().write(1004, memoryview(payload)[::2])
    assert bytes(netcore.make_packet(1004, memoryview(payload)[2:])) == packet(1004, payload[2:])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), max_size=st.integers(4, 70000))
def test_split_frames_agrees_with_the_reference_on_any_bytes(data, max_size):
    packets, consumed, error = split_frames(data, max_size)
    ref_packets, ref_consumed, ref_error = reference_split(data, max_size)
    assert (packets, consumed, error is not None) == (ref_packets, ref_consumed, ref_error)


# -- a PacketSession driven read by read, exactly as a transport drives it --

def drive(data: bytes, cuts, max_size=netcore.MAX_PACKET_SIZE):
    """A Recorder fed `data` split at `cuts`; returns it once fed."""
    async def go():
        s = Recorder()
        s.set_limits(max_packet_size=max_size)
        s.connection_made(FakeTransport())
        feed(s, data, cuts)
        return s
    return netcore.run(go(), "asyncio")


packet_lists = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=3000)), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pkts=packet_lists, cuts=st.lists(st.integers(0, 40000), max_size=20))
def test_any_read_split_of_a_valid_stream_yields_the_same_packets(pkts, cuts):
    s = drive(b"".join(packet(i, p) for i, p in pkts), cuts)
    assert s.packets == pkts
    assert s.close_reason is None
    assert s.recv_buffer_size == 0, "a session with nothing pending keeps no receive memory"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=30),
       max_size=st.integers(4, 3000))
def test_any_bytes_in_any_split_parse_like_the_reference(data, cuts, max_size):
    ref_packets, _, ref_error = reference_split(data, max_size)
    s = drive(data, cuts, max_size)
    assert s.packets == ref_packets
    if ref_error:
        assert s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR
    else:
        assert s.close_reason is None


# -- over real loopback sockets, on every event loop -------------------------

@pytest.mark.parametrize("bad, detail", [
    (struct.pack("<HH", 0, 1000), "header size 0 < 4"),
    (struct.pack("<HH", 1, 1000), "header size 1 < 4"),
    (struct.pack("<HH", 2, 1000), "header size 2 < 4"),
    (struct.pack("<HH", 3, 1000), "header size 3 < 4"),
    (struct.pack("<HH", 4097, 1000), "header size 4097 > maximum 4096"),
])
def test_a_bad_header_closes_only_that_session(run, bad, detail):
    async def go():
        made = ServerSessions()
        async with ServerService(made, port=0, max_packet_size=4096) as server:
            good = ClientService(Recorder, port=server.port)
            (bystander,) = await good.start()
            await made.wait_count(1)
            reader, writer = await raw_client(server.port)
            offender = (await made.wait_count(2))[1]
            # A valid packet first: it is delivered before the bad header closes the session.
            writer.write(packet(1004, b"before") + bad + packet(1004, b"after"))
            reason = await offender.wait_gone()
            assert reason.kind is DisconnectReason.PROTOCOL_ERROR
            assert reason.detail == detail
            assert offender.packets == [(1004, b"before")]
            assert await closed_by_peer(reader)        # the server closed it
            # The other session is untouched and still served.
            bystander.send(netcore.make_packet(1004, b"still here"))
            assert await bystander.wait_packets(1) == [(1004, b"still here")]
            assert bystander.reason is None
            writer.close()
            await good.close()
    run(go())


def test_a_60k_packet_arrives_whole_and_its_memory_is_given_back(run):
    async def go():
        made = ServerSessions()
        async with ServerService(made) as server:
            (client,) = await ClientService(Recorder, port=server.port).start()
            big = bytes(range(256)) * 240           # 61,440 bytes
            client.send(netcore.make_packet(1004, big))
            client.send(netcore.make_packet(1005, b"next"))
            assert await client.wait_packets(2) == [(1004, big), (1005, b"next")]
            (echo,) = await made.wait_count(1)
            assert echo.packets == [(1004, big), (1005, b"next")]
            assert echo.recv_buffer_size == 0 and client.recv_buffer_size == 0
            client.disconnect()
    run(go())


def test_a_packet_drip_fed_one_byte_at_a_time_arrives_whole(run):
    async def go():
        made = ServerSessions()
        async with ServerService(made) as server:
            reader, writer = await raw_client(server.port)
            data = packet(1004, b"x" * 700) + packet(1000)
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
            (echo,) = await made.wait_count(1)
            assert await echo.wait_packets(2) == [(1004, b"x" * 700), (1000, b"")]
            assert await reader.readexactly(len(data)) == data
            writer.close()
    run(go())


def test_an_idle_session_owns_no_receive_memory(run):
    async def go():
        made = ServerSessions()
        async with ServerService(made) as server:
            sessions = await ClientService(Recorder, port=server.port, count=50).start()
            for s in sessions:
                s.send(netcore.make_packet(1004, b"hello"))
            for s in sessions:
                await s.wait_packets(1)
            assert all(s.recv_buffer_size == 0 for s in made.made + sessions)
            # A partial packet is the only thing that takes memory, sized for it.
            made.cls = ReadSignal
            _, writer = await raw_client(server.port)
            writer.write(packet(1004, b"y" * 3000)[:1000])
            partial = (await made.wait_count(51))[50]
            await partial.until_read(1000)      # in one read or several
            assert partial.recv_buffer_size == 3004
            writer.close()
    run(go())


class ReadSignal(Recorder):
    """Counts the bytes of every read the transport hands over."""

    def __init__(self):
        super().__init__()
        self.bytes_read = 0
        self.read = asyncio.Event()

    def buffer_updated(self, nbytes):
        super().buffer_updated(nbytes)
        self.bytes_read += nbytes
        self.read.set()

    async def until_read(self, n, timeout=10.0):
        async def wait():
            while self.bytes_read < n:
                self.read.clear()
                await self.read.wait()
        await asyncio.wait_for(wait(), timeout)


def test_a_read_of_many_packets_is_handled_a_cap_at_a_time():
    async def go():
        s = Recorder()
        s.set_limits(max_packets_per_read=10)
        t = FakeTransport()
        s.connection_made(t)
        data = b"".join(packet(1004, b"%d" % i) for i in range(95)) + packet(1005, b"x" * 900)[:50]
        buf = s.get_buffer(-1)
        buf[:len(data)] = data
        s.buffer_updated(len(data))
        assert len(s.packets) == 10 and not t.reading     # the rest waits, reading paused
        turns = 0
        while not t.reading:                              # one cap per loop iteration
            await asyncio.sleep(0)
            turns += 1
        assert [p for _, p in s.packets] == [b"%d" % i for i in range(95)]
        assert 9 <= turns <= 11
        feed(s, packet(1005, b"x" * 900)[50:])            # the partial packet completes
        assert s.packets[-1] == (1005, b"x" * 900) and len(s.packets) == 96
        assert s.recv_buffer_size == 0 and s.close_reason is None
        return s
    netcore.run(go(), "asyncio")



# A capped read of 100 packets of 604 bytes (60 KB) with the start of one
# more behind them: a tail of one byte (the next header not even whole), or
# 700 bytes of a 1004-byte packet. Once the backlog has drained the session
# keeps the tail, in a buffer sized for it: not the backlog's.
BACKLOG = b"".join(packet(1004, bytes([i]) * 600) for i in range(100))
NEXT = packet(1005, b"n" * 1000)
TAILS = {"one byte": (1, 512), "part of a packet": (700, len(NEXT))}    # -> memory kept


@pytest.mark.parametrize("tail", TAILS)
def test_a_tail_left_behind_a_drained_backlog_keeps_only_what_it_needs(tail):
    cut, kept = TAILS[tail]

    async def go():
        s = Recorder()
        s.set_limits(max_packets_per_read=10)
        t = FakeTransport()
        s.connection_made(t)
        data = BACKLOG + NEXT[:cut]
        buf = s.get_buffer(-1)
        buf[:len(data)] = data
        s.buffer_updated(len(data))                     # one read: 10 now, 90 waiting
        assert len(s.packets) == 10 and s.recv_buffer_size > 50_000
        await s.wait_packets(100)
        assert t.reading                                # drained: reading again
        assert s.recv_buffer_size == kept               # not the backlog's 54 KB
        feed(s, NEXT[cut:])
        assert s.packets[-1] == (1005, b"n" * 1000) and s.recv_buffer_size == 0
    netcore.run(go(), "asyncio")


@pytest.mark.parametrize("tail", TAILS)
def test_a_tail_behind_a_backlog_read_from_a_socket_keeps_only_what_it_needs(run, tail):
    # The same over a real connection, written at once (whether it is read
    # at once is up to the kernel: the bound holds either way).
    cut, kept = TAILS[tail]

    async def go():
        made = ServerSessions(Recorder)
        async with ServerService(made, max_packets_per_read=10) as server:
            reader, writer = await raw_client(server.port)
            writer.write(BACKLOG + NEXT[:cut])
            (s,) = await made.wait_count(1)
            await s.wait_packets(100)
            assert s.recv_buffer_size <= kept
            writer.write(NEXT[cut:])
            await s.wait_packets(101)
            assert s.packets[-1] == (1005, b"n" * 1000) and s.recv_buffer_size == 0
            writer.close()
    run(go())


# -- the shared receive scratch: never overwritten while it is parsed --------

class Relay(Recorder):
    """On its first packet, hands `other` a read of `data` from inside its own
    handler: what a transport that reads synchronously, or a handler driving
    another session, does in the middle of this session's parse."""

    def __init__(self, other=None, data=b""):
        super().__init__()
        self.other, self.data = other, data

    def on_recv_packet(self, pkt_id, payload):
        super().on_recv_packet(pkt_id, payload)
        if len(self.packets) == 1:
            feed(self.other, self.data)


def numbered(first_id, n, size):
    return [(first_id + i, bytes([i]) * size) for i in range(n)]


def test_a_read_during_another_sessions_parse_leaves_that_parse_intact():
    mine = numbered(1000, 40, 90)
    theirs = numbered(2000, 40, 70)
    partial = packet(3000, b"p" * 200)[:100]

    async def go():
        other = Recorder()
        other.connection_made(FakeTransport())
        relay = Relay(other, b"".join(packet(i, p) for i, p in theirs) + partial)
        relay.connection_made(FakeTransport())
        # One read of 40 packets, parsed from the scratch; the other session's
        # read lands while 39 of them are still to be parsed.
        feed(relay, b"".join(packet(i, p) for i, p in mine))
        return relay, other

    relay, other = netcore.run(go(), "asyncio")
    assert relay.packets == mine and relay.close_reason is None
    assert other.packets == theirs and other.close_reason is None
    assert relay.recv_buffer_size == 0
    assert other.recv_buffer_size == 512        # its read-aside buffer shrunk to the tail's
    # The other session kept its partial packet, and completes it.
    async def complete():
        feed(other, packet(3000, b"p" * 200)[100:])
        return other
    assert netcore.run(complete(), "asyncio").packets[-1] == (3000, b"p" * 200)


def test_a_read_of_a_session_inside_its_own_parse_is_refused():
    async def go():
        s = Relay()
        s.other, s.data = s, packet(7, b"second read")
        s.connection_made(FakeTransport())
        feed(s, packet(1, b"a") + packet(2, b"b") + packet(3, b"c"))
        return s

    s = netcore.run(go(), "asyncio")
    # Parsed in order up to the handler that misbehaved, which closes that session.
    assert s.packets == [(1, b"a")]
    assert s.close_reason.kind is DisconnectReason.HANDLER_ERROR
    assert "still parsing" in s.close_reason.detail


def test_a_backlog_drained_after_pause_reading_does_not_resume_reading():
    async def go():
        server = ServerService(Recorder, max_packets_per_read=10)
        s = server._accept()
        t = FakeTransport()
        s.connection_made(t)
        data = b"".join(packet(1004, b"%d" % i) for i in range(95))
        buf = s.get_buffer(-1)
        buf[:len(data)] = data
        s.buffer_updated(len(data))
        assert len(s.packets) == 10 and not t.reading     # the rest waits, reading paused
        server.pause_reading()                            # a shutdown begins
        await s.wait_packets(95)                          # the backlog is still handled
        assert not t.reading, "the drained backlog resumed reading after pause_reading()"
        s.resume_reading()
        assert t.reading
        return s
    s = netcore.run(go(), "asyncio")
    assert [p for _, p in s.packets] == [b"%d" % i for i in range(95)]
