"""Wire-level abuse against a real server while twenty bystanders chat.

Most offenders here are players of the bystanders' room (0): a valid chat
they send before the abuse must reach every bystander exactly once, and
nothing they send after it may reach anyone. Each case then checks that the
bystanders lost nothing (arena.Case.finish) and how the server logged the
offender's end.
"""
import asyncio
import socket
import struct

import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from arena import closed_by_server, offender
from support import packet

C_LOGIN, C_ENTER_GAME, C_CHAT, C_MOVE = (PACKET_IDS[n] for n in ("C_LOGIN", "C_ENTER_GAME",
                                                                  "C_CHAT", "C_MOVE"))
MAX_PACKET = 4096           # the server's default --max-packet-size


def chat(msg: str) -> bytes:
    return packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString())


def sandwich(case, arena, bad: bytes, reason: str):
    """An in-game offender writes chat, `bad`, chat in one write: the first
    chat is delivered, the server closes the offender with `reason`, the
    second chat never exists."""
    before, after = f"before {case.number}", f"after {case.number}"

    async def go():
        c = await offender(arena.server.port, room=0)
        c.transport.write(chat(before) + bad + chat(after))
        await closed_by_server(c)
        case.expect_chat(c.player_id, before)
        await case.finish()
        assert after not in [m for _, m in c.chats]
        return c

    c = case.run(go())
    case.assert_reason(c.port, reason)


# -- headers ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_a_header_size_below_4_closes_the_offender(arena, case, size):
    sandwich(case, arena, struct.pack("<HH", size, C_CHAT),
             f"protocol error: header size {size} < 4")


@pytest.mark.parametrize("size", [MAX_PACKET + 1, 65535])
def test_a_header_size_above_the_maximum_closes_the_offender(arena, case, size):
    sandwich(case, arena, struct.pack("<HH", size, C_CHAT),
             f"protocol error: header size {size} > maximum {MAX_PACKET}")


def test_a_huge_size_drip_fed_is_refused_from_its_header_alone(arena, case):
    # Four writes of one byte each and then nothing: if the server waited for
    # the 65,531 bytes of body it would never close the connection.
    async def go():
        c = await offender(arena.server.port, room=0)
        c.transport.write(chat("drip"))
        await c.until(lambda: (c.player_id, "drip") in c.chats)
        for b in struct.pack("<HH", 65535, C_CHAT):
            c.transport.write(bytes([b]))
            await asyncio.sleep(0)
        await closed_by_server(c)
        case.expect_chat(c.player_id, "drip")
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, f"protocol error: header size 65535 > maximum {MAX_PACKET}")


def test_a_maximal_chat_drip_fed_a_byte_at_a_time_arrives_once(arena, case):
    msg = f"{case.number:03d}" + "d" * 509                      # the 512-byte maximum

    async def go():
        c = await offender(arena.server.port, room=0)
        for b in chat(msg):
            c.transport.write(bytes([b]))
            await asyncio.sleep(0)
        await c.until(lambda: (c.player_id, msg) in c.chats)
        case.expect_chat(c.player_id, msg)
        await case.finish()
        return c

    c = case.run(go())
    case.assert_still_connected(c.port)


# -- endings in the middle of a packet -------------------------------------------------

def test_a_truncated_packet_then_fin_is_dropped_with_the_connection(arena, case):
    async def go():
        c = await offender(arena.server.port, room=0)
        c.transport.write(chat("whole"))
        await c.until(lambda: (c.player_id, "whole") in c.chats)   # the server has it
        c.transport.write(chat("cut short")[:7])
        c.transport.write_eof()
        await closed_by_server(c)
        case.expect_chat(c.player_id, "whole")
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, "peer closed")


def test_a_reset_in_the_middle_of_a_packet_drops_it_with_the_connection(arena, case):
    async def go():
        c = await offender(arena.server.port, room=0)
        c.transport.write(chat("whole"))
        await c.until(lambda: (c.player_id, "whole") in c.chats)
        c.transport.write(chat("cut short")[:7])
        sock = c.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.transport.abort()                                      # close with linger 0: RST
        await c.wait_closed()
        case.expect_chat(c.player_id, "whole")
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason_starts(c.port, "connection error: ")


def test_a_chat_then_half_close_is_delivered_to_everyone(arena, case):
    async def go():
        c = await offender(arena.server.port, room=0)
        c.transport.write(chat("last words"))
        c.transport.write_eof()
        await closed_by_server(c)
        assert (c.player_id, "last words") in c.chats      # the sender is one of everyone
        case.expect_chat(c.player_id, "last words")
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, "peer closed")


def test_a_login_then_half_close_is_still_answered(arena, case):
    async def go():
        c = await offender(arena.server.port)
        c.transport.write(packet(C_LOGIN, pb.C_LOGIN(account=f"halfclose{case.number}",
                                                    password="pw").SerializeToString()))
        c.transport.write_eof()
        await closed_by_server(c)
        await case.finish()
        return c

    c = case.run(go())
    assert [n for n, _ in c.inbox] == ["S_LOGIN"]


# -- packet ids and payloads ------------------------------------------------------------

@pytest.mark.parametrize("pkt_id", [0, 999, 1001, 1003, 1005, 1007, 1009, 1011, 1013, 65535])
def test_an_unknown_packet_id_closes_the_offender(arena, case, pkt_id):
    sandwich(case, arena, packet(pkt_id, b"\x0a\x01x"),
             f"protocol error: unknown packet id {pkt_id}")


# Corruptions of the protobuf wire format, per packet type, each a DecodeError.
CORRUPT = {
    C_LOGIN: {"bad wire type": b"\x0f",                 # field 1, wire type 7
              "truncated varint": b"\x0a\xff",          # account's length varint cut short
              "length past the end": b"\x0a\x05ab"},    # account of 5 bytes, 2 present
    C_ENTER_GAME: {"bad wire type": b"\x0e",            # field 1, wire type 6
                   "truncated varint": b"\x08\xff\xff",  # playerIndex cut short
                   "length past the end": b"\x1a\x05ab"},    # unknown field 3, 5 bytes, 2 present
    C_CHAT: {"bad wire type": b"\x0f",
             "truncated varint": b"\x0a\xff",
             "length past the end": b"\x0a\x05ab"},
    C_MOVE: {"bad wire type": b"\x0f",
             "truncated fixed32": b"\x0d\x00\x00",      # x: 4 bytes, 2 present
             "length past the end": b"\x1a\x05ab"},      # unknown field 3, 5 bytes, 2 present
}
NAMES = {C_LOGIN: "C_LOGIN", C_ENTER_GAME: "C_ENTER_GAME", C_CHAT: "C_CHAT", C_MOVE: "C_MOVE"}


@pytest.mark.parametrize("pkt_id, corruption", [
    pytest.param(pkt_id, what, id=f"{NAMES[pkt_id]}-{what.replace(' ', '-')}")
    for pkt_id, corrupt in CORRUPT.items() for what in corrupt])
def test_an_invalid_payload_in_game_closes_the_offender(arena, case, pkt_id, corruption):
    sandwich(case, arena, packet(pkt_id, CORRUPT[pkt_id][corruption]),
             f"protocol error: malformed payload for packet id {pkt_id}: "
             f"Error parsing message with type 'Protocol.{NAMES[pkt_id]}': Wire format was corrupt")


@pytest.mark.parametrize("pkt_id, corruption", [
    pytest.param(pkt_id, what, id=f"{NAMES[pkt_id]}-{what.replace(' ', '-')}")
    for pkt_id in (C_LOGIN, C_ENTER_GAME) for what in CORRUPT[pkt_id]])
def test_an_invalid_payload_before_the_game_closes_the_offender(arena, case, pkt_id, corruption):
    # In the state where the packet is expected: C_LOGIN on a fresh connection,
    # C_ENTER_GAME once logged in. Nothing of it may reach the room.
    async def go():
        c = await offender(arena.server.port)
        if pkt_id == C_ENTER_GAME:
            assert (await c.login()).success
        c.transport.write(packet(pkt_id, CORRUPT[pkt_id][corruption])
                          + packet(C_ENTER_GAME, b"") + chat("never"))
        await closed_by_server(c)
        assert [n for n, _ in c.inbox if n == "S_ENTER_GAME"] == []
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, f"protocol error: malformed payload for packet id {pkt_id}: "
                       f"Error parsing message with type 'Protocol.{NAMES[pkt_id]}': "
                       f"Wire format was corrupt")


def test_a_chat_that_is_not_utf8_closes_the_offender(arena, case):
    sandwich(case, arena, packet(C_CHAT, b"\x0a\x03ab\xff"),
             f"protocol error: malformed payload for packet id {C_CHAT}: "
             f"Error parsing message with type 'Protocol.C_CHAT': String field had bad UTF-8")


def test_an_account_name_that_is_not_utf8_closes_the_offender(arena, case):
    async def go():
        c = await offender(arena.server.port)
        c.transport.write(packet(C_LOGIN, b"\x0a\x02\xc3\x28"))
        await closed_by_server(c)
        assert c.inbox == []
        await case.finish()
        return c

    c = case.run(go())
    case.assert_reason(c.port, f"protocol error: malformed payload for packet id {C_LOGIN}: "
                       f"Error parsing message with type 'Protocol.C_LOGIN': "
                       f"String field had bad UTF-8")
