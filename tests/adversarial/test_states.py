"""Session state machine abuse against a real server while twenty bystanders chat.

CONNECTED -> LOGGED_IN -> IN_GAME: a packet the state does not allow gets its
defined answer (S_LOGIN / S_ENTER_GAME with success=false) or, for a chat, is
dropped with a log line; it never changes the state, never puts a player in a
room twice, and a chat dropped early never turns up later. A duplicate player
would show as a bystander hearing the offender's chat twice (the arena's
exact-once check) or the offender hearing a bystander twice.
"""
import pytest

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.client_dispatch import PACKET_IDS

from arena import assert_heard_bystanders_once_in_order, offender
from support import packet

C_LOGIN, C_ENTER_GAME, C_CHAT = (PACKET_IDS[n] for n in ("C_LOGIN", "C_ENTER_GAME", "C_CHAT"))


def login(account="", password="") -> bytes:
    return packet(C_LOGIN, pb.C_LOGIN(account=account, password=password).SerializeToString())


def enter(index=0, room=0) -> bytes:
    return packet(C_ENTER_GAME, pb.C_ENTER_GAME(playerIndex=index, roomId=room).SerializeToString())


def chat(msg) -> bytes:
    return packet(C_CHAT, pb.C_CHAT(msg=msg).SerializeToString())


def replies(c):
    """The answers to its requests (not the room's chats, nor its field's packets)."""
    return [(name, msg.success) for name, msg in c.inbox if name in ("S_LOGIN", "S_ENTER_GAME")]


async def in_room_hearing_bystanders(c, arena, count=40):
    """Wait until c has heard `count` bystander chats, then check each came once."""
    ids = set(arena.player_ids)
    await c.until(lambda: sum(pid in ids for pid, _ in c.chats) >= count)
    assert_heard_bystanders_once_in_order(c, ids)


def test_chat_before_login_is_dropped_and_never_delivered(arena, case):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port)
        # All in one write: the early chat, then login, enter and a chat, pipelined.
        c.transport.write(chat("before login") + login() + enter(0, 0) + chat(legit))
        entered = await c.expect("S_ENTER_GAME")
        assert entered.success
        await c.until(lambda: (entered.playerId, legit) in c.chats)
        await in_room_hearing_bystanders(c, arena)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        assert [m for pid, m in c.chats if pid == entered.playerId] == [legit]
        return c

    c = case.run(go())
    assert case.session_lines(c.port) == [f"session {case.session_id(c.port)}: "
                                              f"chat dropped in state connected"]
    case.assert_still_connected(c.port)


def test_chat_before_enter_is_dropped_and_never_delivered(arena, case):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port)
        assert (await c.login()).success
        c.transport.write(chat("before enter") + enter(0, 0) + chat(legit))
        entered = await c.expect("S_ENTER_GAME")
        assert entered.success
        await c.until(lambda: (entered.playerId, legit) in c.chats)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        assert [m for pid, m in c.chats if pid == entered.playerId] == [legit]
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    assert case.session_lines(c.port) == [f"session {sid}: chat dropped in state logged in"]


def test_chat_and_enter_while_the_database_logs_in_are_refused(arena, case):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port)
        c.transport.write(login(f"acct{case.number}", "pw") + chat("logging in") + enter(0, 0)
                          + login())
        await c.until(lambda: len(c.inbox) >= 3)
        # Enter and the second login are refused at once; the database answers later.
        assert replies(c) == [("S_ENTER_GAME", False), ("S_LOGIN", False), ("S_LOGIN", True)]
        c.inbox.clear()
        entered = await c.enter(1, 0)
        assert entered.success
        c.send_pkt(pb.C_CHAT(msg=legit))
        await c.until(lambda: (entered.playerId, legit) in c.chats)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    assert case.session_lines(c.port) == [
        f"session {sid}: chat dropped in state logging in",
        f"session {sid}: enter refused (state logging in, index 0 of 0)",
        f"session {sid}: login refused in state logging in"]


@pytest.mark.parametrize("index", [2, 2 ** 63, 2 ** 64 - 1])
def test_enter_with_an_index_out_of_range_is_refused(arena, case, index):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port)
        assert not (await c.enter(0, 0)).success            # not logged in yet
        assert (await c.login()).success
        assert not (await c.enter(index, 0)).success
        entered = await c.enter(1, 0)                       # still logged in: can enter
        assert entered.success
        c.send_pkt(pb.C_CHAT(msg=legit))
        await in_room_hearing_bystanders(c, arena)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    assert case.session_lines(c.port) == [
        f"session {sid}: enter refused (state connected, index 0 of 0)",
        f"session {sid}: enter refused (state logged in, index {index} of 2)"]


def test_a_second_login_is_refused_and_changes_nothing(arena, case):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port)
        c.transport.write(login() + login() + login(f"other{case.number}", "pw"))
        await c.until(lambda: len(c.inbox) >= 3)
        assert replies(c) == [("S_LOGIN", True), ("S_LOGIN", False), ("S_LOGIN", False)]
        entered = await c.enter(0, 0)
        assert entered.success
        c.send_pkt(pb.C_CHAT(msg=legit))
        await in_room_hearing_bystanders(c, arena)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    assert case.session_lines(c.port) == [
        f"session {sid}: login refused in state logged in"] * 2


def test_login_while_in_game_is_refused_and_keeps_the_player(arena, case):
    legit = f"legit {case.number}"

    async def go():
        c = await offender(arena.server.port, room=0)
        assert not (await c.login()).success
        assert not (await c.login(f"acct{case.number}", "pw")).success
        c.send_pkt(pb.C_CHAT(msg=legit))
        await in_room_hearing_bystanders(c, arena)
        assert [m for pid, m in c.chats if pid == c.player_id] == [legit]
        case.expect_chat(c.player_id, legit)
        await case.finish()
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    assert case.session_lines(c.port) == [f"session {sid}: login refused in state in game"] * 2


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_a_second_enter_is_refused_and_never_duplicates_the_player(arena, case, pipelined):
    legit = f"legit {case.number}"
    again = [(0, 0), (1, 0), (0, 1), (1, 77)]       # (index, room): same room, another room

    async def go():
        c = await offender(arena.server.port)
        assert (await c.login()).success
        if pipelined:
            c.transport.write(enter(0, 0) + b"".join(enter(i, r) for i, r in again) * 25
                              + chat(legit))
            await c.until(lambda: len(replies(c)) >= 1 + 100)
            assert replies(c) == [("S_ENTER_GAME", True)] + [("S_ENTER_GAME", False)] * 100
            player_id = next(m for n, m in c.inbox if n == "S_ENTER_GAME").playerId
        else:
            entered = await c.enter(0, 0)
            assert entered.success
            player_id = entered.playerId
            for index, room in again:
                assert not (await c.enter(index, room)).success
            c.send_pkt(pb.C_CHAT(msg=legit))
        await in_room_hearing_bystanders(c, arena, count=100)
        assert [m for pid, m in c.chats if pid == player_id] == [legit]
        case.expect_chat(player_id, legit)
        await case.finish()
        return c

    c = case.run(go())
    sid = case.session_id(c.port)
    refusals = [line for line in case.session_lines(c.port) if "enter refused" in line]
    assert len(refusals) == (100 if pipelined else 4)
    assert set(refusals) == {f"session {sid}: enter refused (state in game, index {i} of 2)"
                             for i in (0, 1)}


def move(x, y) -> bytes:
    return packet(PACKET_IDS["C_MOVE"], pb.C_MOVE(x=x, y=y).SerializeToString())


def test_moves_that_cheat_are_corrected_and_the_room_hears_none_of_them(arena, case):
    """Teleports, NaN, infinities and moves off the field, pipelined by the
    hundred in the bystanders' room: each is answered with its own
    correction, none moves the offender, nobody else hears of any, and the
    bystanders' chats all arrive."""
    legit = f"legit {case.number}"
    cheats = [(5000.0, 5000.0), (float("nan"), 1.0), (1.0, float("inf")),
              (float("-inf"), 0.0), (-1.0, 0.0), (1000.5, 3.0)]

    async def go():
        c = await offender(arena.server.port)
        assert (await c.login()).success
        entered = await c.enter(0, 0)
        assert entered.success
        start = (entered.x, entered.y)
        c.transport.write(b"".join(move(*xy) for xy in cheats) * 20 + chat(legit))
        await c.until(lambda: sum(n == "S_MOVE" for n, _ in c.inbox) >= 120)
        corrections = [(m.playerId, m.x, m.y) for n, m in c.inbox if n == "S_MOVE"]
        assert corrections == [(entered.playerId, *start)] * 120
        await in_room_hearing_bystanders(c, arena)
        case.expect_chat(entered.playerId, legit)
        await case.finish()
        return c

    case.run(go())
