"""Coverage-guided fuzz of the generated dispatch (netcore_packets'
server_dispatch and client_dispatch) on protobuf payloads, through a real
PacketSession, and of the login replies laid out by hand.

An input is either a run of packets for one side's dispatcher (first byte
even), or a login to reply to (odd). Properties:

  dispatch (each packet: an id, mostly one of the protocol's, and a payload)
  - an id the side does not receive raises UnknownPacketError; a payload
    protobuf cannot parse as the id's message raises MalformedPacketError;
    nothing else is ever raised, and both are ProtocolErrors;
  - otherwise the id's handler gets exactly the message protobuf parses from
    the payload (same type, equal), and that message survives a
    serialize-and-parse round trip;
  - the same packets fed to a PacketSession that dispatches them close it as
    a protocol error at the first bad one (never as a handler error) after
    handling exactly the packets before it, in order.

  replies (characters with any names and types, and ascending player ids
  anywhere in uint64)
  - the hand-laid S_LOGIN and S_ENTER_GAME (netcore_server.replies, the
    default fast_replies) are the very bytes protobuf makes for them, for a
    named login and for the guest reply kept laid out per id size.

    python tests/fuzz/fuzz_dispatch.py [-max_total_time=60] [corpus dirs]   (see fuzzlib.py)
"""
from __future__ import annotations

import struct

import fuzzlib
from fuzzlib import Input

with fuzzlib.instrumented():
    from support import FakeTransport, feed, packet

from google.protobuf.message import DecodeError

from netcore import DisconnectReason, MalformedPacketError, PacketSession, ProtocolError
from netcore import UnknownPacketError
from netcore_packets import Protocol_pb2 as pb
from netcore_packets import client_dispatch, server_dispatch
from netcore_packets.Struct_pb2 import Player as PlayerInfo
from netcore_game.game import CHAT
from netcore_server.db import Character
from netcore_server.replies import replies_for

IDS = sorted(server_dispatch.PACKET_IDS.values())
NAMES = {v: k for k, v in server_dispatch.PACKET_IDS.items()}
SIDES = (("server", server_dispatch.ServerPacketDispatcher, "C_"),
         ("client", client_dispatch.ClientPacketDispatcher, "S_"))
MAX_ID = 2 ** 64 - 1


class Handlers:
    """handle_<NAME> for every packet: records (name, message)."""

    def __init__(self):
        self.got = []

    def __getattr__(self, attr):
        if not attr.startswith("handle_"):
            raise AttributeError(attr)
        name = attr[len("handle_"):]
        return lambda session, msg: self.got.append((name, msg))


def expected(prefix: str, pkt_id: int, payload: bytes):
    """('unknown'|'malformed'|message) by protobuf itself."""
    name = NAMES.get(pkt_id)
    if name is None or not name.startswith(prefix):
        return "unknown"
    try:
        return getattr(pb, name).FromString(payload)
    except DecodeError:
        return "malformed"


class Dispatching(PacketSession):
    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.handled = 0

    def on_recv_packet(self, pkt_id, payload):
        self.dispatcher.dispatch(self, pkt_id, payload)
        self.handled += 1


def check_dispatch(inp: Input) -> None:
    side, cls, prefix = SIDES[inp.byte() & 1]
    packets = []
    while inp.left():
        b = inp.byte()
        pkt_id = IDS[b % len(IDS)] if b < 0xF0 else inp.uint(2)
        n = inp.uint(2) % 1024 if inp.byte() & 0x80 else inp.byte() % 64
        packets.append((pkt_id, inp.take(n)))
    handlers = Handlers()
    dispatcher = cls(handlers)
    first_bad = None
    for index, (pkt_id, payload) in enumerate(packets):
        want = expected(prefix, pkt_id, payload)
        before = len(handlers.got)
        try:
            dispatcher.dispatch(None, pkt_id, payload)
        except UnknownPacketError as exc:
            assert want == "unknown", f"{side}: id {pkt_id} refused as unknown; protobuf: {want}"
            assert exc.pkt_id == pkt_id and isinstance(exc, ProtocolError)
        except MalformedPacketError as exc:
            assert want == "malformed", f"{side}: id {pkt_id} refused as malformed: {exc}"
            assert exc.pkt_id == pkt_id and isinstance(exc, ProtocolError)
        else:
            assert not isinstance(want, str), f"{side}: id {pkt_id} dispatched; protobuf: {want}"
            assert len(handlers.got) == before + 1
            name, msg = handlers.got[-1]
            assert name == NAMES[pkt_id] and type(msg) is type(want) and msg == want
            assert type(msg).FromString(msg.SerializeToString()) == msg
            continue
        if first_bad is None:
            first_bad = index
    # The same packets through a session: handled up to the first bad one.
    s = Dispatching(cls(Handlers()))
    t = FakeTransport()
    s.connection_made(t)
    feed(s, b"".join(packet(i, p) for i, p in packets))
    if first_bad is None:
        assert s.close_reason is None, s.close_reason
        assert s.handled == len(packets)
        s.connection_lost(None)
    else:
        assert s.close_reason is not None \
            and s.close_reason.kind is DisconnectReason.PROTOCOL_ERROR, s.close_reason
        assert s.handled == first_bad


def check_replies(inp: Input) -> None:
    count = 1 + inp.byte() % 4
    chars = []
    for _ in range(count):
        name = inp.take(inp.byte() % 48).decode("utf-8", "replace")
        player_type = struct.unpack("<i", inp.take(4).ljust(4, b"\0"))[0]
        if inp.byte() & 1:
            player_type = player_type % 8
        chars.append(Character(0, name, player_type))
    first = inp.uint(8)
    if inp.byte() & 1:
        first %= 1 << (7 * (1 + inp.byte() % 9))       # near a varint size boundary
    first = max(1, min(first, MAX_ID - count + 1))
    ids = tuple(range(first, first + count))
    login = bytes(packet(1001, pb.S_LOGIN(success=True, players=[
        PlayerInfo(id=i, name=c.name, playerType=c.player_type)
        for i, c in zip(ids, chars)]).SerializeToString()))
    enter = bytes(packet(1003, pb.S_ENTER_GAME(success=True, playerId=first)
                         .SerializeToString()))
    for fast in (True, False):
        builder = replies_for(fast, chars, CHAT.protocol)
        assert bytes(builder.login(chars, ids)) == login, f"fast={fast}: S_LOGIN differs"
        assert bytes(builder.guest_login(ids)) == login, f"fast={fast}: guest S_LOGIN differs"
        # Twice: the second reply comes from the pieces laid out by the first.
        assert bytes(builder.guest_login(ids)) == login
        assert bytes(builder.enter(first)) == enter, f"fast={fast}: S_ENTER_GAME differs"


async def check(data: bytes) -> None:
    inp = Input(data)
    if inp.byte() & 1:
        check_replies(inp)
    else:
        check_dispatch(inp)


def test_one_input(data: bytes) -> None:
    fuzzlib.run(check(data))


def seeds():
    def pkts(*items):
        out = b""
        for index, payload in items:
            out += bytes([index, 0, len(payload)]) + payload
        return out
    login = pb.C_LOGIN(account="alice", password="pw").SerializeToString()
    enter = pb.C_ENTER_GAME(playerIndex=1, roomId=3).SerializeToString()
    chat = pb.C_CHAT(msg="hello, room").SerializeToString()
    s_login = pb.S_LOGIN(success=True, players=[PlayerInfo(id=7, name="Knight", playerType=1)])
    s_chat = pb.S_CHAT(playerId=7, msg="hi").SerializeToString()
    return [
        b"\x00\x00" + pkts((0, login), (2, enter), (4, chat)),
        b"\x00\x00" + pkts((0, b""), (4, b"\x0a\x02\xc3\x28")),             # bad UTF-8
        b"\x00\x00" + pkts((4, chat), (1, b""), (4, chat)),                  # S_ id to the server
        b"\x00\x01" + pkts((1, s_login.SerializeToString()), (5, s_chat), (3, b"\x08\x01")),
        b"\x00\x00" + pkts((2, b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")),
        b"\x01\x02\x06Knight\x01\x00\x00\x00\x00\x04Mage\x02\x00\x00\x00\x00"
        + b"\x7f\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x01\x00\x00\xff\xff\xff\xff\x00" + b"\xff" * 8 + b"\x00",
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
