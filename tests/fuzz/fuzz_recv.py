"""Coverage-guided fuzz of the receive path and its framing (netcore.framing,
netcore.recvbuffer, PacketSession's parse), as benchmarks/fuzz_recv.py does at
random, but following coverage.

An input is: a maximum packet size, a max_packets_per_read cap (0: none),
where to cut the stream into reads, and the stream. It is fed to a real
PacketSession over the tests' FakeTransport, get_buffer() then
buffer_updated(n) read by read, a capped session only while it reads (the
loop runs until it reads again, as a transport would). Properties:

  - the packets delivered are exactly those of the independent pure-Python
    reference parser (tests/test_core_framing.py), in order: their framed
    concatenation is the input's prefix up to the first bad header;
  - netcore.split_frames (the same C framing, no session) agrees too;
  - a bad header (size < 4 or > the maximum) closes the session as a
    protocol error and nothing else closes it; no packet is ever larger
    than the maximum;
  - memory is bounded: once the backlog has drained, the session keeps at
    most one partial packet's buffer (max(maximum, 1 KiB)), and none at all
    after a stream of whole packets;
  - a capped session drains in a bounded number of loop iterations.

    python tests/fuzz/fuzz_recv.py [-max_total_time=60] [corpus dirs]   (see fuzzlib.py)
"""
from __future__ import annotations

import struct

import fuzzlib
from fuzzlib import Input

with fuzzlib.instrumented():
    from support import FakeTransport, Recorder, feed, feed_capped, packet

from test_core_framing import reference_split  # imports pytest: not instrumented whole
from netcore import DisconnectReason, split_frames

fuzzlib.instrument_func(reference_split)

MAX_SIZES = (65535, 4096, 4, 5, 8, 64, 300, 1024)
CAPS = (0, 0, 1, 2, 3, 4, 16, 64)
MIN_OWN = 1024          # recvbuffer.pxd: the own buffer's floor


def decode(data: bytes):
    """(max_size, cap, cuts, stream) of one input."""
    inp = Input(data)
    b = inp.byte()
    max_size = MAX_SIZES[b & 7] if b < 0xF0 else 4 + inp.uint(2) % 65532
    cap = inp.pick(CAPS)
    ncuts = inp.byte() % 9
    cuts = [inp.uint(2) for _ in range(ncuts)]
    return max_size, cap, cuts, inp.rest()


async def check(max_size: int, cap: int, cuts, data: bytes) -> None:
    ref_packets, ref_consumed, ref_error = reference_split(data, max_size)
    packets, consumed, error = split_frames(data, max_size)
    assert (packets, consumed, error is not None) == (ref_packets, ref_consumed, ref_error), \
        f"split_frames {len(packets)}/{consumed}/{error!r} vs reference " \
        f"{len(ref_packets)}/{ref_consumed}/{ref_error}"
    s = Recorder()
    s.set_limits(max_packet_size=max_size, max_packets_per_read=cap)
    t = FakeTransport()
    s.connection_made(t)
    try:
        if cap:
            await feed_capped(s, t, data, cuts, budget=len(data) + 16)
        else:
            feed(s, data, cuts)
        assert s.packets == ref_packets, \
            f"session delivered {len(s.packets)} packets, reference {len(ref_packets)}"
        assert all(len(p) + 4 <= max_size for _, p in s.packets)
        assert b"".join(packet(i, p) for i, p in s.packets) == data[:ref_consumed]
        if ref_error:
            assert s.close_reason is not None \
                and s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR, s.close_reason
            assert t.closed, "a protocol error left the transport open"
        else:
            assert s.close_reason is None, f"closed without a bad header: {s.close_reason}"
            tail = len(data) - ref_consumed
            if tail == 0:
                assert s.recv_buffer_size == 0, \
                    f"{s.recv_buffer_size} bytes kept after whole packets"
            else:
                # One partial packet: its own buffer, sized for it, or the floor.
                declared = struct.unpack_from("<H", data, ref_consumed)[0] if tail >= 2 else 0
                bound = max(MIN_OWN, declared, tail)
                assert s.recv_buffer_size <= bound, \
                    f"{s.recv_buffer_size} bytes kept for a {tail}-byte tail (bound {bound})"
    finally:
        if s.close_reason is None:
            s.connection_lost(None)


def test_one_input(data: bytes) -> None:
    max_size, cap, cuts, stream = decode(data)
    fuzzlib.run(check(max_size, cap, cuts, stream))


def seeds():
    def enc(max_b, cap_b, cuts, stream):
        return bytes([max_b, cap_b, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) \
            + stream
    chat = packet(1004, b"\x0a\x05hello")
    many = b"".join(packet(1000 + i % 6, bytes(range(i % 40))) for i in range(40))
    return [
        enc(0, 0, [], b""),
        enc(0, 0, [], chat),
        enc(0, 0, [1, 2, 3, 5], chat * 3),
        enc(1, 2, [100], many),                           # max 4096, cap 1
        enc(0, 4, [], many + packet(7, b"x")[:3]),        # cap 3, partial tail
        enc(0, 0, [], chat + struct.pack("<HH", 3, 1000) + b"junk"),    # size < 4
        enc(2, 0, [], struct.pack("<HH", 5, 1) + b"x" + struct.pack("<HH", 9, 2)),  # max 4
        enc(1, 0, [7], packet(1, b"y" * 2000) + packet(2, b"z" * 3000)[:1500]),
        bytes([0xF0]) + struct.pack("<H", 700) + enc(6, 2, [3, 900], many)[1:],   # max 704, cap 16
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
