"""Bounds on slots, rooms and logs, against a real server while twenty
bystanders chat: one address cannot take every connection, a room cannot be
overfilled or its queue grown without end, and a client provoking a log line
per packet neither floods the log nor slows anyone.

The server's own counts, as its periodic summary logs them (one a second
here), say how many were refused: the per-client lines themselves are
rate limited in this module, as they are by default.
"""
import re

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from arena import eventually, offender
from game_support import connect, connect_from, leave
from support import packet

PER_ADDRESS = 60
ROOM_PLAYERS = 30
ROOM_QUEUE = 100
PEER_LOG_RATE = 50
SERVER_ARGS = (
    "--exempt-networks", "",                        # loopback addresses count as any other
    "--max-sessions-per-address", str(PER_ADDRESS),
    "--max-room-players", str(ROOM_PLAYERS),
    "--max-room-queue", str(ROOM_QUEUE),
    "--packet-rate", "0",                           # floods are about the bounds below,
    "--max-packets-per-read", "0",                  # not the inbound rate or read cap
    "--peer-log-rate", str(PEER_LOG_RATE),
    "--log-summary-seconds", "1",
)
C_CHAT, S_CHAT = PACKET_IDS["C_CHAT"], PACKET_IDS["S_CHAT"]


def summed(log: str, label: str) -> int:
    """The total of `label N` over the summary lines of a log."""
    return sum(int(n) for line in log.splitlines() if " summary: " in line
               for n in re.findall(rf"\b{re.escape(label)} (\d+)", line))


async def summaries_reach(case, label: str, total: int) -> None:
    await eventually(lambda: summed(case.log(), label) >= total, 15,
                     f"the summaries to count {total} {label}")
    assert summed(case.log(), label) == total


def test_one_address_cannot_take_every_connection(arena, case):
    async def go():
        port = arena.server.port
        crowd = [await connect_from(port, "127.0.0.3") for _ in range(PER_ADDRESS + 40)]
        await eventually(lambda: sum(c.reason is not None for c in crowd) == 40, 15,
                         "the server to refuse the 40 past the cap")
        held = [c for c in crowd if c.reason is None]
        for c in held:                                  # the others are served
            assert (await c.login()).success
        assert sum(c.reason is not None for c in crowd) == 40
        other = await connect_from(port, "127.0.0.4")   # another address: served
        assert (await other.login()).success
        await leave(*held, other)
        again = await connect_from(port, "127.0.0.3")   # places freed are places again
        assert (await again.login()).success
        await leave(again)
        await case.finish()
        await summaries_reach(case, "connect/address_full", 40)

    case.run(go(), timeout=120)


def test_a_full_room_refuses_further_players(arena, case):
    async def go():
        port = arena.server.port
        room_zero_places = ROOM_PLAYERS - len(arena.player_ids)
        comers = await connect(port, room_zero_places + 5)
        entered, refused = [], []
        for c in comers:
            assert (await c.login()).success
            (entered if (await c.enter(0, 0)).success else refused).append(c)
        assert len(entered) == room_zero_places and len(refused) == 5
        for c in refused:                               # refused changes no state
            assert (await c.enter(0, 70_000 + case.number)).success
        await leave(*comers)
        await case.finish()
        await summaries_reach(case, "enter/room_full", 5)

    case.run(go(), timeout=120)


def test_a_room_queue_flooded_in_one_read_drops_what_does_not_fit(arena, case):
    n = 20_000

    async def go():
        c = await offender(arena.server.port, room=80_000 + case.number)
        c.transport.write(b"".join(packet(C_CHAT, pb.C_CHAT(msg=f"q{i}").SerializeToString())
                                   for i in range(n)))
        # A login while in game is refused at once: once that answer is here,
        # every chat before it was either queued in the room or dropped.
        assert not (await c.login()).success

        def heard():
            return [int(m[1:]) for pid, m in c.chats if pid == c.player_id]

        # Each chat is either heard back or counted dropped, never both, never lost.
        await eventually(lambda: len(heard()) + summed(case.log(), "chat/room_queue_full") == n,
                         30, "every chat heard back or counted as dropped")
        got = heard()
        assert got == sorted(set(got)), "what the room took came back once each, in order"
        assert ROOM_QUEUE <= len(got) < n
        await case.finish()
        assert summed(case.log(), "chat/room_queue_full") == n - len(got)
        await leave(c)

    case.run(go(), timeout=120)


def test_a_client_provoking_a_log_line_per_packet_floods_neither_log_nor_loop(arena, case):
    n = 100_000

    async def go():
        c = await offender(arena.server.port)           # connected, never logs in:
        chat = packet(C_CHAT, pb.C_CHAT(msg="x").SerializeToString())
        c.transport.write(chat * n)                     # each chat a refusal and a line
        assert (await c.login()).success                # the fence: all n handled
        await case.finish()
        await summaries_reach(case, "chat/wrong_state", n)
        await leave(c)

    case.run(go(), timeout=120)
    lines = case.log().count("chat dropped in state connected")
    # The budget: its burst (10 s worth) and its rate over the case, not one per packet.
    assert 0 < lines <= PEER_LOG_RATE * 10 + PEER_LOG_RATE * 60, lines
    suppressed = sum(int(k) for k in re.findall(r"(\d+) per-client log lines suppressed",
                                                 case.log()))
    assert suppressed >= n - lines
