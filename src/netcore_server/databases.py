"""make_database: the accounts backend a ServerConfig's `db` names.

Apart from db.py (the interface and SQLite) and db_postgres.py (which
imports db.py), so that neither backend module imports the other.
"""
from __future__ import annotations

from netcore_server.db import (
    Database,
    DatabaseError,
    SQLiteDatabase,
    describe_database,
    is_postgres_url,
)
from netcore_server.passwords import DEFAULT_N


def make_database(config, *, scrypt_n: int = DEFAULT_N) -> "Database":
    """The database a ServerConfig names (not open yet). A PostgreSQL URL
    without asyncpg installed is a DatabaseError saying what to install."""
    if is_postgres_url(config.db):
        try:
            from netcore_server.db_postgres import PostgresDatabase
        except ImportError as exc:
            raise DatabaseError(f"--db {describe_database(config.db)}: PostgreSQL needs "
                                f"asyncpg ({exc}): pip install \"netcore[postgres]\"") from None
        return PostgresDatabase(config.db, pool_size=config.db_pool_size, scrypt_n=scrypt_n,
                                connect_timeout=config.db_connect_timeout,
                                statement_timeout=config.db_statement_timeout)
    return SQLiteDatabase(config.db, scrypt_n=scrypt_n, busy_timeout=config.db_busy_timeout)

