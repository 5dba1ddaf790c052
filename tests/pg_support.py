"""A real PostgreSQL server for the tests, from the PostgreSQL installed here.

`initdb` and `pg_ctl` (Debian's /usr/lib/postgresql/<version>/bin, or PATH)
make a throwaway cluster in a temporary directory, listening on loopback on
a free port, with password (SCRAM) authentication over TCP, as netcore's
users connect. PostgreSQL refuses to run as root: when the tests run as
root, the cluster runs as the `postgres` system user (or `nobody`) through
`runuser`, in a directory that user owns.

One cluster serves a whole test session; each test gets a database of its
own. Fault tests stop, kill and restart it; `ensure_running` brings it back
for the next test whatever happened.
"""
from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from netcore_cluster.natsd import free_port

USER, PASSWORD = "netcore", "s3cret-pw"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: $NETCORE_PG_BINDIR, the newest Debian
    /usr/lib/postgresql/N/bin, or PATH; None when PostgreSQL is not installed."""
    candidates = []
    if os.environ.get("NETCORE_PG_BINDIR"):
        candidates.append(Path(os.environ["NETCORE_PG_BINDIR"]))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(Path(p).parent.name)
                                           if Path(p).parent.name.isdigit() else 0,
                                           reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def unprivileged_user() -> str | None:
    """The user the cluster runs as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and there is neither a postgres nor a nobody user "
                       "to run PostgreSQL as")


class PostgresCluster:
    """One initdb'd cluster; start/stop/kill/restart on the same port."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = unprivileged_user()
        self.base = Path(tempfile.mkdtemp(prefix="netcore-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.port = free_port()
        self._next_db = 0
        self._client = _BackgroundLoop()
        if self.user is not None:
            shutil.chown(self.base, self.user)

    def _run(self, *args, check=True):
        cmd = [str(a) for a in args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}"
                               f"{proc.stderr}\n{self.log_text()}")
        return proc

    def init(self) -> "PostgresCluster":
        pwfile = self.base / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.user is not None:
            shutil.chown(pwfile, self.user)
        self._run(self.bindir / "initdb", "-D", self.data, "-U", USER, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        return self

    def start(self) -> "PostgresCluster":
        # No fsync (a crash of PostgreSQL, not of the machine, is what tests make),
        # but synchronous commits: what was confirmed is in the WAL when it crashes.
        # Small buffers: a shared machine.
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c full_page_writes=off "
                   f"-c shared_buffers=16MB -c max_connections=200")
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log_path, "-w",
                  "-t", "60", "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: 'fast' (clients told and disconnected) or 'immediate'
        (as a crash: every process quits at once, recovery at the next start)."""
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                  "stop", check=False)

    def running(self) -> bool:
        return self._run(self.bindir / "pg_ctl", "-D", self.data, "status",
                         check=False).returncode == 0

    def ensure_running(self) -> None:
        self.thaw()
        if not self.running():
            self.start()

    def _pids(self) -> list[int]:
        """The postmaster and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue                    # gone meanwhile
            if int(fields[1]) == postmaster:
                pids.append(int(Path(stat).parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: connections stay open and
        nothing answers, as with a hung server or a network that drops packets."""
        self._frozen = self._pids()
        for pid in self._frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in getattr(self, "_frozen", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def log_text(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    # -- databases and queries, from tests (sync, from any thread) ------------------

    def create_database(self) -> str:
        self._next_db += 1
        name = f"test_{os.getpid()}_{self._next_db}"
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def query(self, dbname: str, sql: str, *args) -> list[tuple]:
        """Rows of one statement, on a connection of its own."""
        async def go():
            import asyncpg
            conn = await asyncpg.connect(self.url(dbname), timeout=10)
            try:
                return [tuple(r) for r in await conn.fetch(sql, *args, timeout=30)]
            finally:
                await conn.close()
        return self._client.call(go())

    def execute(self, dbname: str, sql: str) -> None:
        self.query(dbname, sql)

    def hold(self, dbname: str, *statements: str) -> "HeldTransaction":
        """A transaction that ran `statements` (taking locks, say) and stays
        open until release()."""
        return HeldTransaction(self, dbname, statements)

    def close(self) -> None:
        try:
            self.thaw()
            self.stop("immediate")
        finally:
            self._client.close()
            shutil.rmtree(self.base, ignore_errors=True)


class HeldTransaction:
    def __init__(self, cluster: PostgresCluster, dbname: str, statements):
        self._client = cluster._client

        async def begin():
            import asyncpg
            conn = await asyncpg.connect(cluster.url(dbname), timeout=10)
            await conn.execute("BEGIN")
            for statement in statements:
                await conn.execute(statement)
            return conn
        self.conn = self._client.call(begin())

    def release(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None

        async def end():
            try:
                await conn.execute("ROLLBACK")
            finally:
                await conn.close()
        self._client.call(end())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class _BackgroundLoop:
    """An event loop on a thread of its own, for the tests' own connections:
    usable from sync code and from inside another running loop alike."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="pg-test-client")
        self.thread.start()

    def call(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start_cluster() -> PostgresCluster:
    """A started cluster (the caller closes it), or RuntimeError; None when
    PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        return None
    cluster = PostgresCluster(bindir)
    try:
        return cluster.init().start()
    except BaseException:
        cluster.close()
        raise

