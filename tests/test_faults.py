"""Faults: a database the server cannot use at start, that fails during a
login, or that goes away while the server runs (PostgreSQL stopped, crashed
or frozen); a handler that raises, a restart, and a kill during account
creation. The database faults run on both backends (`backend`, conftest.py)
where both can have them, on one backend where only it can."""
import asyncio
import ctypes
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys

import pytest

import netcore
from netcore_packets import Protocol_pb2 as pb

import netcore_game.server_handlers
import netcore_server.handlers
from netcore_server.db import SQLiteDatabase
from netcore_game.server import GameServer, ServerConfig
from db_backends import ACCOUNT_ROWS, CHARACTER_NAMES_OF, CHARACTER_ROWS, SLOTS_OF_EVERY_ACCOUNT
from game_support import ServerProcess, connect, in_game, leave

# What the database does is the same on every loop: these run on one.
LOOP = "asyncio"


def run_once(coro, timeout=60.0):
    return netcore.run(asyncio.wait_for(coro, timeout), LOOP)


def make_db(path, *accounts, backend=None):
    """A database as an earlier run leaves it, with these accounts (password "pw")."""
    async def go():
        db = SQLiteDatabase(path, scrypt_n=2 ** 10) if backend is None else backend.database()
        await db.open()
        for name in accounts:
            await db.login(name, "pw")
        await db.close()
    run_once(go())


def start_fails(tmp_path, *args, preexec_fn=None, db=None):
    """Start a server that must refuse to: exit status 2, one line saying why."""
    proc = ServerProcess(tmp_path, LOOP, *args, preexec_fn=preexec_fn, db=db)
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

def assert_alice_logs_in(tmp_path, **server_args):
    """A fresh server on the same database logs alice in and exits 0."""
    with ServerProcess(tmp_path, LOOP, **server_args) as server:
        async def go():
            (c,) = await connect(server.port)
            assert (await c.login("alice", "pw")).success
            await leave(c)
        run_once(go())
        assert server.stop() == 0


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
    assert_alice_logs_in(tmp_path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "game.db").write_bytes(b"players: alice, bob\n" * 200)
    line = start_fails(tmp_path)
    assert line.endswith("game.db: file is not a database")


def no_password_in(text):
    from pg_support import PASSWORD
    return PASSWORD not in text


def test_postgres_unreachable_at_start_is_a_clear_error(tmp_path):
    pytest.importorskip("asyncpg")
    from netcore_cluster.natsd import free_port
    port = free_port()                  # nothing listens there
    line = start_fails(tmp_path, db=f"postgresql://netcore:s3cret-pw@127.0.0.1:{port}/game")
    assert line == (f"netcore-server: cannot use database "
                    f"postgresql://netcore:***@127.0.0.1:{port}/game: connection refused")


def test_postgres_that_never_answers_is_a_clear_error_after_the_connect_timeout(tmp_path):
    pytest.importorskip("asyncpg")
    with socket.socket() as silent:     # the kernel accepts; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        line = start_fails(tmp_path, "--db-connect-timeout", "0.5",
                           db=f"postgresql://netcore@127.0.0.1:{port}/game")
    assert line.endswith(f"@127.0.0.1:{port}/game: no answer within 0.5 s")


@pytest.mark.parametrize("fault", ["wrong password", "no such database", "no such user"])
def test_postgres_refusing_us_at_start_is_a_clear_error(tmp_path, pg_backend, fault):
    from pg_support import PASSWORD, USER
    url = pg_backend.db_arg
    if fault == "wrong password":
        url, why = url.replace(PASSWORD, "not-it"), f'password authentication failed for user "{USER}"'
    elif fault == "no such user":
        url, why = url.replace(f"{USER}:", "nobody_here:"), 'password authentication failed for user "nobody_here"'
    else:
        url, why = url.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'
    line = start_fails(tmp_path, db=url)
    assert line.endswith(why) and "not-it" not in line and no_password_in(line)


def test_postgres_without_asyncpg_says_what_to_install(tmp_path):
    fake = tmp_path / "site" / "asyncpg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named \'asyncpg\'")\n')
    proc = subprocess.run([sys.executable, "-m", "netcore_game.cli", "--port", "0",
                           "--db", "postgresql://netcore:pw@127.0.0.1:5432/game"],
                          env={**os.environ, "PYTHONPATH": str(fake.parent)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("netcore-server:")]
    assert line == ("netcore-server: --db postgresql://netcore:***@127.0.0.1:5432/game: "
                    "PostgreSQL needs asyncpg (No module named 'asyncpg'): "
                    "pip install \"netcore[postgres]\"")


def test_a_migration_lock_held_past_the_statement_timeout_is_a_clear_error(tmp_path, pg_backend):
    """Another starter holding the migration lock for too long (the analogue
    of SQLite's file locked by another process): one line, exit 2."""
    from netcore_server.db_postgres import MIGRATION_LOCK
    make_db(None, "alice", backend=pg_backend)
    with pg_backend.cluster.hold(pg_backend.dbname,
                                 f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"):
        line = start_fails(tmp_path, "--db-statement-timeout", "0.3", db=pg_backend.db_arg)
    assert line.endswith("canceling statement due to statement timeout"), line
    # The lock was all: released, the same database serves again.
    assert_alice_logs_in(tmp_path, db=pg_backend.db_arg)


# -- the database failing during a login ----------------------------------------------

class FailingDatabase(SQLiteDatabase):
    """Fails, in its worker thread as a disk would, for one account."""

    def _login(self, account, password, *args):
        if account == "doomed":
            raise sqlite3.OperationalError("disk I/O error")
        return super()._login(account, password, *args)


def test_a_database_error_refuses_that_login_and_nothing_else(run, backend, caplog):
    if backend.name == "sqlite":
        db, error = backend.database(FailingDatabase), "disk I/O error"
    else:           # a real error from PostgreSQL, for that one account
        db, error = backend.database(), 'violates check constraint "no_doom"'

    async def go():
        async with GameServer(ServerConfig(port=0), db) as server:
            if backend.name == "postgres":
                backend.rows("ALTER TABLE accounts ADD CONSTRAINT no_doom "
                             "CHECK (name <> 'doomed')")
            a, b = await in_game(server.port, 2)
            (c,) = await connect(server.port)
            assert not (await c.login("doomed", "pw")).success
            assert (await c.login("alice", "pw")).success     # the refusal changed no state
            assert (await c.enter(0)).success
            a.send_pkt(pb.C_CHAT(msg="still up"))
            for x in (a, b, c):
                await x.until(lambda: (a.player_id, "still up") in x.chats)
            assert a.reason is b.reason is c.reason is None
            assert server.refusals.counts["login", "database_error"] == 1
    run(go())
    (line,) = [r.getMessage() for r in caplog.records if "failed in the database" in r.getMessage()]
    assert "login of 'doomed' failed in the database: " in line and line.endswith(error), line


def test_a_database_locked_mid_run_refuses_new_accounts_until_released(tmp_path, backend):
    """Another process holds the write lock: the login waits at most the
    backend's bound, is refused, and nothing else is held up."""
    bound = (("--db-busy-timeout", "0.2") if backend.name == "sqlite" else
             ("--db-statement-timeout", "0.3"))
    with ServerProcess(tmp_path, LOOP, *bound, db=backend.db_arg) as server:
        async def go():
            a, b = await connect(server.port, 2)
            with backend.writes_locked():   # held until the answer came: only a bound ends it
                assert not (await a.login("newcomer", "pw")).success
                assert (await b.login()).success
            assert (await a.login("newcomer", "pw")).success
            assert a.reason is None
            await leave(a, b)
        run_once(go())
        assert server.stop() == 0
    why = ("database is locked" if backend.name == "sqlite" else
           "canceling statement due to statement timeout")
    assert re.search(rf"login of 'newcomer' failed in the database: .*{why}",
                     server.log_text())
    assert no_password_in(server.log_text())


# -- PostgreSQL going away while the server runs ---------------------------------------

@pytest.mark.parametrize("outage", ["stopped", "crashed", "frozen"])
def test_postgres_going_away_while_serving(tmp_path, pg_backend, outage):
    """Stopped (clients told), crashed (every process gone at once) or frozen
    (connections open, nothing answers): logins during the outage are refused
    within the timeouts, players in game chat on, and once PostgreSQL is back
    the same netcore process logs players in again."""
    cluster = pg_backend.cluster
    make_db(None, "alice", backend=pg_backend)
    bounds = ("--db-connect-timeout", "1", "--db-statement-timeout", "1", "--login-timeout", "0")
    with ServerProcess(tmp_path, LOOP, *bounds, db=pg_backend.db_arg) as server:
        async def chat(a, b, tag):
            for i in range(5):
                a.send_pkt(pb.C_CHAT(msg=f"{tag}{i}"))
            await b.until(lambda: (a.player_id, f"{tag}4") in b.chats)

        async def go():
            a, b = await in_game(server.port, 2)
            (c,) = await connect(server.port)
            assert (await c.login("alice", "pw")).success     # the pool is connected
            await leave(c)
            d, e = await connect(server.port, 2)
            {"stopped": lambda: cluster.stop("fast"), "crashed": lambda: cluster.stop("immediate"),
             "frozen": cluster.freeze}[outage]()
            try:
                # No login timeout: an answer at all, while PostgreSQL is away,
                # is what the database's own timeouts give.
                assert not (await d.login("alice", "pw")).success
                assert not (await e.login("newcomer", "pw")).success
                await chat(a, b, "during")
            finally:
                if outage == "frozen":
                    cluster.thaw()
                else:
                    cluster.start()
            assert (await d.login("alice", "pw")).success
            assert (await e.login("newcomer", "pw")).success
            await chat(b, a, "after")
            assert None is a.reason is b.reason is d.reason is e.reason
            await leave(a, b, d, e)
        run_once(go(), timeout=120)
        assert server.stop() == 0
    log = server.log_text()
    assert "login of 'alice' failed in the database" in log and no_password_in(log)
    assert pg_backend.rows(CHARACTER_NAMES_OF, "newcomer") == [("Knight1",), ("Knight2",)]


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


def test_a_fault_answering_a_named_login_closes_that_session_only(run, tmp_path, monkeypatch,
                                                                   caplog):
    """The answer to a named login is sent after the database, outside any
    packet handler: a fault there still closes that session as a handler
    error, logged, instead of leaving the client waiting for ever."""
    real = netcore_server.handlers.finish_login

    def finish_login(session, account, characters, **kw):
        if account == "doomed":
            raise RuntimeError("a bug after the database")
        return real(session, account, characters, **kw)

    monkeypatch.setattr(netcore_server.handlers, "finish_login", finish_login)

    async def go():
        async with GameServer(ServerConfig(port=0),
                              SQLiteDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)) as server:
            a, b = await connect(server.port, 2)
            a.send_pkt(pb.C_LOGIN(account="doomed", password="pw"))
            await a.until(lambda: a.reason is not None)
            assert (await b.login("alice", "pw")).success and (await b.enter(0)).success
            assert b.reason is None and server.service.listening
            await leave(b)

    run(go())
    assert "answering the login of 'doomed' raised" in caplog.text
    assert "RuntimeError: a bug after the database" in caplog.text      # with its traceback
    assert re.search(r"disconnected: handler error: login answer: "
                     r"RuntimeError\('a bug after the database'\)", caplog.text)


# -- restart and crash consistency ----------------------------------------------------------

def test_characters_survive_a_restart(tmp_path, backend):
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

    with ServerProcess(tmp_path, LOOP, db=backend.db_arg) as first:
        created = run_once(login_both(first.port))
        assert first.stop() == 0
    rows = backend.rows(CHARACTER_ROWS)
    with ServerProcess(tmp_path, LOOP, db=backend.db_arg) as second:
        assert run_once(login_both(second.port, check_wrong=True)) == created
        assert second.stop() == 0
    assert created == [["Knight1", "Knight2"]] * 2
    assert backend.rows(CHARACTER_ROWS) == rows and len(rows) == 4


def test_a_kill_during_account_creation_leaves_a_consistent_database(tmp_path, backend):
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
    server = ServerProcess(tmp_path, LOOP, "--max-logins-in-flight", str(accounts),
                           db=backend.db_arg).start()
    try:
        created = run_once(storm(server))
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    backend.check_integrity()
    rows = backend.rows(ACCOUNT_ROWS)
    assert all(n == 2 for _, n in rows), rows
    slots = {}
    for account_id, slot in backend.rows(SLOTS_OF_EVERY_ACCOUNT):
        slots.setdefault(account_id, []).append(slot)
    assert all(s == [0, 1] for s in slots.values()) and len(slots) == len(rows)
    # Every account the server confirmed was committed, with the characters it sent.
    stored = {name: [n for (n,) in backend.rows(CHARACTER_NAMES_OF, name)] for name in created}
    assert stored == created and len(rows) < accounts

    with ServerProcess(tmp_path, LOOP, db=backend.db_arg) as again:
        async def go():
            a, b = await connect(again.port, 2)
            name, names = next(iter(created.items()))
            assert not (await a.login(name, "not the password")).success    # it is stored
            assert [p.name for p in (await a.login(name, "pw")).players] == names
            assert (await b.login("after-the-crash", "pw")).success
            await leave(a, b)
        run_once(go())
        assert again.stop() == 0
