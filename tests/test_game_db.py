"""The database layer: off the event loop, consistent, and behind its interface."""
import asyncio
import sqlite3
import threading

import pytest

from netcore_packets import Protocol_pb2 as pb

from netcore_game.db import (
    SCHEMA_VERSION, DatabaseError, LoginResult, LoginStatus, SQLiteDatabase,
)
from netcore_game.passwords import hash_password, verify_password
from netcore_game.server import GameServer, ServerConfig
from game_support import connect, in_game


def test_password_hashes_are_salted_and_verifiable():
    a, b = hash_password("pw", n=2 ** 10), hash_password("pw", n=2 ** 10)
    assert a != b and "pw" not in a
    assert verify_password("pw", a) and not verify_password("pW", a)
    assert not verify_password("pw", "garbage")


def test_the_schema_is_created_once_and_versioned(run, tmp_path):
    path = tmp_path / "game.db"

    async def go():
        db = SQLiteDatabase(path, scrypt_n=2 ** 10)
        await db.open()
        first = await db.login("bob", "pw")
        await db.close()
        db = SQLiteDatabase(path, scrypt_n=2 ** 10)     # a restart: same data
        await db.open()
        assert first.status is LoginStatus.CREATED
        again = await db.login("bob", "pw")
        assert again.status is LoginStatus.OK and again.characters == first.characters
        assert await db.login("bob", "nope") == LoginResult(LoginStatus.WRONG_PASSWORD)
        await db.close()

    run(go())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    async def newer():
        with pytest.raises(DatabaseError, match="newer than this server"):
            await SQLiteDatabase(path).open()

    run(newer())


def test_queries_run_off_the_event_loop_thread(run, tmp_path, monkeypatch):
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


def test_concurrent_account_creation_makes_one_account(run, tmp_path):
    async def go():
        db = SQLiteDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)
        await db.open()
        results = await asyncio.gather(*[db.login("same", "pw") for _ in range(8)])
        await db.close()
        return results

    results = run(go())
    assert [r.status for r in results].count(LoginStatus.CREATED) == 1
    assert all(r.ok for r in results) and len({r.characters for r in results}) == 1


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


def test_a_thousand_logins_do_not_stall_chat(run, tmp_path):
    async def go():
        # Every one of them admitted at once: this is about the database pool.
        config = ServerConfig(port=0, max_logins_in_flight=1000)
        db = GatedDatabase(tmp_path / "game.db", scrypt_n=2 ** 10)
        async with GameServer(config, db) as server:
            a, b = await in_game(server.port, 2)
            loginers = await connect(server.port, 1000)
            for i, c in enumerate(loginers):
                c.send_pkt(pb.C_LOGIN(account=f"player{i}", password="pw"))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, db.all_held.wait, 60)
            # Chat round trips while the logins wait on the database.
            for i in range(20):
                a.send_pkt(pb.C_CHAT(msg=str(i)))
                await b.wait_chats(i + 1)
            answered = sum(1 for c in loginers for name, _ in c.inbox if name == "S_LOGIN")
            db.gate.set()
            for c in loginers:
                assert (await c.expect("S_LOGIN", timeout=60)).success
            return answered

    answered = run(go(), timeout=120)
    assert answered == 0, "a login was answered while the database held them all"
