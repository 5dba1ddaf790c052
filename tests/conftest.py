"""Shared fixtures: every networking test runs once per supported event loop."""
import asyncio
import os

import pytest

try:
    import resource
except ImportError:        # Windows: no rlimits to raise
    resource = None

import netcore
from netcore.loop import uvloop_available

LOOP_KINDS = ["asyncio", "uvloop"]


def pytest_configure(config):
    if resource is None:
        return
    # A thousand loopback clients are 2,000 descriptors in one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    if request.param == "uvloop" and not uvloop_available():
        pytest.skip("uvloop is not installed on this platform")
    return request.param


@pytest.fixture
def run(loop_kind):
    """run(coro, timeout=30): run a coroutine to completion on this test's loop."""

    def _run(coro, timeout=30.0):
        return netcore.run(asyncio.wait_for(coro, timeout), loop_kind)

    return _run


# -- databases: SQLite, and a real PostgreSQL started by the tests -----------------

@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL cluster for the session (pg_support.py), or a skip
    saying why where PostgreSQL or asyncpg is not installed."""
    pytest.importorskip("asyncpg", reason="asyncpg is not installed: "
                                          "pip install \"netcore[postgres]\"")
    from pg_support import start_cluster
    cluster = start_cluster()
    if cluster is None:
        why = ("PostgreSQL is not installed here: no initdb and pg_ctl in "
               "/usr/lib/postgresql/*/bin, $NETCORE_PG_BINDIR or PATH (apt-get install postgresql)")
        if os.environ.get("NETCORE_REQUIRE_POSTGRES") == "1":     # CI: never skipped
            pytest.fail(why)
        pytest.skip(why)
    yield cluster
    cluster.close()


@pytest.fixture
def pg_database(pg_cluster):
    """A database of this test's own on the session's cluster (running again
    when an earlier test stopped it)."""
    pg_cluster.ensure_running()
    name = pg_cluster.create_database()
    yield name
    pg_cluster.ensure_running()
    pg_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """The database backend a test runs against: each such test runs on both."""
    from db_backends import PostgresBackend, SQLiteBackend
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path)
    return PostgresBackend(request.getfixturevalue("pg_cluster"),
                           request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_backend(pg_cluster, pg_database):
    """PostgreSQL only, for what only it has."""
    from db_backends import PostgresBackend
    return PostgresBackend(pg_cluster, pg_database)
