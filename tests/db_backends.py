"""The two database backends as tests see them: the same questions (what the
schema version is, which rows are stored, a lock held by someone else),
answered by SQLite's file or by a PostgreSQL database of the test's own.
The `backend` fixture (conftest.py) gives one of each to every test that
takes it.
"""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from netcore_server.db import SCHEMA_VERSION, SQLiteDatabase

SMALL_N = 2 ** 10           # scrypt cost for tests: fast, the same code path


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, tmp_path: Path):
        self.path = tmp_path / "game.db"

    @property
    def db_arg(self) -> str:
        """What --db says to use this database."""
        return str(self.path)

    def database(self, cls=SQLiteDatabase, **kwargs):
        kwargs.setdefault("scrypt_n", SMALL_N)
        return cls(self.path, **kwargs)

    def _query(self, sql, *args):
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")      # as the server's connections have it
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def schema_version(self) -> int:
        return self._query("PRAGMA user_version")[0][0]

    def set_schema_version(self, version: int) -> None:
        conn = sqlite3.connect(self.path)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
        conn.close()

    def rows(self, sql, *args) -> list[tuple]:
        return self._query(sql.replace("$1", "?"), *args)

    @contextlib.contextmanager
    def writes_locked(self):
        """Another process holds the write lock (reads go on, in WAL mode)."""
        holder = sqlite3.connect(self.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    def check_integrity(self) -> None:
        conn = sqlite3.connect(self.path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            conn.close()


class PostgresBackend:
    name = "postgres"

    def __init__(self, cluster, dbname: str):
        self.cluster = cluster
        self.dbname = dbname

    @property
    def db_arg(self) -> str:
        return self.cluster.url(self.dbname)

    def database(self, cls=None, **kwargs):
        from netcore_server.db_postgres import PostgresDatabase
        kwargs.setdefault("scrypt_n", SMALL_N)
        return (cls or PostgresDatabase)(self.db_arg, **kwargs)

    def schema_version(self) -> int:
        return self.rows("SELECT coalesce(max(version), 0) FROM netcore_schema_version")[0][0]

    def set_schema_version(self, version: int) -> None:
        self.cluster.execute(self.dbname, f"INSERT INTO netcore_schema_version (version) "
                                          f"VALUES ({int(version)})")

    def rows(self, sql, *args) -> list[tuple]:
        return self.cluster.query(self.dbname, sql, *args)

    @contextlib.contextmanager
    def writes_locked(self):
        """Another session holds a lock that lets reads through and no write."""
        with self.cluster.hold(self.dbname, "LOCK TABLE accounts IN EXCLUSIVE MODE"):
            yield

    def check_integrity(self) -> None:
        # Constraints are checked by PostgreSQL on every write; what can still
        # be wrong is what the schema does not say: counted by the callers.
        assert self.schema_version() == SCHEMA_VERSION


# Same answers from both: these go through the backend's rows().
CHARACTER_ROWS = ("SELECT a.name, c.id, c.slot, c.name FROM characters c "
                  "JOIN accounts a ON a.id = c.account_id ORDER BY c.id")
ACCOUNT_ROWS = ("SELECT a.name, count(c.id) FROM accounts a "
                "LEFT JOIN characters c ON c.account_id = a.id GROUP BY a.id, a.name")
SLOTS_OF_EVERY_ACCOUNT = ("SELECT c.account_id, c.slot FROM characters c ORDER BY c.account_id, "
                          "c.slot")
CHARACTER_NAMES_OF = ("SELECT c.name FROM characters c JOIN accounts a ON a.id = c.account_id "
                      "WHERE a.name = $1 ORDER BY c.slot")
