"""Coverage-guided fuzz of the WebSocket session path: the bytes a client
sends after its HTTP upgrade, through picows's frame parser, netcore's
WsConnection (netcore.websocket) and the session's own packet parser, as
netcore-server's --ws-port runs them, in process.

A real ServerService and WebSocketListener are started once (on loopback
ports nobody connects to); each input is one connection: the listener's own
protocol (as its accept makes it) over a fake TCP transport, the upgrade
request, then the client's frames, in reads cut where the input says, a read
only while the connection reads. The session echoes every packet back.

The input is a list of frames the harness encodes (opcode, FIN, masked or
not, RSV1, length encoding, payload), so that the fuzzer explores sequences
of frames rather than their headers; a flag then corrupts the encoded stream
at a few places, for picows's parser itself. Properties:

  - the packets the session gets are a prefix of those of the binary
    messages (whole or fragmented) before the first thing a client may not
    send, each message parsed by the independent reference of
    tests/test_core_framing.py; all of them when the stream breaks no rule
    and does not close; none larger than the maximum;
  - a frame that breaks a rule of netcore's (a message that ends inside a
    packet, a bad header, a text frame, an RSV bit set, a message or fragments past the
    maximum, a continuation of nothing, a new message inside a fragmented
    one) closes the session as a protocol error; a close frame ends it as
    closed by the peer; it never ends as a handler error (an exception in
    netcore's frame handling), whatever the bytes;
  - what the server writes is well-formed server frames (unmasked): binary
    messages whose packets are the echo of what was delivered, in order;
    pongs that carry a ping's payload, no more pongs than pings; at most one
    close frame, and nothing after it;
  - once the connection is gone, the session is out of the service and the
    listener counts no upgrade in progress (nothing leaks per connection).

    python tests/fuzz/fuzz_websocket.py [-max_total_time=60] [corpus dirs]   (see fuzzlib.py)
"""
from __future__ import annotations

import asyncio
import socket
import struct

import fuzzlib
from fuzzlib import Input

with fuzzlib.instrumented():
    from support import packet

from test_core_framing import reference_split  # imports pytest: not instrumented whole

import netcore
from netcore import DisconnectReason, PacketSession, make_packet
from netcore.websocket import WebSocketListener, _new_protocol

fuzzlib.instrument_func(reference_split)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Opcodes by the frame's first byte: binary ones most, as clients send.
OPCODES = (OP_BINARY, OP_BINARY, OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_CLOSE, OP_TEXT,
           OP_BINARY, OP_CONT, 0x3, 0xB)
# (max_packet_size, max_message_size) of the listeners; a session's cap per input.
LIMITS = ((4096, 8192), (65535, 65536), (64, 100))
CAPS = (0, 0, 1, 2, 4)
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999)


class Echo(PacketSession):
    def __init__(self):
        self.packets = []
        self.reason = None

    def on_recv_packet(self, pkt_id, payload):
        self.packets.append((pkt_id, bytes(payload)))
        self.send(make_packet(pkt_id, payload))

    def on_disconnected(self, reason):
        self.reason = reason


class Tcp:
    """What picows and netcore ask of a TCP transport, in memory."""

    def __init__(self, sock):
        self.sock = sock
        self.protocol = None
        self.out = bytearray()
        self.reading = True
        self.closed = False
        self.lost = False

    def get_extra_info(self, name, default=None):
        return {"socket": self.sock, "peername": ("127.0.0.1", 40000),
                "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def get_protocol(self):
        return self.protocol

    def write(self, data):
        assert not self.closed or not data, "write after close"
        self.out += data

    def writelines(self, parts):
        for p in parts:
            self.write(p)

    def get_write_buffer_size(self):
        return 0

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass

    def close(self):
        self._end()

    def abort(self):
        self._end()

    def _end(self):
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self):
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)


class Server:
    """One service and listener per LIMITS entry, started once."""

    def __init__(self):
        self.sock = socket.socket()          # never connected: picows falls back to write()
        self.by_limits = {}

    async def get(self, index):
        if index not in self.by_limits:
            max_packet, max_message = LIMITS[index]
            service = await netcore.ServerService(
                Echo, "127.0.0.1", 0, max_packet_size=max_packet, packet_rate=0,
                login_timeout=0, max_packets_per_read=0).start()
            listener = await WebSocketListener(service, "127.0.0.1", 0,
                                               max_message_size=max_message).start()
            self.by_limits[index] = (service, listener)
        return self.by_limits[index]


_server = None


def frame_bytes(opcode, payload, fin, mask, rsv1, long_len):
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126 and not long_len:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def packets_payload(inp: Input, n: int) -> bytes:
    """n bytes, mostly whole packets whose sizes the fuzzer chooses."""
    out = bytearray()
    while len(out) < n:
        b = inp.byte()
        if b & 0x80:
            out += inp.take(min(n - len(out), 1 + b % 16))
        else:
            body = inp.take(b % 48)
            out += packet(1000 + (b >> 4) % 6, body)
    return bytes(out[:n]) if len(out) > n and inp.byte() & 1 else bytes(out)


def decode(data: bytes):
    """(limits index, cap, frames, corruptions, cuts)."""
    inp = Input(data)
    b = inp.byte()
    limits, cap = (b & 0x0F) % len(LIMITS), CAPS[(b >> 4) % len(CAPS)]
    corrupt = []
    if b & 0x80:
        corrupt = [(inp.uint(2), inp.byte()) for _ in range(1 + inp.byte() % 3)]
    cuts = [inp.uint(2) for _ in range(inp.byte() % 6)]
    frames = []
    while inp.left():
        h = inp.byte()
        opcode = OPCODES[h % len(OPCODES)]
        flags = inp.byte()
        fin = not flags & 1
        mask = not flags & 2
        rsv1 = flags & 0x0C == 0x0C
        long_len = flags & 0x30 == 0x30
        if opcode in (OP_BINARY, OP_CONT):
            n = inp.uint(2) % 2048 if flags & 0x40 else inp.byte() % 200
            payload = packets_payload(inp, n) if flags & 0x80 else inp.take(n)
        elif opcode == OP_CLOSE and flags & 0x40:
            reason = inp.take(inp.byte() % 8)
            payload = struct.pack("!H", inp.pick(CLOSE_CODES)) + reason
        else:
            payload = inp.take(inp.byte() % 130)
        frames.append((opcode, payload, fin, mask, rsv1, long_len))
    return limits, cap, frames, corrupt, cuts


def reference(frames, max_packet, max_message):
    """(packets, clean, fault): the packets of the binary messages up to the
    first frame that breaks a rule; clean when no rule is broken, every
    frame is one netcore and picows surely take, and no close frame came
    (then exactly these packets arrive); fault when a rule of netcore's own
    surely closes the session as a protocol error."""
    packets = []
    fragments = None
    for opcode, payload, fin, mask, rsv1, long_len in frames:
        # An unmasked frame or an unknown opcode: picows's rules, not
        # modelled here. A length under 126 in the 16-bit form: picows fails
        # the connection (1002), a protocol error.
        if not mask or opcode not in (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_CLOSE, OP_TEXT):
            return packets, False, False
        if long_len and len(payload) < 126:
            return packets, False, True
        if rsv1:
            return packets, False, True         # no extension is negotiated (RFC 6455 5.2)
        if opcode in (OP_PING, OP_PONG):
            if not fin or len(payload) > 125:
                return packets, False, False
            continue
        if opcode == OP_CLOSE:
            return packets, False, False
        if opcode == OP_TEXT:
            return packets, False, fin and len(payload) <= max_message and fragments is None
        message = None
        if opcode == OP_BINARY:
            if fragments is not None:
                return packets, False, True     # a new message inside a fragmented one
            if len(payload) > max_message:
                return packets, False, True
            if fin:
                message = payload
            else:
                fragments = payload
        else:
            if fragments is None:
                return packets, False, True     # a continuation of nothing
            fragments += payload
            if len(fragments) > max_message:
                return packets, False, True
            if fin:
                message, fragments = fragments, None
        if message is not None:
            got, consumed, bad = reference_split(message, max_packet)
            packets += got
            if bad or consumed != len(message):
                return packets, False, True
    return packets, True, False


def server_frames(out: bytes):
    """[(opcode, fin, payload)] of what the server wrote; asserts the framing."""
    frames, pos = [], 0
    while pos < len(out):
        assert len(out) - pos >= 2, "a server frame cut short"
        b0, b1 = out[pos], out[pos + 1]
        assert not b1 & 0x80, "a server frame is masked"
        assert not b0 & 0x70, "a server frame has RSV bits"
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack_from("!H", out, pos)[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack_from("!Q", out, pos)[0], pos + 8
        assert pos + n <= len(out), "a server frame cut short"
        frames.append((b0 & 0x0F, bool(b0 & 0x80), bytes(out[pos:pos + n])))
        pos += n
    return frames


async def settle(tcp, s, budget):
    """Run the loop until the session reads again (or is gone): a capped
    parse's backlog drains a cap per iteration."""
    while not tcp.reading and not tcp.closed:
        budget -= 1
        assert budget > 0, "a backlogged session never drained"
        await asyncio.sleep(0)
    return budget


async def check(data: bytes) -> None:
    global _server
    if _server is None:
        _server = Server()
    index, cap, frames, corrupt, cuts = decode(data)
    max_packet, max_message = LIMITS[index]
    service, listener = await _server.get(index)
    sessions_before = len(service.sessions)
    stream = b"".join(frame_bytes(*f) for f in frames)
    if corrupt and stream:
        damaged = bytearray(stream)
        for pos, value in corrupt:
            damaged[pos % len(damaged)] ^= value or 0xFF
        stream = bytes(damaged)
    tcp = Tcp(_server.sock)
    protocol = _new_protocol(listener)
    tcp.protocol = protocol
    protocol.connection_made(tcp)
    assert listener.upgrading == 1

    def read(chunk):
        while chunk:
            buf = protocol.get_buffer(-1)
            n = min(len(buf), len(chunk))
            assert n > 0
            buf[:n] = chunk[:n]
            protocol.buffer_updated(n)
            chunk = chunk[n:]

    read(UPGRADE)
    assert tcp.out.startswith(b"HTTP/1.1 101 "), bytes(tcp.out[:80])
    handshake = tcp.out.index(b"\r\n\r\n") + 4
    assert listener.upgrading == 0 and len(service.sessions) == sessions_before + 1
    s = next(reversed(service.sessions.values()))
    if cap:
        s.set_limits(max_packets_per_read=cap)
    budget = len(stream) + 64
    pos = 0
    for end in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
        while pos < end and not tcp.closed:
            budget = await settle(tcp, s, budget)
            if tcp.closed:
                break
            read(stream[pos:end])
            pos = end
    budget = await settle(tcp, s, budget)
    for _ in range(3):                  # the flusher's iteration, a close's callbacks
        await asyncio.sleep(0)

    # What the session got.
    delivered = s.packets
    assert all(len(p) + 4 <= max_packet for _, p in delivered)
    ref, clean, fault = reference(frames, max_packet, max_message)
    if not corrupt:
        assert delivered == ref[:len(delivered)], "packets that no binary message carried"
        if clean:
            assert delivered == ref, f"{len(delivered)} of {len(ref)} packets delivered"
            assert s.close_reason is None, f"closed on a clean stream: {s.close_reason}"
    if s.close_reason is not None:
        assert s.close_reason.kind in (DisconnectReason.PROTOCOL_ERROR,
                                       DisconnectReason.PEER_CLOSED), s.close_reason

    # What the server wrote.
    written = server_frames(tcp.out[handshake:])
    pings = [p for op, p, *_ in frames if op == OP_PING]
    echo = bytearray()
    closes = 0
    for opcode, fin, payload in written:
        assert closes == 0, "a frame after the server's close frame"
        assert fin and opcode in (OP_BINARY, OP_PONG, OP_CLOSE), (opcode, fin)
        if opcode == OP_BINARY:
            echo += payload
        elif opcode == OP_PONG:
            if not corrupt:
                assert payload in pings, "a pong with no ping's payload"
        else:
            closes += 1
    assert sum(op == OP_PONG for op, *_ in written) <= len(pings) or corrupt
    framed = b"".join(packet(i, p) for i, p in delivered)
    assert framed.startswith(bytes(echo)), "the echo is not what was delivered, in order"

    # The connection gone: nothing of it is left.
    tcp.close()
    for _ in range(3):
        await asyncio.sleep(0)
    assert tcp.lost and s.reason is not None
    assert s.close_reason.kind is not DisconnectReason.HANDLER_ERROR, s.close_reason
    if fault and not corrupt:
        # Ours, or picows's: it parses the next frame of a read before it hands
        # over this one, and fails the connection itself (1002) when that one
        # breaks its rules; the session then ends as a protocol error too.
        assert s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR, s.close_reason
    assert len(service.sessions) == sessions_before, "the session outlived its connection"
    assert listener.upgrading == 0


def test_one_input(data: bytes) -> None:
    fuzzlib.run(check(data))


def seeds():
    def frame(opcode_index, flags, body):
        return bytes([opcode_index, flags]) + body

    chat = packet(1004, b"\x0a\x02hi")
    # A binary frame of raw payload: opcode index 0, flags 0, length byte, bytes.
    raw_bin = frame(0, 0, bytes([len(chat)]) + chat)
    two = packet(1000, b"") + packet(1002, b"\x08\x01")
    return [
        b"\x00\x00" + raw_bin,
        b"\x00\x00" + raw_bin + frame(4, 0, b"\x04ping") + raw_bin,
        b"\x10\x00" + frame(0, 0, bytes([len(two * 5)]) + two * 5) + raw_bin,   # cap 1
        b"\x00\x00" + frame(0, 1, bytes([4]) + chat[:4]) + frame(3, 0, bytes([5]) + chat[4:]),
        b"\x00\x00" + raw_bin + frame(6, 0x40, bytes([3]) + b"bye" + bytes([0])),  # close 1000
        b"\x00\x00" + frame(7, 0, b"\x03abc"),                                     # text
        b"\x00\x00" + frame(3, 0, b"\x02ab"),                                      # cont of nothing
        b"\x00\x00" + frame(0, 0, bytes([len(chat) - 1]) + chat[:-1]),             # cut packet
        b"\x02\x00" + frame(0, 0x80, b"\x50" + b"\x05\x10abcde\x85xy"),            # max 64
        b"\x00\x00" + frame(0, 2, bytes([len(chat)]) + chat),                      # unmasked
        b"\x81\x05\x00\x03\x00" + raw_bin * 3,                                     # corrupted
        b"\x00\x00" + frame(5, 0, b"\x00") + frame(0, 0, b"\x00"),                 # pong, empty
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
