"""The database layer: off the event loop, consistent, and behind its interface.

Every test that takes `backend` runs against SQLite and against a real
PostgreSQL (conftest.py, pg_support.py): the same answers from both.
"""
import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from netcore_packets import Protocol_pb2 as pb

import netcore_server.db
from netcore_server.db import (
    SCHEMA_VERSION, DatabaseError, LoginResult, LoginStatus, SQLiteDatabase,
)
from netcore_server.passwords import hash_password, verify_password
from netcore_game.server import GameServer, ServerConfig
from db_backends import ACCOUNT_ROWS, CHARACTER_ROWS
from game_support import connect, in_game


def test_password_hashes_are_salted_and_verifiable():
    a, b = hash_password("pw", n=2 ** 10), hash_password("pw", n=2 ** 10)
    assert a != b and "pw" not in a
    assert verify_password("pw", a) and not verify_password("pW", a)
    assert not verify_password("pw", "garbage")


def test_the_schema_is_created_once_and_versioned(run, backend):
    async def go():
        db = backend.database()
        await db.open()
        assert db.found_version == 0                    # a new database
        first = await db.login("bob", "pw")
        assert await db.login("carol", "pw", create=False) == LoginResult(
            LoginStatus.NO_NEW_ACCOUNT)
        await db.close()
        db = backend.database()                         # a restart: same data
        await db.open()
        assert db.found_version == SCHEMA_VERSION       # found current, nothing migrated
        assert first.status is LoginStatus.CREATED
        again = await db.login("bob", "pw")
        assert again.status is LoginStatus.OK and again.characters == first.characters
        assert [(c.name, c.player_type) for c in again.characters] == list(
            netcore_server.db.DEFAULT_CHARACTERS)
        assert await db.login("bob", "nope") == LoginResult(LoginStatus.WRONG_PASSWORD)
        await db.close()

    run(go())
    assert backend.schema_version() == SCHEMA_VERSION
    assert backend.rows(ACCOUNT_ROWS) == [("bob", 2)]
    backend.set_schema_version(SCHEMA_VERSION + 1)

    async def newer():
        with pytest.raises(DatabaseError, match="newer than this server"):
            await backend.database().open()

    run(newer())


@pytest.mark.parametrize("violation", ["duplicate name", "duplicate slot", "no such account"])
def test_the_tables_refuse_what_the_schema_forbids(run, backend, violation):
    """The same constraints on both: what a bug or a hand edit could break."""
    run(_opened_and_closed(backend, "alice"))
    (account_id,) = [r[0] for r in backend.rows("SELECT id FROM accounts")]
    statement = {
        "duplicate name": "INSERT INTO accounts (name, password_hash) VALUES ('alice', 'x')",
        "duplicate slot": f"INSERT INTO characters (account_id, slot, name, player_type) "
                          f"VALUES ({account_id}, 0, 'Again', 1)",
        "no such account": "INSERT INTO characters (account_id, slot, name, player_type) "
                           "VALUES (999999, 0, 'Orphan', 1)",
    }[violation]
    with pytest.raises(Exception, match="(?i)unique|foreign key"):
        backend.rows(statement)
    assert len(backend.rows(CHARACTER_ROWS)) == 2


async def _opened_and_closed(backend, *accounts):
    db = backend.database()
    await db.open()
    for name in accounts:
        assert (await db.login(name, "pw")).ok
    await db.close()


def test_sqlite_queries_run_off_the_event_loop_thread(run, tmp_path, monkeypatch):
    threads = []
    real = SQLiteDatabase._login

    def spy(self, account, password, *args):
        threads.append(threading.get_ident())
        return real(self, account, password, *args)

    monkeypatch.setattr(SQLiteDatabase, "_login", spy)

    async def go():
        db = SQLiteDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)
        await db.open()
        await asyncio.gather(*[db.login(f"user{i}", "pw") for i in range(20)])
        await db.close()
        return threading.get_ident()

    loop_thread = run(go())
    assert len(threads) == 20 and loop_thread not in threads


def test_postgres_hashes_on_threads_and_queries_on_the_loop(run, pg_backend, monkeypatch):
    """Hashing on the hashing threads only; every round trip an asyncpg
    coroutine on the loop's thread, so no hashing thread ever waits on the
    database."""
    import asyncpg
    backend = pg_backend

    import netcore_server.db_postgres as pg
    hashed, queried = [], []
    for name in ("hash_password", "verify_password"):
        real = getattr(pg, name)

        def spy(*args, _real=real):
            hashed.append(threading.get_ident())
            return _real(*args)
        monkeypatch.setattr(pg, name, spy)
    real_fetch = asyncpg.connection.Connection.fetch

    async def fetch(self, *args, **kwargs):
        queried.append(threading.get_ident())
        return await real_fetch(self, *args, **kwargs)
    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch)

    async def go():
        db = backend.database()
        await db.open()
        await asyncio.gather(*[db.login(f"user{i}", "pw") for i in range(10)])     # created
        await asyncio.gather(*[db.login(f"user{i}", "pw") for i in range(10)])     # verified
        await db.close()
        return threading.get_ident()

    loop_thread = run(go())
    assert len(hashed) == 20 and loop_thread not in hashed
    assert len(queried) >= 30 and set(queried) == {loop_thread}


def test_a_login_whose_client_has_gone_is_not_hashed(run, backend, monkeypatch):
    module = netcore_server.db
    if backend.name == "postgres":
        import netcore_server.db_postgres as module
    hashes = []
    for name in ("hash_password", "verify_password"):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real: hashes.append(1) or _real(*a))

    async def go():
        db = backend.database()
        await db.open()
        assert (await db.login("old", "pw")).status is LoginStatus.CREATED
        hashes.clear()
        for account in ("old", "new"):
            asked = []
            result = await db.login(account, "pw", wanted=lambda: asked.append(1) and False)
            assert result.status is LoginStatus.SKIPPED and asked
        assert hashes == []
        if backend.name == "postgres":
            # Gone during the round trip: asked again on the hashing thread.
            for account in ("old", "new"):
                answers = iter([True, False])
                result = await db.login(account, "pw", wanted=lambda: next(answers))
                assert result.status is LoginStatus.SKIPPED
            assert hashes == []
        assert (await db.login("old", "pw", wanted=lambda: True)).ok
        assert hashes == [1]
        await db.close()

    run(go())
    assert [name for name, _ in backend.rows(ACCOUNT_ROWS)] == ["old"]


def test_concurrent_account_creation_makes_one_account(run, backend):
    """Racers for one new name: exactly one creates it; every other gets the
    answer its password deserves against the creator's."""
    async def go():
        db = backend.database()
        await db.open()
        passwords = ["pw"] * 8 + ["other"] * 4
        results = await asyncio.gather(*[db.login("same", pw) for pw in passwords])
        await db.close()
        return list(zip(passwords, results))

    results = run(go())
    (creator,) = [pw for pw, r in results if r.status is LoginStatus.CREATED]
    for pw, r in results:
        assert r.status is (LoginStatus.CREATED if r.status is LoginStatus.CREATED else
                            LoginStatus.OK if pw == creator else LoginStatus.WRONG_PASSWORD)
    assert len({r.characters for _, r in results if r.ok}) == 1
    assert backend.rows(ACCOUNT_ROWS) == [("same", 2)]


RACER = textwrap.dedent("""
    import asyncio, json, sys
    from netcore_server.db import SQLiteDatabase

    async def main(db_arg, racers):
        if db_arg.startswith("postgresql://"):
            from netcore_server.db_postgres import PostgresDatabase
            db = PostgresDatabase(db_arg, scrypt_n=1024)
        else:
            db = SQLiteDatabase(db_arg, scrypt_n=1024)
        await db.open()
        print("ready", flush=True)
        sys.stdin.readline()                        # all processes go at once
        results = await asyncio.gather(*[db.login("raced", "pw") for _ in range(racers)],
                                       return_exceptions=True)
        await db.close()
        print(json.dumps([r.status.value if hasattr(r, "status") else repr(r)
                          for r in results]), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def test_account_creation_racing_across_processes_makes_one_account(backend, tmp_path):
    """As workers of one machine share SQLite, and workers of every machine
    share PostgreSQL: processes of their own, each with its own connections."""
    procs = [subprocess.Popen([sys.executable, "-c", RACER, backend.db_arg, "4"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        statuses = [s for p in procs for s in json.loads(p.communicate(timeout=60)[0])]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(statuses) == ["created"] + ["ok"] * 11, statuses
    assert backend.rows(ACCOUNT_ROWS) == [("raced", 2)]


def test_concurrent_starters_migrate_once(run, backend):
    """Workers and machines starting at once: one of them makes the schema,
    the others wait for it and find it current."""
    async def go():
        dbs = [backend.database() for _ in range(6)]
        await asyncio.gather(*[db.open() for db in dbs])
        found = sorted(db.found_version for db in dbs)
        results = await asyncio.gather(*[db.login(f"p{i}", "pw") for i, db in enumerate(dbs)])
        await asyncio.gather(*[db.close() for db in dbs])
        return found, results

    found, results = run(go())
    assert found == [0] + [SCHEMA_VERSION] * 5
    assert all(r.status is LoginStatus.CREATED for r in results)
    if backend.name == "postgres":
        assert backend.rows("SELECT version FROM netcore_schema_version") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)]


class GatedDatabase(SQLiteDatabase):
    """Holds every login in its worker thread until the gate opens: while the
    test chats, all of them are certainly in flight, however fast the machine."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.all_held = threading.Event()      # every worker thread waits at the gate
        self.waiting = 0
        self._count = threading.Lock()

    def _login(self, account, password, *args):
        with self._count:
            self.waiting += 1
            if self.waiting == self.workers:
                self.all_held.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return super()._login(account, password, *args)


class SQLiteGate:
    def __init__(self, backend):
        self.db = backend.database(GatedDatabase)

    def all_held(self):
        return self.db.all_held.wait(60)

    def open(self):
        self.db.gate.set()


class PostgresGate:
    """Another session holds a lock on the accounts table that no login's
    query gets past: the logins wait inside PostgreSQL, on the loop's sockets."""

    def __init__(self, backend):
        self.backend = backend
        self.db = backend.database(statement_timeout=60)
        self.held = None

    def hold(self):
        self.held = self.backend.cluster.hold(self.backend.dbname,
                                              "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")

    def all_held(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:      # another process: polled
            (n,), = self.backend.rows("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if n >= self.db.workers:
                return True
            time.sleep(0.02)
        return False

    def open(self):
        self.held.release()


def test_a_thousand_logins_do_not_stall_chat(run, backend):
    gate = SQLiteGate(backend) if backend.name == "sqlite" else PostgresGate(backend)

    async def go():
        # Every one of them admitted at once: this is about the database pool.
        config = ServerConfig(port=0, max_logins_in_flight=1000)
        async with GameServer(config, gate.db) as server:
            if backend.name == "postgres":
                gate.hold()                     # the schema exists now: lock its table
            a, b = await in_game(server.port, 2)
            loginers = await connect(server.port, 1000)
            for i, c in enumerate(loginers):
                c.send_pkt(pb.C_LOGIN(account=f"player{i}", password="pw"))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, gate.all_held)
            # Chat round trips while the logins wait on the database.
            for i in range(20):
                a.send_pkt(pb.C_CHAT(msg=str(i)))
                await b.wait_chats(i + 1)
            answered = sum(1 for c in loginers for name, _ in c.inbox if name == "S_LOGIN")
            await loop.run_in_executor(None, gate.open)
            for c in loginers:
                assert (await c.expect("S_LOGIN", timeout=60)).success
            return answered

    answered = run(go(), timeout=120)
    assert answered == 0, "a login was answered while the database held them all"
    assert len(backend.rows(ACCOUNT_ROWS)) == 1000


# -- netcore-server --migrate-only ------------------------------------------------------

def migrate_only(backend, *args):
    return subprocess.Popen([sys.executable, "-m", "netcore_game.cli", "--db", backend.db_arg,
                             "--migrate-only", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_migrate_only_makes_the_schema_once_even_when_started_together(backend, tmp_path):
    """Operators migrate before a rollout, possibly from several hosts at once:
    one of them makes the schema, the others find it current; none serves."""
    procs = [migrate_only(backend) for _ in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out)
    shown = backend.db_arg.replace(":s3cret-pw@", ":***@")
    lines = sorted(o.strip() for o in outs)
    assert lines == sorted(
        [f"netcore-server: database {shown} at schema version {SCHEMA_VERSION} (created)"]
        + [f"netcore-server: database {shown} at schema version {SCHEMA_VERSION} "
           f"(already current)"] * 3), lines
    assert backend.schema_version() == SCHEMA_VERSION
    assert backend.rows(ACCOUNT_ROWS) == []
    # And the server then finds it as migrated, and says which database it uses.
    from game_support import ServerProcess
    with ServerProcess(tmp_path, "asyncio", db=backend.db_arg) as server:
        assert f"database {shown})" in server.banner and "s3cret" not in server.banner
        assert server.stop() == 0


def test_migrate_only_refuses_a_newer_schema(backend):
    assert migrate_only(backend).wait(60) == 0
    backend.set_schema_version(SCHEMA_VERSION + 1)
    p = migrate_only(backend)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and out == ""
    (line,) = [l for l in err.splitlines() if l.startswith("netcore-server:")]
    assert line.endswith(f"has schema version {SCHEMA_VERSION + 1}, newer than this "
                         f"server's {SCHEMA_VERSION}") and "s3cret" not in line


def test_an_account_name_with_nul_is_refused_alike_on_both(run, backend):
    """PostgreSQL text cannot hold NUL: such a name is refused before any
    database or hashing work, whichever backend, and the client may go on."""
    async def go():
        async with GameServer(ServerConfig(port=0), backend.database()) as server:
            (c,) = await connect(server.port)
            assert not (await c.login("bad\x00name", "pw")).success
            assert server.refusals.counts["login", "bad_account_name"] == 1
            assert server.logins.in_flight == 0
            assert (await c.login("good name", "pw")).success and c.reason is None

    run(go())
    assert backend.rows(ACCOUNT_ROWS) == [("good name", 2)]


def test_an_account_deleted_while_a_racer_creates_it_is_a_database_error(run, pg_backend):
    """Lost the race for a name, and the winner's account deleted by hand
    before it could be read: that login fails as a database error (the
    server answers success=false), never with an IndexError."""
    import netcore_server.db_postgres as pg

    class Unlucky(pg.PostgresDatabase):
        fetched = 0

        async def _fetch(self, query, *args):
            if query is pg._FETCH_ACCOUNT and not self.fetched:
                self.fetched = 1
                return []                       # "no such account" as the race began
            rows = await super()._fetch(query, *args)
            if query is pg._CREATE_ACCOUNT:
                assert rows == []               # the name was taken: the race was lost
                pg_backend.rows("DELETE FROM characters")
                pg_backend.rows("DELETE FROM accounts")
            return rows

    async def go():
        await _opened_and_closed(pg_backend, "gone")
        db = pg_backend.database(Unlucky)
        await db.open()
        try:
            with pytest.raises(DatabaseError, match="'gone' was deleted while it was being created"):
                await db.login("gone", "pw")
        finally:
            await db.close()

    run(go())


def test_sqlite_connections_opening_a_new_file_together_all_get_in(tmp_path):
    """Several connections switching a new file to WAL at the same moment: a
    few of them got "database is locked" at once, without SQLite's busy
    handler waiting (about 1 round in 70 of 8 here, so 300 rounds all but
    always saw it); each now retries within its busy timeout."""
    errors = []

    def opener(db, barrier):
        barrier.wait()
        try:
            db._conn()
        except DatabaseError as exc:
            errors.append(str(exc))

    for round_ in range(300):
        path = tmp_path / f"game{round_}.db"
        dbs = [SQLiteDatabase(path) for _ in range(8)]
        barrier = threading.Barrier(len(dbs))
        threads = [threading.Thread(target=opener, args=(db, barrier)) for db in dbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for db in dbs:
            for conn in db._connections:
                conn.close()
        path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert errors == []
