"""The cluster's two message kinds on NATS, and the arguments of forwarded jobs.

Upstream, gateway -> owner, on `<prefix>.w.<owner slot>`: the ops one gateway
has for one owner's rooms since the last event-loop iteration, in one message.

    'U' | to_epoch u64 | from_epoch u64 | from_slot str8
    op*: kind u8 | room u32 | seq u64 | member u64 | data bytes32

Downstream, owner -> gateways, on `<prefix>.r.<room>`: what one room produced
in one iteration, in the order it produced it, in one message.

    'S' | room u32 | owner_epoch u64 | incarnation u32 | seq u64 | packets_before u64
    segment*: DATA frames u32, bytes32 (whole framed packets, as the clients get them)
            | JOINED member u64, epoch u64, slot str8   (a gateway's member is in)
            | LEFT   member u64, epoch u64, slot str8   (the owner removed it)
            | ACK    seq u64, epoch u64, slot str8      (a gateway's ops up to seq ran)
            | UNICAST member u64, frames u32, bytes32 (packets for that member only)
            | REFUSED member u64, epoch u64, why u8, slot str8 (the room would not
                     take a gateway's member: REFUSALS[why - 1] says why)

Little-endian throughout; str8 is a length byte and ASCII, bytes32 a u32
length and the bytes. Everything here comes from our own workers over the
cluster's private NATS; a message that does not parse is counted and dropped,
never trusted further.
"""
from __future__ import annotations

import struct
from typing import Iterator

# Upstream op kinds. SYNC ends the JOINs a gateway re-sends to a new owner
# incarnation (room and seq 0): see link.py, "Rebuilding". PING (seq 0) asks
# the owner for a message on the room's stream, so that a gateway that may
# have missed some (it reconnected, or its client dropped some) finds out now.
JOIN, LEAVE, JOB, SYNC, PING = 1, 2, 3, 4, 5
# Flag on the first op of a numbering (a gateway's room, made anew, starts at a
# random seq): the owner forgets what it had for that gateway and room.
FIRST = 0x80
# Downstream segment kinds.
DATA, JOINED, LEFT, ACK, UNICAST, REFUSED = 1, 2, 3, 4, 5, 6
# Why a room refused an enter (REFUSED's why, from 1): the server layer's
# refusal reasons, so the gateway counts what the owner decided.
REFUSALS = ("room_full", "room_refused")

_UP_HEAD = struct.Struct("<cQQ")
_OP = struct.Struct("<BIQQI")
_DOWN_HEAD = struct.Struct("<cIQIQQ")
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_MEMBER = struct.Struct("<BQQ")
_ACK = struct.Struct("<BQQ")
_UNICAST = struct.Struct("<BQII")
_DATA = struct.Struct("<BII")
_REFUSED = struct.Struct("<BQQB")


class WireError(ValueError):
    """A cluster message that does not parse."""


def _str8(text: str) -> bytes:
    raw = text.encode("ascii")
    return _U8.pack(len(raw)) + raw


def _read_str8(data, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise WireError("truncated name")
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise WireError("truncated name")
    try:
        return bytes(data[pos + 1:end]).decode("ascii"), end
    except UnicodeDecodeError:
        raise WireError("a name that is not ASCII") from None


# -- upstream -----------------------------------------------------------------

def up_header(to_epoch: int, from_epoch: int, from_slot: str) -> bytes:
    return _UP_HEAD.pack(b"U", to_epoch, from_epoch) + _str8(from_slot)


def up_op(kind: int, room: int, seq: int, member: int, data: bytes = b"") -> bytes:
    return _OP.pack(kind, room, seq, member, len(data)) + data


def read_up(data) -> tuple[int, int, str, Iterator[tuple[int, int, int, int, bytes]]]:
    """(to_epoch, from_epoch, from_slot, ops) of an upstream message."""
    if len(data) < _UP_HEAD.size + 1 or data[0:1] != b"U":
        raise WireError("not an upstream message")
    _, to_epoch, from_epoch = _UP_HEAD.unpack_from(data, 0)
    slot, pos = _read_str8(data, _UP_HEAD.size)
    return to_epoch, from_epoch, slot, _ops(data, pos)


def _ops(data, pos):
    end = len(data)
    while pos < end:
        if pos + _OP.size > end:
            raise WireError("truncated op")
        kind, room, seq, member, n = _OP.unpack_from(data, pos)
        pos += _OP.size
        if pos + n > end:
            raise WireError("truncated op data")
        yield kind, room, seq, member, bytes(data[pos:pos + n])
        pos += n


# -- downstream ---------------------------------------------------------------

def down_header(room: int, owner_epoch: int, incarnation: int, seq: int,
                packets_before: int) -> bytes:
    return _DOWN_HEAD.pack(b"S", room, owner_epoch, incarnation, seq, packets_before)


def data_segment_head(frames: int, nbytes: int) -> bytes:
    return _DATA.pack(DATA, frames, nbytes)


def member_segment(kind: int, member: int, epoch: int, slot: str) -> bytes:
    return _MEMBER.pack(kind, member, epoch) + _str8(slot)


def refused_segment(member: int, epoch: int, slot: str, why: str) -> bytes:
    code = REFUSALS.index(why) + 1 if why in REFUSALS else len(REFUSALS)
    return _REFUSED.pack(REFUSED, member, epoch, code) + _str8(slot)


def refusal_reason(code: int) -> str:
    """A REFUSED segment's why as a reason; one this worker does not know is room_refused."""
    return REFUSALS[code - 1] if 1 <= code <= len(REFUSALS) else "room_refused"


def unicast_segment(member: int, frames: int, data: bytes) -> bytes:
    return _UNICAST.pack(UNICAST, member, frames, len(data)) + data


def ack_segment(seq: int, epoch: int, slot: str) -> bytes:
    return _ACK.pack(ACK, seq, epoch) + _str8(slot)


def read_down(data):
    """(room, owner_epoch, incarnation, seq, packets_before, segments) of a
    downstream message; segments yields (DATA, frames, memoryview) or
    (JOINED|LEFT, member, epoch, slot) or (ACK, seq, epoch, slot) or
    (UNICAST, member, frames, memoryview) or (REFUSED, member, epoch, why, slot)."""
    if len(data) < _DOWN_HEAD.size or data[0:1] != b"S":
        raise WireError("not a room stream message")
    _, room, owner_epoch, incarnation, seq, before = _DOWN_HEAD.unpack_from(data, 0)
    return room, owner_epoch, incarnation, seq, before, _segments(memoryview(data),
                                                                  _DOWN_HEAD.size)


# Each segment: its fixed head, then a slot name (member and ack segments) or
# a run of bytes whose length ends the head (data and unicast segments).
_LAYOUTS = {DATA: (_DATA, False), JOINED: (_MEMBER, True), LEFT: (_MEMBER, True),
            ACK: (_ACK, True), UNICAST: (_UNICAST, False), REFUSED: (_REFUSED, True)}


def _segments(view, pos):
    end = len(view)
    while pos < end:
        kind = view[pos]
        layout = _LAYOUTS.get(kind)
        if layout is None:
            raise WireError(f"unknown segment kind {kind}")
        head, named = layout
        if pos + head.size > end:
            raise WireError(f"truncated segment of kind {kind}")
        fields = head.unpack_from(view, pos)
        pos += head.size
        if named:
            slot, pos = _read_str8(view, pos)
            yield (*fields, slot)
        else:
            n = fields[-1]
            if pos + n > end:
                raise WireError(f"truncated segment of kind {kind}")
            yield (*fields[:-1], view[pos:pos + n])
            pos += n


# -- job arguments ------------------------------------------------------------
# A forwarded job is `name(member, *args)`; args are plain values.

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


def encode_job(name: str, args: tuple) -> bytes:
    out = [_str8(name)]
    for a in args:
        if a is None:
            out.append(b"N")
        elif a is True or a is False:
            out.append(b"T" if a else b"F")
        elif isinstance(a, int):
            out.append(b"i" + _I64.pack(a))
        elif isinstance(a, float):
            out.append(b"f" + _F64.pack(a))
        elif isinstance(a, str):
            raw = a.encode()
            out.append(b"s" + _U32.pack(len(raw)) + raw)
        elif isinstance(a, (bytes, bytearray, memoryview)):
            raw = bytes(a)
            out.append(b"b" + _U32.pack(len(raw)) + raw)
        else:
            raise TypeError(f"a forwarded job's arguments are None, bool, int, float, str or "
                            f"bytes; {name} got {type(a).__name__}")
    return b"".join(out)


def decode_job(data: bytes) -> tuple[str, tuple]:
    try:
        name, pos = _read_str8(data, 0)
        args = []
        end = len(data)
        while pos < end:
            tag = data[pos:pos + 1]
            pos += 1
            if tag == b"N":
                args.append(None)
            elif tag in (b"T", b"F"):
                args.append(tag == b"T")
            elif tag == b"i":
                args.append(_I64.unpack_from(data, pos)[0])
                pos += 8
            elif tag == b"f":
                args.append(_F64.unpack_from(data, pos)[0])
                pos += 8
            elif tag in (b"s", b"b"):
                (n,) = _U32.unpack_from(data, pos)
                pos += 4
                if pos + n > end:
                    raise WireError("truncated job argument")
                raw = data[pos:pos + n]
                pos += n
                args.append(raw.decode() if tag == b"s" else raw)
            else:
                raise WireError(f"unknown job argument tag {tag!r}")
        return name, tuple(args)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise WireError(f"bad job: {exc}") from None
