"""Coverage-guided fuzz of the cluster's broker message decoders
(netcore_cluster.wire): read_up, read_down and decode_job, on any bytes.

wire.py promises that a message that does not parse is a WireError, which
the link counts and drops: an exception of any other type would escape a
NATS subscription callback. Properties, for every input:

  - each decoder either returns or raises WireError, nothing else, and its
    lazily parsed parts (ops, segments) too when they are consumed;
  - it never hangs: the ops and segments of a message are at most one per
    fixed-size head in it, and decoding takes linear time (the runner's
    -timeout catches the rest);
  - whatever parses is read exactly: encoding what was decoded with wire.py's
    own encoders gives back the input's bytes (so no field is misread and no
    byte is skipped or read twice);
  - encode_job(decode_job(x)) == x for a job, with its argument types kept.

The first byte of an input picks the decoder; the rest is the message. Up
and down messages need their first byte to be b"U" / b"S": the seeds have it.

    python tests/fuzz/fuzz_wire.py [-max_total_time=60] [corpus dirs]   (see fuzzlib.py)
"""
from __future__ import annotations

import struct

import fuzzlib

with fuzzlib.instrumented():
    from netcore_cluster import wire
    from netcore_cluster.wire import WireError


def _slot(x):
    return x.decode("ascii") if isinstance(x, (bytes, bytearray)) else x


def check_up(msg: bytes) -> None:
    try:
        to_epoch, from_epoch, slot, ops = wire.read_up(msg)
        ops = list(ops)
    except WireError:
        return
    assert len(ops) <= len(msg) // wire._OP.size
    again = wire.up_header(to_epoch, from_epoch, slot) + b"".join(
        wire.up_op(kind, room, seq, member, data) for kind, room, seq, member, data in ops)
    assert again == msg, "read_up did not read the message exactly"


def encode_segment(seg) -> bytes:
    kind = seg[0]
    if kind == wire.DATA:
        _, frames, view = seg
        return wire.data_segment_head(frames, len(view)) + bytes(view)
    if kind == wire.UNICAST:
        _, member, frames, view = seg
        return wire.unicast_segment(member, frames, bytes(view))
    if kind == wire.MULTICAST:
        _, members, frames, view = seg
        return wire.multicast_segment(bytes(members), frames, bytes(view))
    if kind in (wire.JOINED, wire.LEFT):
        _, member, epoch, slot = seg
        return wire.member_segment(kind, member, epoch, slot)
    if kind == wire.ACK:
        _, seq, epoch, slot = seg
        return wire.ack_segment(seq, epoch, slot)
    if kind == wire.REFUSED:
        _, member, epoch, why, slot = seg
        # refused_segment takes the reason, not its code: re-pack the code as read.
        return struct.pack("<BQQB", wire.REFUSED, member, epoch, why) + wire._str8(slot)
    raise AssertionError(f"read_down yielded a segment of unknown kind {kind}")


def check_down(msg: bytes) -> None:
    try:
        room, owner_epoch, incarnation, seq, before, segments = wire.read_down(msg)
        segments = list(segments)
    except WireError:
        return
    assert len(segments) <= len(msg) // 9      # the smallest segment head is 9 bytes
    for seg in segments:
        if seg[0] == wire.REFUSED:
            assert wire.refusal_reason(seg[3]) in wire.REFUSALS
    again = wire.down_header(room, owner_epoch, incarnation, seq, before) \
        + b"".join(encode_segment(s) for s in segments)
    assert again == msg, "read_down did not read the message exactly"


def check_job(msg: bytes) -> None:
    try:
        name, args = wire.decode_job(msg)
    except WireError:
        return
    for a in args:
        assert a is None or type(a) in (bool, int, float, str, bytes), type(a)
    again = wire.encode_job(name, args)
    if again != msg:
        # A float NaN payload is the one thing that may come back with
        # other bits; everything else is read exactly.
        assert any(isinstance(a, float) and a != a for a in args), \
            "encode_job(decode_job(x)) != x"
        assert len(again) == len(msg)


CHECKS = (check_up, check_down, check_job)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    CHECKS[data[0] % len(CHECKS)](data[1:])
    # Every decoder also takes what the others are given.
    if data[0] >= 0x80:
        for check in CHECKS:
            check(data[1:])


def seeds():
    up = wire.up_header(3, 7, "node-1") + wire.up_op(wire.JOIN | wire.FIRST, 12, 1, 99) \
        + wire.up_op(wire.JOB, 12, 2, 99, wire.encode_job("chat", (99, "hi", b"\x00", 1.5)))
    up += wire.up_op(wire.SYNC, 0, 0, 0) + wire.up_op(wire.PING, 12, 0, 0)
    down = wire.down_header(12, 3, 1, 5, 40) \
        + wire.data_segment_head(2, 8) + b"\x08\x00\xed\x03abcd"[:8] \
        + wire.member_segment(wire.JOINED, 99, 7, "node-1") \
        + wire.member_segment(wire.LEFT, 98, 7, "node-2") \
        + wire.ack_segment(2, 7, "node-1") \
        + wire.unicast_segment(99, 1, b"\x06\x00\xed\x03ok") \
        + wire.refused_segment(97, 7, "node-1", "room_full")
    job = wire.encode_job("enter", (None, True, False, -1, 2.5, "ü", b"raw"))
    return [b"\x00" + up, b"\x01" + down, b"\x02" + job, b"\x80" + up,
            b"\x00" + wire.up_header(1, 1, "a-0"), b"\x01" + wire.down_header(1, 1, 0, 1, 0),
            b"\x02" + wire.encode_job("x", ())]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
