"""The accounts database: one small interface, SQLite behind it by default.

Handlers only ever see `Database` (a game's own login, a token checked
against the studio's auth service say, is a Database too: Game.accounts).
netcore_server.databases.make_database picks the backend from the `db`
setting: a file path is SQLite (this module: work on a small thread pool with
thread-local connections and a WAL journal, so the event loop never waits on
disk or on scrypt), a `postgresql://` URL is PostgreSQL
(netcore_server.db_postgres, asyncpg), the one store that several machines
share.
"""
from __future__ import annotations

import abc
import asyncio
import enum
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from netcore_server.passwords import DEFAULT_N, hash_password, verify_password

SCHEMA_VERSION = 1
# PlayerType's PLAYER_TYPE_KNIGHT in the protocol every game on the layer
# shares (netcore_server.protocol): the original server gave every new
# account two knights.
PLAYER_TYPE_KNIGHT = 1
DEFAULT_CHARACTERS = (("Knight1", PLAYER_TYPE_KNIGHT), ("Knight2", PLAYER_TYPE_KNIGHT))

_SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE characters (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    slot INTEGER NOT NULL,
    name TEXT NOT NULL,
    player_type INTEGER NOT NULL,
    UNIQUE (account_id, slot)
);
"""


class DatabaseError(Exception):
    """The database cannot be used; the message says why, for an operator."""


@dataclass(frozen=True)
class Character:
    """A character a login may play: its row (0 when not stored), its name
    and its PlayerType. The player ids come from the server, per login."""

    db_id: int
    name: str
    player_type: int


# A guest (empty C_LOGIN) plays the default characters; nothing is stored.
GUEST_CHARACTERS = tuple(Character(0, name, ptype) for name, ptype in DEFAULT_CHARACTERS)


class LoginStatus(enum.Enum):
    """How a login ended: OK and CREATED log in; the others are refused."""

    OK = "ok"                           # the password matched
    CREATED = "created"                 # a new account, with the default characters
    WRONG_PASSWORD = "wrong_password"
    NO_NEW_ACCOUNT = "no_new_account"   # unknown account, and creating one was not allowed
    SKIPPED = "skipped"                 # no longer wanted when its turn came: nothing hashed


@dataclass(frozen=True)
class LoginResult:
    """What Database.login answers: how it ended and, logged in, the characters."""

    status: LoginStatus
    characters: tuple[Character, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is LoginStatus.OK or self.status is LoginStatus.CREATED


class Database(abc.ABC):
    """Where logins are checked: the accounts of SQLite or PostgreSQL, or a
    game's own (Game.accounts), such as a token signed by the studio's auth
    service. Every named login reaches login() through the server's
    LoginGate (bounded in flight, per-address budgets, turns), never more
    than `workers` at a time; a guest login (an empty C_LOGIN, where
    `guests` allows it) never reaches it."""

    #: Logins it works on at once (its hashing threads): the server hands it no
    #: more than this, so that its own queue stays short and the server
    #: decides who goes next (netcore_server.logins).
    workers: int = 4
    #: The schema version open() found, before it migrated (0: a new
    #: database; None: it has no schema of netcore's, a game's own login).
    found_version: int | None = None
    #: An empty C_LOGIN plays GUEST_CHARACTERS without asking login(); False
    #: sends it to login() like any other (account "" and password "").
    guests: bool = True

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def login(self, account: str, password: str, *, create: bool = True,
                    wanted=None) -> LoginResult:
        """Check a password, or create the account (with the default
        characters) when it is unknown and `create` allows. `wanted`, when
        given, is asked (from any thread) just before the expensive work
        starts: False skips it, for a client that has gone meanwhile."""


POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(db: str) -> bool:
    return "://" in db and db.split("://", 1)[0].lower() in POSTGRES_SCHEMES


def check_db_setting(db: str) -> None:
    """A ValueError unless `db` is a file path or a PostgreSQL URL."""
    if "://" in db and not is_postgres_url(db):
        raise ValueError(f"db {describe_database(db)!r}: must be a SQLite file path or a "
                         f"postgresql:// URL")


# scheme://user:PASSWORD@ and ?password=PASSWORD / &password=PASSWORD. Text,
# not a URL parser: a malformed URL is shown as given, less its password.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/@?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def describe_database(db: str) -> str:
    """`db` as logs and errors show it: a URL's password replaced by ***."""
    if "://" not in db:
        return db
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", db))


class SQLiteDatabase(Database):
    def __init__(self, path: str | Path, *, workers: int = 4, scrypt_n: int = DEFAULT_N,
                 busy_timeout: float = 10.0):
        self.path = str(path)
        self.scrypt_n = scrypt_n
        self.busy_timeout = busy_timeout
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="netcore-db")
        try:
            await self._run(self._migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def _run(self, fn, *args):
        if self._executor is None:
            raise DatabaseError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if not Path(self.path).parent.is_dir():
                raise DatabaseError(f"cannot open database {self.path}: "
                                    f"directory {Path(self.path).parent} does not exist")
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                       check_same_thread=False, isolation_level=None)
                self._wal(conn)
                # WAL + NORMAL: a killed process never corrupts the database;
                # only a power cut can drop the last commits. No fsync per login.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Into WAL mode. Connections opening a new file at the same moment
        (workers, or several starters) can get "database is locked" here at
        once, without SQLite's busy handler waiting: retried, on this worker
        thread, for up to busy_timeout like any other lock."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _migrate(self) -> None:
        conn = self._conn()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DatabaseError(f"database {self.path} has schema version {version}, "
                                    f"newer than this server's {SCHEMA_VERSION}")
            # A write transaction either way: it makes a new file's schema all
            # at once, and on an existing file it shows now, not at the first
            # new account, that the file is read-only or locked by another
            # process (which holds us for busy_timeout first).
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]   # under the lock
            self.found_version = version
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise DatabaseError(f"cannot use database {self.path}: {exc}") from exc

    # -- queries --------------------------------------------------------------

    async def login(self, account: str, password: str, *, create: bool = True,
                    wanted=None) -> LoginResult:
        return await self._run(self._login, account, password, create, wanted)

    def _login(self, account: str, password: str, create: bool = True,
               wanted=None) -> LoginResult:
        # The pool's queue may hold logins of clients long gone (a flood of
        # connections that each send one login and leave): each is checked
        # here, on its turn, before any hashing.
        if wanted is not None and not wanted():
            return LoginResult(LoginStatus.SKIPPED)
        conn = self._conn()
        row = conn.execute("SELECT id, password_hash FROM accounts WHERE name = ?",
                           (account,)).fetchone()
        status = LoginStatus.OK
        if row is None:
            if not create:
                return LoginResult(LoginStatus.NO_NEW_ACCOUNT)
            row, status = self._create_account(conn, account, password)
        elif not verify_password(password, row[1]):
            row = None
        if row is None:
            return LoginResult(LoginStatus.WRONG_PASSWORD)
        return LoginResult(status, tuple(Character(*r) for r in conn.execute(
            "SELECT id, name, player_type FROM characters WHERE account_id = ? ORDER BY slot",
            (row[0],))))

    def _create_account(self, conn, account, password):
        stored = hash_password(password, self.scrypt_n)   # outside the write lock
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute("INSERT INTO accounts (name, password_hash) VALUES (?, ?)",
                               (account, stored))
            conn.executemany(
                "INSERT INTO characters (account_id, slot, name, player_type) VALUES (?, ?, ?, ?)",
                [(cur.lastrowid, slot, name, ptype)
                 for slot, (name, ptype) in enumerate(DEFAULT_CHARACTERS)])
            conn.execute("COMMIT")
            return (cur.lastrowid, stored), LoginStatus.CREATED
        except sqlite3.IntegrityError:
            # Another login created the same account first: use theirs.
            conn.execute("ROLLBACK")
            row = conn.execute("SELECT id, password_hash FROM accounts WHERE name = ?",
                               (account,)).fetchone()
            return (row if verify_password(password, row[1]) else None), LoginStatus.OK
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
