"""The chat game against a real netcore-server process: login, enter, chat, state rules."""
import pytest

from netcore import make_packet
from netcore_packets import Protocol_pb2 as pb
from netcore_packets.Enum_pb2 import PLAYER_TYPE_KNIGHT

from game_support import ServerProcess, connect, in_game


@pytest.fixture
def server(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind) as proc:
        yield proc


def test_the_server_announces_itself_once_listening(server, loop_kind):
    assert server.banner.startswith("netcore-server ")
    assert f"listening on 127.0.0.1:{server.port} ({loop_kind}," in server.banner


def test_a_guest_login_gets_the_default_characters(run, server):
    async def go():
        (c,) = await connect(server.port)
        reply = await c.login()
        assert reply.success
        assert [(p.name, p.playerType) for p in reply.players] == [
            ("Knight1", PLAYER_TYPE_KNIGHT), ("Knight2", PLAYER_TYPE_KNIGHT)]
    run(go())


def test_accounts_are_created_then_checked_by_password(run, server):
    async def go():
        a, b, c = await connect(server.port, 3)
        created = await a.login("alice", "s3cret")
        assert created.success and [p.name for p in created.players] == ["Knight1", "Knight2"]
        again = await b.login("alice", "s3cret")
        assert again.success and [p.name for p in again.players] == ["Knight1", "Knight2"]
        # In-game ids, issued per login: the same characters, new ids.
        ids = [p.id for p in (*created.players, *again.players)]
        assert len(set(ids)) == 4 and 0 not in ids
        wrong = await c.login("alice", "guess")
        assert not wrong.success
        retry = await c.login("alice", "s3cret")                # a refusal changes no state
        assert retry.success
    run(go())
    with open(server.db, "rb") as f:
        assert b"s3cret" not in f.read(), "passwords must be stored hashed"


@pytest.mark.parametrize("index", [2, 2 ** 63, 2 ** 64 - 1])
def test_enter_with_an_index_out_of_range_is_refused(run, server, index):
    async def go():
        (c,) = await connect(server.port)
        assert (await c.login()).success
        assert not (await c.enter(index)).success
        assert (await c.enter(1)).success                       # still logged in, can enter
    run(go())


def test_packets_out_of_state_get_their_answer_and_change_nothing(run, server):
    async def go():
        c, other = await connect(server.port, 2)
        c.send_pkt(pb.C_CHAT(msg="before login"))               # dropped
        assert not (await c.enter(0)).success                   # not logged in
        assert (await c.login()).success
        assert not (await c.login()).success                    # second login
        c.send_pkt(pb.C_CHAT(msg="before enter"))               # dropped
        entered = await c.enter(0)
        assert entered.success
        assert not (await c.enter(0)).success                   # second enter
        assert not (await c.login()).success                    # login while in game
        (o,) = [other]
        assert (await o.login()).success and (await o.enter(0)).success
        c.send_pkt(pb.C_CHAT(msg="in game"))
        # Exactly once: the player is in the room once, the early chats never existed.
        assert await o.wait_chats(1) == [(entered.playerId, "in game")]
        assert await c.wait_chats(1) == [(entered.playerId, "in game")]
        o.send_pkt(pb.C_CHAT(msg="fence"))
        await c.wait_chats(2)
        assert c.chats[1][1] == "fence" and len(c.chats) == 2
        assert c.reason is None
    run(go())


def test_chat_reaches_every_player_of_the_room_in_order(run, server):
    async def go():
        room0 = await in_game(server.port, 3, room=0)
        room1 = await in_game(server.port, 2, room=7)
        for i in range(20):
            for c in room0 + room1:
                c.send_pkt(pb.C_CHAT(msg=f"{c.player_id}:{i}"))
        for c in room0:
            got = await c.wait_chats(60)
            assert sorted(got) == sorted((s.player_id, f"{s.player_id}:{i}")
                                         for s in room0 for i in range(20))
            for s in room0:     # each sender's chats in the order it sent them
                assert [m for pid, m in got if pid == s.player_id] == [
                    f"{s.player_id}:{i}" for i in range(20)]
        for c in room1:
            got = await c.wait_chats(40)
            assert {pid for pid, _ in got} == {s.player_id for s in room1}
        # Nothing from the other room arrives afterwards either.
        fence = room1[0]
        fence.send_pkt(pb.C_CHAT(msg="end"))
        for c in room1:
            await c.wait_chats(41)
            assert len(c.chats) == 41
    run(go())


def test_chat_length_is_checked_in_utf8_bytes(run, server):
    async def go():
        a, b = await in_game(server.port, 2)
        a.send_pkt(pb.C_CHAT(msg="x" * 513))            # over the 512-byte default
        a.send_pkt(pb.C_CHAT(msg="\u20ac" * 171))       # 171 chars, 513 bytes
        a.send_pkt(pb.C_CHAT(msg="\u20ac" * 170))       # 510 bytes: fine
        a.send_pkt(pb.C_CHAT(msg="y" * 512))
        got = await b.wait_chats(2)
        assert [m for _, m in got] == ["\u20ac" * 170, "y" * 512]
        a.send_pkt(pb.C_CHAT(msg="fence"))
        await b.wait_chats(3)
        assert len(b.chats) == 3 and a.reason is None
    run(go())
    assert server.stop() == 0           # the log is written by a thread: complete once stopped
    assert "chat of 513 bytes dropped (max 512)" in server.log_text()


def test_invalid_utf8_closes_the_sender_only(run, server):
    async def go():
        a, b = await in_game(server.port, 2)
        # C_CHAT with field 1 = b"\xff\xfe": not UTF-8, so not a valid proto3 string.
        a.send(make_packet(1004, b"\x0a\x02\xff\xfe"))
        await a.until(lambda: a.reason is not None)
        b.send_pkt(pb.C_CHAT(msg="still here"))
        assert await b.wait_chats(1) == [(b.player_id, "still here")]
        assert b.reason is None
    run(go())
    assert server.stop() == 0           # the log is written by a thread: complete once stopped
    assert "protocol error: malformed payload for packet id 1004" in server.log_text()


def test_a_database_in_a_missing_directory_is_a_clear_error(tmp_path, loop_kind):
    proc = ServerProcess(tmp_path, loop_kind)
    proc.args[proc.args.index("--db") + 1] = str(tmp_path / "nope" / "game.db")
    with pytest.raises(RuntimeError, match="directory .*nope does not exist"):
        proc.start()
    assert proc.proc.returncode == 2
    assert "Traceback" not in proc.log_text()
