"""Load abuse against a real server while twenty bystanders chat: floods,
oversized chats, readers that never read, idle and churning connections."""
import asyncio
import re
import socket
import struct

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from arena import (
    BYSTANDER_RATE, BYSTANDER_SIZE, closed_by_server, connected_lines, ended_lines, eventually,
    local_port, offender,
)
from game_support import GameClient, leave
from support import packet, stingy_connection

C_CHAT, S_CHAT = PACKET_IDS["C_CHAT"], PACKET_IDS["S_CHAT"]
MAX_PENDING = 1 << 20           # the server's default --max-pending-bytes


def chat(msg) -> bytes:
    return packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString())


async def in_executor(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- floods ---------------------------------------------------------------------------

# Explicit, so that what the floods expect does not hang on the defaults.
PACKET_RATE, PACKET_BURST = 100, 200
SERVER_ARGS = ("--packet-rate", str(PACKET_RATE), "--packet-burst", str(PACKET_BURST))
FLOOD = 300_000


class Flooder(GameClient):
    """Counts the S_CHATs of its own player without parsing them (there may be
    hundreds of thousands) when count_echoes; everything else as a GameClient."""

    def __init__(self):
        super().__init__()
        self.echoes = 0
        self.player_id = None
        self.count_echoes = True

    def on_recv_packet(self, pkt_id, payload):
        if pkt_id == S_CHAT and self.player_id is not None and self.count_echoes:
            self.echoes += 1
            if self.echoes % 1000 == 0:
                self._changed.set()
            return
        super().on_recv_packet(pkt_id, payload)


async def flood(case, arena, n, msg, room=None, count_echoes=True):
    """A player (alone in a room of its own unless `room`) writes n chats in one
    go, as fast as the server takes them, and reads what comes back as fast
    as it comes. `msg` may contain {i}, the chat's number."""
    c = await offender(arena.server.port, factory=Flooder)
    c.count_echoes = count_echoes
    assert (await c.login()).success
    entered = await c.enter(0, 60_000 + case.number if room is None else room)
    assert entered.success
    c.player_id = entered.playerId
    loop = asyncio.get_running_loop()
    start = loop.time()
    if "{i}" in msg:
        c.transport.write(b"".join(chat(msg.format(i=i)) for i in range(n)))
    else:
        c.transport.write(chat(msg) * n)
    await c.until(lambda: c.echoes == n or c.reason is not None, timeout=120)
    c.flood_seconds = loop.time() - start
    return c


def admitted_at_most(c) -> int:
    """What the bucket may let through of a flood: the burst, and what it
    refilled while the server read it (at most the flood's span: a slow
    build, or a loaded machine, reads a flood for longer than 10 ms)."""
    return PACKET_BURST + int(PACKET_RATE * c.flood_seconds) + 1


def assert_rate_limited(case, c):
    (reason,) = case.reasons(c.port)
    assert reason == f"rate limited: more than {PACKET_RATE} packets/s (burst {PACKET_BURST})"
    assert c.reason is not None


def test_a_flood_in_another_room_is_cut_off_as_rate_limited(arena, case):
    async def go():
        c = await flood(case, arena, FLOOD, "f")
        await case.finish()
        return c

    c = case.run(go(), timeout=180)
    assert_rate_limited(case, c)
    # The session is aborted: at most what was admitted came back, likely nothing.
    assert c.echoes <= admitted_at_most(c)


def test_a_flood_in_the_bystanders_room_is_cut_off_as_rate_limited(arena, case):
    flooder = {}

    def heard_a_prefix_of_the_flood_once(report):
        # Each bystander heard the same first k chats of the flood, once each
        # and in order, and nothing else; k is what the limit let through.
        assert report["foreign_count"] == len(report["foreign"])
        heard = {}
        for rcv, pid, msg in report["foreign"]:
            assert pid == flooder["id"], (rcv, pid, msg)
            heard.setdefault(rcv, []).append(msg)
        assert sorted(heard) == list(range(len(arena.player_ids)))
        k = len(heard[0])
        assert 0 < k <= admitted_at_most(flooder["client"])
        assert all(msgs == [f"flood {i}" for i in range(k)] for msgs in heard.values())

    async def go():
        c = await flood(case, arena, FLOOD, "flood {i}", room=0, count_echoes=False)
        flooder["id"], flooder["client"] = c.player_id, c
        await case.finish(foreign_check=heard_a_prefix_of_the_flood_once)
        return c

    c = case.run(go(), timeout=180)
    assert_rate_limited(case, c)


def test_oversized_chats_repeated_are_all_dropped(arena, case):
    legit = f"legit {case.number}"
    big = ["x" * 4000, "\u20ac" * 1300, "y" * 513]       # bytes: 4000, 3900, 513 > 512

    async def go():
        c = await offender(arena.server.port, room=0)
        # 150 of them: below the packet burst, so this is about their size alone.
        c.transport.write(b"".join(chat(m) for m in big) * 50 + chat(legit))
        await c.until(lambda: (c.player_id, legit) in c.chats, timeout=60)
        assert [m for pid, m in c.chats if pid == c.player_id] == [legit]
        case.expect_chat(c.player_id, legit)
        await case.finish()
        return c

    c = case.run(go(), timeout=120)
    case.assert_still_connected(c.port)
    sid = case.session_id(c.port)
    dropped = re.findall(rf"session {sid}: chat of (\d+) bytes dropped \(max 512\)", case.log_text)
    assert sorted(set(dropped)) == ["3900", "4000", "513"] and len(dropped) == 150


# -- readers that never read --------------------------------------------------------------

def test_readers_that_never_read_are_cut_off_as_slow_consumers(arena, case):
    async def go():
        slow = [await offender(arena.server.port, room=0) for _ in range(5)]
        for c in slow:
            c.transport.pause_reading()
        # A busy room: 20 x 80 chats/s of 500 bytes, 800 KB/s to every member.
        # Even so it takes seconds: the server's kernel send buffer grows to
        # megabytes before anything is left pending in the session.
        assert (await in_executor(arena.command, "pace 80 500"))["ok"]
        try:
            await eventually(lambda: all(case.reasons_now(c.port) for c in slow), 60,
                             "the server to cut off all five slow readers")
        finally:
            assert (await in_executor(arena.command,
                                      f"pace {BYSTANDER_RATE} {BYSTANDER_SIZE}"))["ok"]
        for c in slow:
            c.transport.resume_reading()
            await closed_by_server(c)
        await case.finish()
        return slow

    slow = case.run(go(), timeout=120)
    for c in slow:
        (reason,) = case.reasons(c.port)
        pending, limit = re.fullmatch(r"slow consumer: (\d+) bytes pending > (\d+)", reason).groups()
        assert int(limit) == MAX_PENDING and int(pending) > MAX_PENDING



def test_a_reader_that_half_closes_and_reads_nothing_is_cut_off_after_the_linger(arena, case):
    # A player that stopped reading, in a room where three others chat, sends
    # its FIN while the server holds output for it. The close its FIN begins
    # waits for that output to drain, which it never does: without a
    # deadline the session, its buffers and its room place stay for ever.
    room = 90_000 + case.number

    async def go():
        loop = asyncio.get_running_loop()
        _, stalled = await loop.create_connection(
            GameClient, sock=await stingy_connection(arena.server.port))
        stalled.port = local_port(stalled)
        assert (await stalled.login()).success
        assert (await stalled.enter(0, room)).success
        stalled.transport.pause_reading()
        talkers = [await offender(arena.server.port, room=room) for _ in range(3)]
        for t in talkers:               # 450 chats of 500 bytes: 230 KB for the stalled one
            t.transport.write(chat("t" * 500) * 150)
        for t in talkers:               # each heard all: the stalled one's are queued too
            await t.until(lambda t=t: len(t.chats) >= 450, timeout=30)
        stalled.transport.write_eof()
        await eventually(lambda: case.reasons_now(stalled.port), 15,
                         "the server to end the half-closed reader's session")
        stalled.transport.abort()
        await leave(*talkers)
        await case.finish()
        return stalled

    stalled = case.run(go(), timeout=120)
    case.assert_reason(stalled.port, "peer closed")


# -- connections that never log in, connections that come and go ------------------------

def sessions_by_port(log: str) -> dict[int, int]:
    return {int(addr.rsplit(":", 1)[1]): sid for sid, addr in connected_lines(log)
            if addr.startswith("127.0.0.1:")}


def ended_sessions(log: str) -> dict[int, str]:
    return {sid: why for sid, _, why in ended_lines(log)}


def test_two_thousand_idle_connections_cost_the_others_nothing(arena, case):
    n = 2000
    fds_before = arena.fd_count()

    async def go():
        loop = asyncio.get_running_loop()
        socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", arena.server.port))
            socks.append(s)
        ports = {s.getsockname()[1] for s in socks}
        await eventually(lambda: ports <= sessions_by_port(case.log()).keys(), 30,
                         f"the server to accept all {n} connections")
        await case.finish()
        # None was sent anything or closed, other than by a login deadline.
        ours = {sid for port, sid in sessions_by_port(case.log_text).items() if port in ports}
        ended = ended_sessions(case.log_text)
        assert all(ended[sid].startswith("login timeout") for sid in ours & ended.keys())
        for s in socks:
            try:
                data = s.recv(1)
            except BlockingIOError:
                continue
            assert data == b"", f"the server sent {data!r} to a connection that never logged in"
        for s in socks:
            s.close()
        await eventually(lambda: ours <= ended_sessions(case.log()).keys(), 30,
                         "the server to end every idle session")
        await eventually(lambda: arena.fd_count() <= fds_before, 30,
                         "the server to close every idle connection")

    case.run(go(), timeout=120)


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_a_storm_of_connect_and_close_leaks_nothing(arena, case, ending):
    n, concurrency = 3000, 200
    fds_before = arena.fd_count()

    async def one(loop, sem, connected):
        async with sem:
            s = socket.socket()
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", arena.server.port))
                # Counted, not told apart by local port: a connection closed
                # with RST frees its port at once, and the kernel may hand it
                # to a later connection of the same storm.
                connected.append(1)
                if ending == "rst":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                s.close()

    def storm_sessions():
        # Every connection of this case so far is the storm's. (Not by port:
        # a connection reset before the server asks for its peer's address
        # is logged as "connected from unknown" on uvloop.)
        return {sid for sid, _ in connected_lines(case.log())}

    connected = []

    async def go():
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        await asyncio.gather(*[one(loop, sem, connected) for _ in range(n)])
        assert len(connected) == n
        # Every connection of the storm became a session that was ended and logged.
        await eventually(lambda: len(storm_sessions()) == n, 30,
                         f"the server to log all {n} connections")
        sids = storm_sessions()
        await eventually(lambda: sids <= ended_sessions(case.log()).keys(), 30,
                         "the server to end every session of the storm")
        await eventually(lambda: arena.fd_count() <= fds_before, 30,
                         "the server to close every connection of the storm")
        await case.finish()

    case.run(go(), timeout=120)
