"""Faults: a database the server cannot use at start or that fails during a
login, a handler that raises, a restart, and a kill during account creation."""
import asyncio
import ctypes
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest

import netcore
from netcore_packets import Protocol_pb2 as pb

import netcore_game.server_handlers
from netcore_game.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from game_support import ServerProcess, connect, in_game, leave

# What the database does is the same on every loop: these run on one.
LOOP = "asyncio"


def run_once(coro, timeout=60.0):
    return netcore.run(asyncio.wait_for(coro, timeout), LOOP)


def make_db(path, *accounts):
    """A database as an earlier run leaves it, with these accounts (password "pw")."""
    async def go():
        db = SQLiteDatabase(path, scrypt_n=2 ** 10)
        await db.open()
        for name in accounts:
            await db.login(name, "pw")
        await db.close()
    run_once(go())


def start_fails(tmp_path, *args, preexec_fn=None):
    """Start a server that must refuse to: exit status 2, one line saying why."""
    proc = ServerProcess(tmp_path, LOOP, *args, preexec_fn=preexec_fn)
    try:
        with pytest.raises(RuntimeError, match="server did not start"):
            proc.start()
        assert proc.proc.returncode == 2
    finally:
        if proc.proc is not None:           # None: start() skipped the test
            proc.stop(sig=None)
    log = proc.log_text()
    assert "Traceback" not in log
    (line,) = [l for l in log.splitlines() if l.startswith("netcore-server:")]
    return line


# Linux capabilities (linux/capability.h, linux/prctl.h).
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


def as_a_plain_user():
    """A preexec_fn under which the file modes apply to the server: root
    ignores them unless it gives up its DAC capabilities before exec."""
    if os.geteuid() != 0:
        return None
    if not sys.platform.startswith("linux"):
        pytest.skip("root ignores file modes and cannot drop that here")
    libc = ctypes.CDLL(None, use_errno=True)

    def drop():
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop


# -- the database at start ---------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_read_only_database_is_a_clear_error(tmp_path):
    make_db(tmp_path / "game.db", "alice")
    os.chmod(tmp_path / "game.db", 0o444)
    preexec = as_a_plain_user()
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(tmp_path / 'game.db')!r}, 'r+b')"],
                               preexec_fn=preexec, capture_output=True)
    except subprocess.SubprocessError:
        pytest.skip("cannot give up root's file access here")
    if probe.returncode == 0:
        pytest.skip("cannot make a file read-only for the server here")
    line = start_fails(tmp_path, preexec_fn=preexec)
    assert line.endswith("game.db: attempt to write a readonly database")


def test_a_database_locked_by_another_process_is_a_clear_error(tmp_path):
    make_db(tmp_path / "game.db", "alice")
    holder = sqlite3.connect(tmp_path / "game.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = start_fails(tmp_path, "--db-busy-timeout", "0.2")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert line.endswith("game.db: database is locked")
    # The lock was all: released, the same file serves again.
    with ServerProcess(tmp_path, LOOP) as server:
        async def go():
            (c,) = await connect(server.port)
            assert (await c.login("alice", "pw")).success
            await leave(c)
        run_once(go())
        assert server.stop() == 0


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "game.db").write_bytes(b"players: alice, bob\n" * 200)
    line = start_fails(tmp_path)
    assert line.endswith("game.db: file is not a database")


# -- the database failing during a login ----------------------------------------------

class FailingDatabase(SQLiteDatabase):
    """Fails, in its worker thread as a disk would, for one account."""

    def _login(self, account, password, *args):
        if account == "doomed":
            raise sqlite3.OperationalError("disk I/O error")
        return super()._login(account, password, *args)


def test_a_database_error_refuses_that_login_and_nothing_else(run, tmp_path, caplog):
    async def go():
        db = FailingDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)
        async with GameServer(ServerConfig(port=0), db) as server:
            a, b = await in_game(server.port, 2)
            (c,) = await connect(server.port)
            assert not (await c.login("doomed", "pw")).success
            assert (await c.login("alice", "pw")).success     # the refusal changed no state
            assert (await c.enter(0)).success
            a.send_pkt(pb.C_CHAT(msg="still up"))
            for x in (a, b, c):
                await x.until(lambda: (a.player_id, "still up") in x.chats)
            assert a.reason is b.reason is c.reason is None
    run(go())
    assert "login of 'doomed' failed in the database: disk I/O error" in caplog.text


def test_a_database_locked_mid_run_refuses_new_accounts_until_released(tmp_path):
    with ServerProcess(tmp_path, LOOP, "--db-busy-timeout", "0.2") as server:
        async def go():
            a, b = await connect(server.port, 2)
            holder = sqlite3.connect(server.db, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                assert not (await a.login("newcomer", "pw")).success
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert (await a.login("newcomer", "pw")).success
            assert (await b.login()).success and a.reason is None
            await leave(a, b)
        run_once(go())
        assert server.stop() == 0
    assert "login of 'newcomer' failed in the database: database is locked" in server.log_text()


# -- a handler that raises -------------------------------------------------------------

def test_a_handler_that_raises_closes_its_session_only(run, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    real = netcore_game.server_handlers.handle_C_CHAT

    def handle_C_CHAT(session, pkt):
        if pkt.msg == "boom":
            raise RuntimeError("a bug in a handler")
        return real(session, pkt)

    # Before the server exists: its dispatcher takes the handlers when made.
    monkeypatch.setattr(netcore_game.server_handlers, "handle_C_CHAT", handle_C_CHAT)

    async def go():
        async with GameServer(ServerConfig(port=0), SQLiteDatabase(tmp_path / "game.db")) as server:
            a, b = await in_game(server.port, 2)
            (victim,) = [s for s in server.service.sessions.values()
                         if s.player.player_id == a.player_id]
            a.send_pkt(pb.C_CHAT(msg="boom"))
            await a.until(lambda: a.reason is not None)
            b.send_pkt(pb.C_CHAT(msg="still served"))
            assert await b.wait_chats(1) == [(b.player_id, "still served")]
            assert b.reason is None and server.service.listening
            (c,) = await in_game(server.port, 1)            # and newcomers too
            assert c.reason is None
            return victim.session_id

    sid = run(go())
    assert f"session {sid}: handler for packet 1004 raised" in caplog.text
    assert "RuntimeError: a bug in a handler" in caplog.text          # with its traceback
    # Its end is logged once (by netcore.session, naming the peer as host:port).
    ends = [r for r in caplog.records if f"session {sid} " in r.getMessage()
            and "disconnected" in r.getMessage()]
    assert [(r.name, r.levelname) for r in ends] == [("netcore.session", "WARNING")]
    assert re.fullmatch(rf"session {sid} from 127\.0\.0\.1:\d+ disconnected: handler error: "
                        rf"packet 1004: RuntimeError\('a bug in a handler'\)",
                        ends[0].getMessage())


# -- restart and crash consistency ----------------------------------------------------------

def character_rows(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT a.name, c.id, c.slot, c.name FROM characters c "
                          "JOIN accounts a ON a.id = c.account_id ORDER BY c.id").fetchall()
    finally:
        db.close()


def test_characters_survive_a_restart(tmp_path):
    # The wire carries in-game ids, new at every login; the database rows are
    # what must survive: the same accounts and characters, none made twice.
    async def login_both(port, check_wrong=False):
        a, b, c = await connect(port, 3)
        if check_wrong:     # refused, so the account was there (or it would be made)
            assert not (await c.login("alice", "wrong")).success
        names = [[p.name for p in (await x.login(name, "pw")).players]
                 for x, name in ((a, "alice"), (b, "bob"))]
        await leave(a, b, c)
        return names

    with ServerProcess(tmp_path, LOOP) as first:
        created = run_once(login_both(first.port))
        assert first.stop() == 0
    rows = character_rows(tmp_path / "game.db")
    with ServerProcess(tmp_path, LOOP) as second:
        assert run_once(login_both(second.port, check_wrong=True)) == created
        assert second.stop() == 0
    assert created == [["Knight1", "Knight2"]] * 2
    assert character_rows(tmp_path / "game.db") == rows and len(rows) == 4


def test_a_kill_during_account_creation_leaves_a_consistent_database(tmp_path):
    accounts = 150

    async def storm(server):
        clients = await connect(server.port, accounts)

        async def create(i, c):
            c.send_pkt(pb.C_LOGIN(account=f"user{i}", password="pw"))
            return f"user{i}", await c.expect("S_LOGIN", timeout=30)

        replies = [asyncio.ensure_future(create(i, c)) for i, c in enumerate(clients)]
        created = {}
        for reply in asyncio.as_completed(replies):
            name, msg = await reply
            assert msg.success
            created[name] = [p.name for p in msg.players]
            if len(created) == 20:      # some answered, many still in flight
                break
        server.proc.send_signal(signal.SIGKILL)
        for r in replies:
            r.cancel()
        await asyncio.gather(*replies, return_exceptions=True)
        return created

    # All 150 admitted at once (from loopback, no per-address bound applies).
    server = ServerProcess(tmp_path, LOOP, "--max-logins-in-flight", str(accounts)).start()
    try:
        created = run_once(storm(server))
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    db = sqlite3.connect(server.db)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    rows = db.execute("""SELECT a.name, count(c.id), group_concat(c.slot)
                         FROM accounts a LEFT JOIN characters c ON c.account_id = a.id
                         GROUP BY a.id""").fetchall()
    assert all(n == 2 and sorted(slots.split(",")) == ["0", "1"] for _, n, slots in rows), rows
    assert db.execute("SELECT count(*) FROM characters").fetchone()[0] == 2 * len(rows)
    # Every account the server confirmed was committed, with the characters it sent.
    stored = {name: [n for (n,) in db.execute(
        "SELECT c.name FROM characters c JOIN accounts a ON a.id = c.account_id "
        "WHERE a.name = ? ORDER BY c.slot", (name,))] for name in created}
    db.close()
    assert stored == created and len(rows) < accounts

    with ServerProcess(tmp_path, LOOP) as again:
        async def go():
            a, b = await connect(again.port, 2)
            name, names = next(iter(created.items()))
            assert not (await a.login(name, "not the password")).success    # it is stored
            assert [p.name for p in (await a.login(name, "pw")).players] == names
            assert (await b.login("after-the-crash", "pw")).success
            await leave(a, b)
        run_once(go())
        assert again.stop() == 0
