"""In-game player ids as the original protocol defines them: issued per
character at login (S_LOGIN.players[i].id), the player's id once it enters
with that character (S_ENTER_GAME.playerId and every S_CHAT.playerId), never
issued twice while the server runs; the database id stays on the server."""
import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Struct_pb2 import Player as PlayerInfo

from netcore_server.db import Character, SQLiteDatabase
from netcore_server.player import MAX_PLAYER_ID, PlayerIdAllocator
from netcore_server import replies
from netcore_game.game import CHAT
from netcore_server.replies import (
    LoginReply,
    ProtobufReplies,
    character_tail,
    enter_reply,
    login_reply_payload,
    replies_for,
)
from netcore_game.server import GameServer, ServerConfig
from game_support import GameClient, ServerProcess, connect, leave


class LoginOnlyClient(GameClient):
    """A client written from the original protocol: it learns its id from
    S_LOGIN and never looks at S_ENTER_GAME.playerId."""

    async def enter_as(self, index, room=0):
        login = self.last_login
        self.send_pkt(pb.C_ENTER_GAME(playerIndex=index, roomId=room))
        assert (await self.expect("S_ENTER_GAME")).success
        self.my_id = login.players[index].id

    async def login(self, account="", password=""):
        self.last_login = await super().login(account, password)
        return self.last_login


@pytest.fixture
def server(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind) as proc:
        yield proc


@pytest.mark.parametrize("account", ["", "alice"], ids=["guest", "named"])
def test_the_id_sent_at_login_is_the_id_of_the_player_and_its_chats(run, server, account):
    async def go():
        (me,) = await connect(server.port, 1)
        other, = await connect(server.port, 1)
        login = await me.login(account, "pw" if account else "")
        assert login.success and len(login.players) == 2
        ids = [p.id for p in login.players]
        assert len(set(ids)) == 2 and 0 not in ids
        entered = await me.enter(1, room=3)
        assert entered.success and entered.playerId == ids[1]
        assert (await other.login()).success and (await other.enter(0, room=3)).success
        me.send_pkt(pb.C_CHAT(msg="mine"))
        assert await other.wait_chats(1) == [(ids[1], "mine")]
        assert await me.wait_chats(1) == [(ids[1], "mine")]
        await leave(me, other)
    run(go())


def test_a_client_that_reads_only_s_login_recognises_its_own_echo(run, server):
    async def go():
        a, b = await connect(server.port, 2)
        for c in (a, b):
            c.__class__ = LoginOnlyClient
        await a.login()
        await b.login("bob", "pw")
        await a.enter_as(0, room=9)
        await b.enter_as(1, room=9)
        assert a.my_id != b.my_id
        a.send_pkt(pb.C_CHAT(msg="from a"))
        b.send_pkt(pb.C_CHAT(msg="from b"))
        for c in (a, b):
            got = await c.wait_chats(2)
            mine = [m for pid, m in got if pid == c.my_id]
            assert mine == ["from a" if c is a else "from b"]
        await leave(a, b)
    run(go())


def test_ids_are_never_issued_twice(run, server):
    async def go():
        seen = []
        for round_ in range(3):
            guests = await connect(server.port, 5)
            named = await connect(server.port, 2)
            for c in guests:
                seen += [p.id for p in (await c.login()).players]
            for i, c in enumerate(named):        # the same accounts every round
                seen += [p.id for p in (await c.login(f"acct{i}", "pw")).players]
            await leave(*guests, *named)
        return seen

    seen = run(go(), timeout=60)
    assert len(seen) == 3 * 7 * 2 and len(set(seen)) == len(seen) and 0 not in seen


def test_the_database_id_stays_on_the_server(run, tmp_path):
    # Ids issued from 1,000,000 on, far from any database row id (1, 2, ...).
    async def go():
        db = SQLiteDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)
        async with GameServer(ServerConfig(port=0), db,
                              player_ids=PlayerIdAllocator(first=1_000_000)) as game:
            (c,) = await connect(game.port)
            login = await c.login("carol", "pw")
            assert [p.id for p in login.players] == [1_000_000, 1_000_001]
            assert (await c.enter(1)).playerId == 1_000_001
            (session,) = game.service.sessions.values()
            assert session.player.player_id == 1_000_001
            assert session.player.db_id == session.characters[1].db_id
            assert session.characters[1].db_id not in (1_000_000, 1_000_001)
            await leave(c)
    run(go())


def test_an_allocator_per_worker_gives_disjoint_ids():
    workers = [PlayerIdAllocator(first=k + 1, stride=4) for k in range(4)]
    issued = [i for w in workers for _ in range(50) for i in w.take(2)]
    assert len(set(issued)) == len(issued) == 400
    assert sorted(issued) == list(range(1, 401))


def test_the_allocator_goes_round_past_the_last_id_and_never_past_uint64():
    last = PlayerIdAllocator(first=MAX_PLAYER_ID - 1)
    assert last.take(2) == (MAX_PLAYER_ID - 1, MAX_PLAYER_ID)
    with pytest.raises(OverflowError, match="uint64"):      # both held: none to be had
        last.take(1)
    last.release((MAX_PLAYER_ID,), heard=False)
    assert last.take(1) == (MAX_PLAYER_ID,)
    space = PlayerIdAllocator(first=1 << 32, last=(2 << 32) - 1)   # one worker's range
    assert space.take(2) == (1 << 32, (1 << 32) + 1)
    space._next = (2 << 32) - 2
    assert space.take(2) == ((2 << 32) - 2, (2 << 32) - 1)
    # Round again, past the ids still held.
    assert space.take(1) == ((1 << 32) + 2,) and space.rounds == 1
    for first, stride, last, quarantine in ((0, 1, 5, 0), (MAX_PLAYER_ID + 1, 1, MAX_PLAYER_ID, 0),
                                            (1, 0, 5, 0), (1.5, 1, 5, 0), (10, 1, 9, 0),
                                            (1, 1, MAX_PLAYER_ID + 1, 0), (1, 1, 5, -1)):
        with pytest.raises(ValueError):
            PlayerIdAllocator(first=first, stride=stride, last=last, quarantine=quarantine)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_an_id_someone_may_have_heard_of_rests_before_it_is_issued_again():
    clock = Clock()
    ids = PlayerIdAllocator(first=1, last=4, quarantine=60, clock=clock)
    a = ids.take(2)
    ids.release(a, heard=True)                  # it entered a room: others heard of it
    b = ids.take(2)
    with pytest.raises(OverflowError, match="held or resting"):
        ids.take(1)
    ids.release(b, heard=False)                 # only its own client knew them
    assert ids.take(2) == b
    clock.now += 60
    assert ids.take(2) == a                     # rested
    # In a worker's range (2**32; here SMALL_RANGE, the least treated so)
    # the cursor never comes round within a rest: no more than a range/8 is
    # issued per quarantine, so only ids less than half a range ahead of the
    # cursor need a record.
    big = PlayerIdAllocator(first=1, last=PlayerIdAllocator.SMALL_RANGE, quarantine=60,
                            clock=clock)
    early = big.take(2)
    big.release(early, heard=True)
    assert not big.resting                      # just behind the cursor: a whole range ahead
    late = big.take(2)
    big._next = late[0] - 5                     # as if the cursor had come nearly round
    big.release(late, heard=True)
    assert set(big.resting) == set(late)
    with pytest.raises(OverflowError, match="a range/8"):
        for _ in range(PlayerIdAllocator.SMALL_RANGE // 16 + 1):
            big.release(big.take(2), heard=False)
    clock.now += 60                             # a new quarantine: ids again
    assert len(big.take(2)) == 2


def test_login_churn_never_runs_out_of_ids(run, tmp_path):
    """Guests that log in and go, and players that enter and go, in a range of
    eight ids: every login is served; the entered ones come back after a rest."""
    clock = Clock()

    async def go():
        allocator = PlayerIdAllocator(first=1, last=8, quarantine=60, clock=clock)
        async with GameServer(ServerConfig(port=0), SQLiteDatabase(tmp_path / "game.db"),
                              player_ids=allocator) as game:
            for _ in range(200):
                (c,) = await connect(game.port)
                login = await c.login()
                assert login.success and {p.id for p in login.players} <= set(range(1, 9))
                await leave(c)
                await until(lambda: not allocator.held)
            # Three players in game hold six ids; two that entered and left rest.
            players = await connect(game.port, 3)
            for c in players:
                assert (await c.login()).success and (await c.enter()).success
            (gone,) = await connect(game.port)
            gone_login = await gone.login()
            assert gone_login.success and (await gone.enter()).success
            await leave(gone)
            await until(lambda: len(allocator.resting) == 2)
            (late,) = await connect(game.port)
            assert not (await late.login()).success         # none to be had: refused, not closed
            assert game.refusals.counts["login", "no_player_ids"] == 1
            clock.now += 60
            login = await late.login()                      # rested: issued again
            assert login.success
            assert {p.id for p in login.players} == {p.id for p in gone_login.players}
            await leave(*players, late)

    run(go())


async def until(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)      # the server's side of a close: no event to await


@pytest.mark.parametrize("ids", [(1, 2), (127, 128), (16383, 16384), (2 ** 21 - 1, 2 ** 21),
                                 (2 ** 28 - 1, 2 ** 28), (2 ** 63, MAX_PLAYER_ID)])
@pytest.mark.parametrize("characters", [
    (Character(7, "Knight1", 1), Character(8, "Knight2", 1)),
    (Character(0, "", 0), Character(0, "\u00e9l\u00e8ve" * 40, 3)),     # defaults left out; a long name
])
def test_the_hand_built_login_reply_is_what_protobuf_makes(ids, characters):
    got = login_reply_payload([character_tail(c) for c in characters], ids)
    want = pb.S_LOGIN(success=True, players=[
        PlayerInfo(id=i, name=c.name, playerType=c.player_type)
        for i, c in zip(ids, characters)]).SerializeToString()
    assert got == want
    assert [p.id for p in pb.S_LOGIN.FromString(got).players] == list(ids)


@pytest.mark.parametrize("characters", [
    (Character(7, "Knight1", 1), Character(8, "Knight2", 1), Character(9, "Archer", 2)),
    (Character(0, "", 0), Character(0, "\u00e9l\u00e8ve" * 40, 3)),
])
def test_the_laid_out_login_reply_is_what_protobuf_makes(characters):
    """LoginReply keeps the reply's bytes per id size: ids of every size, one
    template reused across sizes and back, and ids that straddle a size
    boundary (the general path) all give protobuf's bytes."""
    reply = LoginReply(character_tail(c) for c in characters)
    n = len(characters)
    firsts = [1, 120, 127, 128, 16380, 2 ** 21 - 2, 2 ** 28, 2 ** 63, MAX_PLAYER_ID - n + 1, 5]
    for first in firsts:
        ids = tuple(range(first, first + n))
        want = pb.S_LOGIN(success=True, players=[
            PlayerInfo(id=i, name=c.name, playerType=c.player_type)
            for i, c in zip(ids, characters)]).SerializeToString()
        assert reply.payload(ids) == want, ids
        packet = reply.packet(ids)
        assert bytes(packet) == struct.pack("<HH", 4 + len(want), 1001) + want


@pytest.mark.parametrize("player_id", [1, 127, 128, 2 ** 21, 2 ** 35, MAX_PLAYER_ID])
def test_the_hand_built_enter_reply_is_what_protobuf_makes(player_id):
    want = pb.S_ENTER_GAME(success=True, playerId=player_id).SerializeToString()
    assert bytes(enter_reply(player_id)) == struct.pack("<HH", 4 + len(want), 1003) + want


@settings(max_examples=300, deadline=None)
@given(first=st.integers(1, MAX_PLAYER_ID), characters=st.lists(
    st.tuples(st.text(max_size=40), st.integers(-2 ** 31, 2 ** 31 - 1)), min_size=1, max_size=4))
def test_generated_login_replies_are_what_protobuf_makes(first, characters):
    """Any id run and any characters (names of any text, types of any int32,
    defaults left out): the laid-out reply is protobuf's, bytes for bytes."""
    chars = [Character(0, name, player_type) for name, player_type in characters]
    first = min(first, MAX_PLAYER_ID - len(chars) + 1)
    ids = tuple(range(first, first + len(chars)))
    want = pb.S_LOGIN(success=True, players=[
        PlayerInfo(id=i, name=c.name, playerType=c.player_type)
        for i, c in zip(ids, chars)]).SerializeToString()
    reply = LoginReply(character_tail(c) for c in chars)
    assert reply.payload(ids) == want
    assert reply.payload(ids) == want      # a second time, from the laid-out pieces
    assert bytes(enter_reply(first))[4:] == pb.S_ENTER_GAME(
        success=True, playerId=first).SerializeToString()


def _framed(pkt_id, message):
    body = message.SerializeToString()
    return struct.pack("<HH", 4 + len(body), pkt_id) + body


@settings(max_examples=200, deadline=None)
@given(first=st.integers(1, MAX_PLAYER_ID), characters=st.lists(
    st.tuples(st.text(max_size=40), st.integers(-2 ** 31, 2 ** 31 - 1)), min_size=1, max_size=4))
def test_both_reply_builders_send_what_protobuf_makes(first, characters):
    """The hand-laid replies (fast_replies, the default) and the protobuf
    ones (fast_replies = false) are the same framed bytes for any login."""
    chars = [Character(0, name, player_type) for name, player_type in characters]
    first = min(first, MAX_PLAYER_ID - len(chars) + 1)
    ids = tuple(range(first, first + len(chars)))
    login = _framed(1001, pb.S_LOGIN(success=True, players=[
        PlayerInfo(id=i, name=c.name, playerType=c.player_type) for i, c in zip(ids, chars)]))
    enter = _framed(1003, pb.S_ENTER_GAME(success=True, playerId=first))
    for builder in (replies_for(True, chars), replies_for(False, chars, CHAT.protocol)):
        assert bytes(builder.login(chars, ids)) == login
        assert bytes(builder.guest_login(ids)) == login
        assert bytes(builder.enter(first)) == enter


async def _raw_login_and_enter(port, account, password):
    """The S_LOGIN and S_ENTER_GAME bytes one connection gets, as sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def ask(pkt_id, message):
        writer.write(_framed(pkt_id, message))
        header = await reader.readexactly(4)
        return header + await reader.readexactly(struct.unpack("<H", header[:2])[0] - 4)

    try:
        login = await ask(1000, pb.C_LOGIN(account=account, password=password))
        return login, await ask(1002, pb.C_ENTER_GAME(playerIndex=1, roomId=4))
    finally:
        writer.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "protobuf"])
def test_fast_replies_can_be_switched_off(run, tmp_path, monkeypatch, fast):
    """With fast_replies = false the server builds its login and enter
    replies through protobuf: it answers, bytes for bytes as protobuf makes
    them, even with the hand-laid path broken (with it on, that breaks them)."""
    def broken(n):
        raise AssertionError("the hand-laid path was used")

    async def go():
        db = SQLiteDatabase(tmp_path / f"game-{fast}.db", scrypt_n=2 ** 10)
        async with GameServer(ServerConfig(port=0, fast_replies=fast), db) as game:
            monkeypatch.setattr(replies, "_varint", broken)
            assert isinstance(game.replies, ProtobufReplies) is (not fast)
            assert game.rooms.replies is game.replies
            got = []
            for account in ("", "erin"):
                try:
                    got.append(await asyncio.wait_for(
                        _raw_login_and_enter(game.port, account, "pw" if account else ""), 5))
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    got.append(None)
            return got

    got = run(go())
    if fast:
        assert got == [None, None]      # the broken path was the one taken
        return
    for (login, enter), first in zip(got, (1, 3)):
        players = pb.S_LOGIN.FromString(login[4:]).players
        assert [p.id for p in players] == [first, first + 1]
        assert login == _framed(1001, pb.S_LOGIN(success=True, players=[
            PlayerInfo(id=p.id, name=p.name, playerType=p.playerType) for p in players]))
        where = pb.S_ENTER_GAME.FromString(enter[4:])          # the field's start position
        assert enter == _framed(1003, pb.S_ENTER_GAME(success=True, playerId=first + 1,
                                                      x=where.x, y=where.y))
