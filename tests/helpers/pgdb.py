"""Throwaway databases on the real PostgreSQL server the project machine and CI run.

The server is not optional: when it cannot be reached, the PostgreSQL tests fail and say so,
they never skip. INBOXSORT_TEST_PG_URL names another server (its maintenance database, where
CREATE DATABASE runs); the default is the project machine's, trust authentication.
"""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

ADMIN_URL = os.environ.get(
    "INBOXSORT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "inboxsort_test_"
# Emptying tables waits at most this long for a lock a test left held, then fails clearly.
TRUNCATE_LOCK_TIMEOUT_MS = 10_000


def _conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy URL."""
    parsed = make_url(url)
    parts = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def _admin() -> psycopg.Connection:
    """An autocommit connection to the maintenance database; fails the test if none."""
    try:
        return psycopg.connect(_conninfo(ADMIN_URL), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.fail(
            f"the PostgreSQL test server is required but unreachable at "
            f"{make_url(ADMIN_URL).render_as_string(hide_password=True)}: {exc}".strip()
            + " (start it, or set INBOXSORT_TEST_PG_URL to a server's maintenance database)",
            pytrace=False,
        )


def url_of(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the test server."""
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_database() -> str:
    """CREATE DATABASE inboxsort_test_<random>; returns its URL."""
    name = PREFIX + secrets.token_hex(6)
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url_of(name)


def drop_database(url: str) -> None:
    """DROP DATABASE ... WITH (FORCE): connections a test left open do not keep it."""
    name = make_url(url).database
    assert name and name.startswith(PREFIX), name
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def empty_tables(url: str) -> None:
    """TRUNCATE every table but alembic_version, ids restarting at 1."""
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = {TRUNCATE_LOCK_TIMEOUT_MS}")
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ]
        if names:
            tables = sql.SQL(", ").join(sql.Identifier(n) for n in names)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))
