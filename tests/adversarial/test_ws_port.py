"""WebSocket abuse against a real server (--ws-port) while twenty bystanders
chat over TCP: frames that carry no packet, a close frame behind a capped
message, and connections that never finish their upgrade.

The offenders speak raw RFC 6455 (ws_support.py): what no well-behaved
client library sends.
"""
import asyncio
import socket
import struct
import sys

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from game_support import MESSAGE_BY_ID, ServerProcess, connect, in_game, leave
from support import closed_by_peer, packet
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


# -- connections that never finish their upgrade ------------------------------------------

def limit_open_files(n):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptor limits")
def test_connections_that_never_upgrade_leave_the_game_port_its_descriptors(run, tmp_path,
                                                                            loop_kind):
    # 200 connections to the WebSocket port that never send a byte, against
    # a server with an open-files limit of 200 and --max-sessions 100: they
    # are no sessions, so no session cap counts them. They must not take the
    # descriptors the game port needs: a player logs in over TCP meanwhile,
    # and one more after the handshake deadline has dropped them.
    async def go(server):
        players = await in_game(server.port, 2, room=1)
        idle = []
        for _ in range(200):
            try:
                idle.append(await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", server.ws_port), 5))
            except (OSError, asyncio.TimeoutError):
                pass                    # refused or reset while the server sheds: fine
        (late,) = await in_game(server.port, 1, room=1)     # served while they are held
        ended = [asyncio.ensure_future(closed_by_peer(r)) for r, _ in idle]
        done, _ = await asyncio.wait(ended, timeout=10)
        assert len(done) == len(ended), "idle connections outlived the handshake deadline"
        for _, w in idle:
            w.close()
        (after,) = await in_game(server.port, 1, room=1)
        ws = await connect(server.ws_port, 1, transport="ws")   # the WebSocket port serves again
        await leave(*players, late, after, *ws)

    with ServerProcess(tmp_path, loop_kind, "--max-sessions", "100",
                       "--ws-port", str(free_port()),
                       preexec_fn=limit_open_files(200)) as server:
        run(go(server), timeout=60)
        assert server.stop() == 0
    log = server.log_text()
    assert "Traceback" not in log
    assert "websocket connection from 127.0.0.1:" in log     # refused at once, or cut at 5 s

