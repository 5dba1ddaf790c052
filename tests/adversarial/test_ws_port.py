"""WebSocket abuse against a real server (--ws-port) while twenty bystanders
chat over TCP: frames that carry no packet, a close frame behind a capped
message.

The offenders speak raw RFC 6455 (ws_support.py): what no well-behaved
client library sends.
"""
import asyncio
import socket
import struct

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from game_support import MESSAGE_BY_ID
from support import packet
from ws_support import (
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, frame, raw_ws, read_close, read_frame,
)

C_LOGIN, C_ENTER_GAME, C_CHAT = (PACKET_IDS[n] for n in ("C_LOGIN", "C_ENTER_GAME", "C_CHAT"))
PACKET_RATE, PACKET_BURST = 100, 200        # the server's defaults, said here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def SERVER_ARGS():
    return ("--ws-port", str(free_port()))


class RawPlayer:
    """A player over a raw WebSocket: packets out in binary messages, the
    server's messages split into packets and parsed."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.port = writer.get_extra_info("sockname")[1]
        self.inbox = []

    @classmethod
    async def connect(cls, ws_port):
        return cls(*await raw_ws(ws_port, path="/"))

    def send(self, *packets: bytes) -> None:
        self.writer.write(frame(OP_BINARY, b"".join(packets)))

    async def expect(self, name: str):
        while True:
            for i, (n, msg) in enumerate(self.inbox):
                if n == name:
                    del self.inbox[i]
                    return msg
            _, opcode, payload = await asyncio.wait_for(read_frame(self.reader), 10)
            assert opcode == OP_BINARY, (opcode, payload)
            pos = 0
            while pos < len(payload):
                size, pkt_id = struct.unpack_from("<HH", payload, pos)
                cls = MESSAGE_BY_ID[pkt_id]
                self.inbox.append((cls.__name__, cls.FromString(payload[pos + 4:pos + size])))
                pos += size

    async def enter(self, room: int) -> int:
        self.send(packet(C_LOGIN, pb.C_LOGIN().SerializeToString()))
        assert (await self.expect("S_LOGIN")).success
        self.send(packet(C_ENTER_GAME, pb.C_ENTER_GAME(playerIndex=0, roomId=room)
                         .SerializeToString()))
        entered = await self.expect("S_ENTER_GAME")
        assert entered.success
        return entered.playerId


def chat(msg: str) -> bytes:
    return packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString())


# -- frames that carry no packet ------------------------------------------------------

FLOODS = {
    "pings": frame(OP_PING, b"p" * 125),
    "unasked pongs": frame(OP_PONG, b"p" * 125),
    "empty messages": frame(OP_BINARY),
}


@pytest.mark.parametrize("kind", FLOODS)
def test_a_flood_of_frames_without_packets_is_cut_off_as_rate_limited(arena, case, kind):
    # 30,000 of them in a few writes, nothing read: picows used to answer
    # every ping itself (the pongs piling up in the server, the session none
    # the wiser), and pongs and empty messages cost nothing at all.
    async def go():
        c = await RawPlayer.connect(arena.server.ws_port)
        for _ in range(30):
            c.writer.write(FLOODS[kind] * 1000)
        try:
            code, reason = await read_close(c.reader)
            assert (code, reason) == (4002, f"rate limited: more than {PACKET_RATE} packets/s "
                                            f"(burst {PACKET_BURST})")
        except (ConnectionResetError, asyncio.IncompleteReadError):
            pass        # the abort's RST came first (our unsent frames); the log says why
        c.writer.close()
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, f"rate limited: more than {PACKET_RATE} packets/s "
                               f"(burst {PACKET_BURST})")


# -- a close frame behind a capped message -----------------------------------------------

def test_a_close_frame_right_behind_a_capped_message_loses_none_of_its_chats(arena, case):
    # 100 chats in one message (the server handles 64 a read, the rest in the
    # next iterations) and the close frame in the same write: every chat
    # reaches every bystander, then the session ends as the peer asked.
    msgs = [f"ws {case.number} {i}" for i in range(100)]

    async def go():
        c = await RawPlayer.connect(arena.server.ws_port)
        player_id = await c.enter(0)
        c.writer.write(frame(OP_BINARY, b"".join(chat(m) for m in msgs))
                       + frame(OP_CLOSE, struct.pack("!H", 1000)))
        code, _ = await read_close(c.reader)
        assert code == 1000
        c.writer.close()
        for m in msgs:
            case.expect_chat(player_id, m)
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, "peer closed: close 1000")

