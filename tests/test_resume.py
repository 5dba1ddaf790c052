"""Resuming a session against a real netcore-server process
(docs/protocol.md, "Resuming a session"): a client cut mid-chat comes back
within the window and receives every packet exactly once, in order; every
other outcome (window past, token spent or unknown, count wrong, gap past
the buffer, not the first packet, a flood of guesses) is S_RESUME{success:
false} on a connection that goes on as a new one; C_LEAVE leaves at once;
others see nothing of a hold."""
import asyncio
import json
import socket
import struct
import subprocess
import sys

import pytest

from netcore_packets import Protocol_pb2 as pb

from game_support import ServerProcess, in_game, leave
from resume_support import ResumeClient, dial, log_shows, reset, resume


@pytest.fixture
def server(tmp_path, loop_kind):
    with ServerProcess(tmp_path, loop_kind) as proc:
        yield proc


def test_a_client_cut_mid_chat_resumes_and_gets_every_chat_once_in_order(run, server):
    async def go():
        b, c = await in_game(server.port, 2)
        a = await dial(server.port)
        entered = await a.enter_resumable()
        assert len(entered.resumeToken) >= 22        # at least 128 random bits, base64
        # Mid-chat: b keeps talking while a's connection is reset.
        for i in range(50):
            b.send_pkt(pb.C_CHAT(msg=f"b{i}"))
            a.send_pkt(pb.C_CHAT(msg=f"a{i}"))
        await a.until(lambda: len(a.chats) >= 10)
        reset(a)
        await log_shows(server, "held for a resume")
        for i in range(50, 100):
            b.send_pkt(pb.C_CHAT(msg=f"b{i}"))
            c.send_pkt(pb.C_CHAT(msg=f"c{i}"))
        await c.wait_chats(50 + 50 + 100)
        await asyncio.sleep(2)                       # the player is away for 2 s
        a2, answer = await resume(server.port, entered.resumeToken, a.received)
        assert answer.success and answer.playerId == entered.playerId
        assert answer.resumeToken and answer.resumeToken != entered.resumeToken
        b.send_pkt(pb.C_CHAT(msg="after"))
        a2.send_pkt(pb.C_CHAT(msg="me again"))
        everything = await c.wait_chats(202)
        await a2.wait_chats(202 - len(a.chats))
        # Precisely what it would have seen had it never dropped: c's view.
        assert a.chats + a2.chats[:202 - len(a.chats)] == everything
        assert (entered.playerId, "me again") in everything[-2:]     # its chats go on
        await leave(a2, b, c)
    run(go())


def test_a_resume_while_the_old_connection_still_looks_open_closes_it(run, server):
    async def go():
        (b,) = await in_game(server.port, 1)
        a = await dial(server.port)
        entered = await a.enter_resumable()
        b.send_pkt(pb.C_CHAT(msg="one"))
        await a.wait_chats(1)
        # The old connection is half-open: the server has not noticed anything.
        a2, answer = await resume(server.port, entered.resumeToken, a.received)
        assert answer.success
        await a.until(lambda: a.reason is not None)
        await log_shows(server, "resumed elsewhere")
        b.send_pkt(pb.C_CHAT(msg="two"))
        assert await a2.wait_chats(1) == [(b.player_id, "two")]
        assert a.chats == [(b.player_id, "one")]
        await leave(a2, b)
    run(go())


def test_a_resume_on_the_same_connection_is_refused_and_it_goes_on(run, server):
    async def go():
        a = await dial(server.port)
        entered = await a.enter_resumable()
        a.send_pkt(pb.C_RESUME(token=entered.resumeToken, received=0))
        assert not (await a.expect("S_RESUME")).success
        a.send_pkt(pb.C_CHAT(msg="still here"))
        assert await a.wait_chats(1) == [(entered.playerId, "still here")]
        # Not a new connection's first packet: refused, the new one may log in.
        fresh = await dial(server.port)
        assert (await fresh.login()).success
        fresh.send_pkt(pb.C_RESUME(token=entered.resumeToken, received=0))
        assert not (await fresh.expect("S_RESUME")).success
        await leave(a, fresh)
    run(go())


@pytest.mark.parametrize("case", ["unknown", "spent", "wrong_count"])
def test_a_bad_resume_is_refused_and_the_connection_can_log_in(run, server, case):
    async def go():
        (b,) = await in_game(server.port, 1)
        a = await dial(server.port)
        entered = await a.enter_resumable()
        b.send_pkt(pb.C_CHAT(msg="hello"))
        await a.wait_chats(1)
        reset(a)
        await log_shows(server, "held for a resume")
        token, received = entered.resumeToken, a.received
        if case == "unknown":
            token = "x" * len(token)
        elif case == "spent":
            good, answer = await resume(server.port, token, received)
            assert answer.success
        else:
            received += 1                           # one more than was sent
        bad, answer = await resume(server.port, token, received)
        assert not answer.success and not answer.resumeToken
        assert (await bad.login()).success            # a new connection as any other
        if case == "wrong_count":                   # the hold went on: the right count works
            good, answer = await resume(server.port, token, a.received)
            assert answer.success
        await leave(bad, b, *([good] if case != "unknown" else []))
    run(go())


def test_after_the_window_the_player_has_left_and_the_token_is_refused(run, tmp_path,
                                                                       loop_kind):
    async def go(server):
        a = await dial(server.port)
        entered = await a.enter_resumable()
        reset(a)
        await log_shows(server, "held for a resume")
        await log_shows(server, "its hold ended (the resume window ran out)")
        late, answer = await resume(server.port, entered.resumeToken, a.received)
        assert not answer.success
        await leave(late)

    with ServerProcess(tmp_path, loop_kind, "--resume-window", "0.5") as server:
        run(go(server))


def test_a_gap_past_the_buffer_ends_the_hold_and_the_resume_is_refused(run, tmp_path,
                                                                     loop_kind):
    async def go(server):
        (b,) = await in_game(server.port, 1)
        a = await dial(server.port)
        entered = await a.enter_resumable()
        reset(a)
        await log_shows(server, "held for a resume")
        for i in range(40):                         # 40 chats of 100 bytes: past 2 KiB
            b.send_pkt(pb.C_CHAT(msg=f"{i:03d}" + "." * 97))
        await b.wait_chats(40)
        await log_shows(server, "bytes were sent to it meanwhile")
        late, answer = await resume(server.port, entered.resumeToken, a.received)
        assert not answer.success
        await leave(late, b)

    with ServerProcess(tmp_path, loop_kind, "--resume-buffer-bytes", "2048") as server:
        run(go(server))


def test_a_flood_of_guessed_tokens_spends_the_address_budget(run, tmp_path, loop_kind):
    async def go(server):
        answers = []
        for i in range(5):
            guess, answer = await resume(server.port, f"guess{i}", 0)
            answers.append((answer.success, guess))
        assert not any(ok for ok, _ in answers)
        await leave(*(g for _, g in answers))
        await log_shows(server, "failed logins or resumes from", count=2)  # written in turn
        log = server.log_text()
        assert log.count("the token is not known") == 3
        assert log.count("failed logins or resumes from") == 2
        assert "guess" not in log                   # tokens are never logged

    with ServerProcess(tmp_path, loop_kind, "--exempt-networks", "",
                       "--max-failed-logins-per-address", "3") as server:
        run(go(server))


def test_c_leave_leaves_at_once_with_no_hold(run, server):
    async def go():
        (b,) = await in_game(server.port, 1)
        a = await dial(server.port)
        entered = await a.enter_resumable()
        a.send_pkt(pb.C_LEAVE())
        # It may enter again (the leave was handled first): room 1 this time.
        a.send_pkt(pb.C_ENTER_GAME(playerIndex=0, roomId=1))
        again = await a.expect("S_ENTER_GAME")
        assert again.success and not again.resumeToken
        b.send_pkt(pb.C_CHAT(msg="room 0, after the leave"))
        await b.wait_chats(1)
        a.send_pkt(pb.C_CHAT(msg="room 1"))
        assert await a.wait_chats(1) == [(again.playerId, "room 1")]
        reset(a)
        late, answer = await resume(server.port, entered.resumeToken, 0)
        assert not answer.success                   # C_LEAVE spent the token
        await leave(late, b)
    run(go())


def test_the_field_sees_nothing_of_a_hold_and_a_despawn_when_it_ends(run, tmp_path,
                                                                     loop_kind):
    async def go(server):
        b = await dial(server.port)
        await b.enter_resumable()
        plain = await dial(server.port)
        assert (await plain.login()).success
        plain.send_pkt(pb.C_ENTER_GAME(playerIndex=0))
        plain_entered = await plain.expect("S_ENTER_GAME")
        assert plain_entered.success and not plain_entered.resumeToken
        a = await dial(server.port)
        entered = await a.enter_resumable()
        await b.until(lambda: sum(len(m.players) for n, m in b.inbox if n == "S_SPAWN") == 2)
        # A client that never asked leaves at once: despawned.
        reset(plain)
        assert list((await b.expect("S_DESPAWN")).playerIds) == [plain_entered.playerId]
        # A resumable one is held: nothing happens to anyone until the window ends.
        reset(a)
        await log_shows(server, "held for a resume")
        b.send_pkt(pb.C_CHAT(msg="fence"))
        await b.wait_chats(1)
        assert not any(n == "S_DESPAWN" for n, _ in b.inbox)
        await log_shows(server, "its hold ended")
        assert list((await b.expect("S_DESPAWN")).playerIds) == [entered.playerId]
        await leave(b)

    with ServerProcess(tmp_path, loop_kind, "--field-size", "10", "--view-radius", "50",
                       "--resume-window", "1") as server:
        run(go(server))


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def test_field_packets_follow_a_resumed_player_to_its_new_connection(run, tmp_path, loop_kind):
    async def go(server):
        b = await dial(server.port)
        b_entered = await b.enter_resumable()
        a = await dial(server.port)
        a_entered = await a.enter_resumable()
        await b.until(lambda: any(n == "S_SPAWN" for n, _ in b.inbox))
        step = 1 if a_entered.x < 5 else -1              # stay inside the 10 x 10 field
        reset(b)
        await log_shows(server, "held for a resume")
        a.send_pkt(pb.C_MOVE(x=a_entered.x + step, y=a_entered.y))    # b misses this one
        await a.expect("S_MOVE")
        b2, answer = await resume(server.port, b_entered.resumeToken, b.received)
        assert answer.success
        missed = await b2.expect("S_MOVE")
        assert (missed.playerId, missed.x) == (a_entered.playerId, f32(a_entered.x + step))
        a.send_pkt(pb.C_MOVE(x=a_entered.x + 2 * step, y=a_entered.y))  # live, to b2
        live = await b2.expect("S_MOVE")
        assert (live.playerId, live.x) == (a_entered.playerId, f32(a_entered.x + 2 * step))
        up = 1 if b_entered.y < 5 else -1
        b2.send_pkt(pb.C_MOVE(x=b_entered.x, y=b_entered.y + up))      # b moves as itself
        mine = await b2.expect("S_MOVE")
        assert (mine.playerId, mine.y) == (b_entered.playerId, f32(b_entered.y + up))
        await leave(a, b2)

    with ServerProcess(tmp_path, loop_kind, "--field-size", "10", "--view-radius", "50",
                       "--max-step", "5") as server:
        run(go(server))


def dummy(port, loop_kind, *args):
    out = subprocess.run(
        [sys.executable, "-m", "netcore_dummy.cli", "--port", str(port), "--json",
         "--loop", loop_kind, *args], capture_output=True, text=True, timeout=120)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def test_dummies_that_drop_and_resume_at_random_lose_no_chat(server, loop_kind):
    rc, report, err = dummy(server.port, loop_kind, "--clients", "40", "--rooms", "2",
                            "--rate", "10", "--duration", "3", "--resumable",
                            "--drop-every", "1")
    assert rc == 0, (report, err)
    resumes = report["resumes"]
    assert resumes["dropped"] >= 40 and resumes["resumed"] == resumes["dropped"], resumes
    assert resumes["failed"] == 0 and resumes["gap_ms"]["p99"] > 0
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["out_of_order"] == 0
    assert report["unique"] == report["expected"] > 0
    assert "held for a resume" in server.log_text() or "resumed elsewhere" in server.log_text()


def test_the_dummy_fails_its_run_when_resumes_are_refused(tmp_path, loop_kind):
    # A server that does not resume: every cut client is refused, and with
    # it the chats it missed: the run says so.
    with ServerProcess(tmp_path, loop_kind, "--resume-window", "0") as server:
        rc, report, err = dummy(server.port, loop_kind, "--clients", "10", "--rate", "10",
                                "--duration", "2", "--resumable", "--drop-every", "1")
    assert rc == 1 and not report["ok"]
    assert report["resumes"]["failed"] == report["resumes"]["dropped"] > 0
    assert any("resume refused" in e for e in report["errors"])


@pytest.mark.parametrize("args, error", [
    (["--drop-every", "1"], "--drop-every needs --resumable"),
    (["--resumable", "--drop-every", "1", "--transport", "ws"], "--drop-every needs"),
    (["--resumable", "--drop-every", "-1"], "--drop-every must be"),
])
def test_the_dummy_refuses_drops_it_cannot_do(args, error):
    out = subprocess.run([sys.executable, "-m", "netcore_dummy.cli", "--port", "1", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and error in out.stderr, out.stderr


def test_a_websocket_client_resumes_over_tcp(run, tmp_path, loop_kind):
    # The hold is the session's, not its transport's: a browser that lost
    # its WebSocket may come back over either.
    from netcore import ClientService

    async def go(server):
        (b,) = await in_game(server.port, 1)
        service = ClientService(ResumeClient, port=server.ws_port, count=1, transport="ws")
        (a,) = await service.start()
        entered = await a.enter_resumable()
        b.send_pkt(pb.C_CHAT(msg="one"))
        await a.wait_chats(1)
        a.disconnect()                               # a close frame: the peer is gone
        await log_shows(server, "held for a resume")
        b.send_pkt(pb.C_CHAT(msg="two"))
        await b.wait_chats(2)
        a2, answer = await resume(server.port, entered.resumeToken, a.received)
        assert answer.success
        assert await a2.wait_chats(1) == [(b.player_id, "two")]
        await leave(a2, b)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ws_port = probe.getsockname()[1]
    with ServerProcess(tmp_path, loop_kind, "--ws-port", str(ws_port)) as server:
        run(go(server))
