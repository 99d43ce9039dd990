"""retry_locked on real SQLite errors: a full database is waited out however long, and said once;
a lock is given up after its time; a stop ends either wait at once."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from inboxsort.db.retry import FULL_CAP, retry_locked


@pytest.fixture
def full(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A SQLite connection whose database cannot grow (PRAGMA max_page_count): SQLITE_FULL."""
    with closing(sqlite3.connect(tmp_path / "full.db", isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        yield conn


def _insert(conn: sqlite3.Connection) -> str:
    conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    return "inserted"


def test_a_full_database_is_retried_past_any_give_up_time_and_said_once(
    full: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 30:  # space comes back
            full.execute("PRAGMA max_page_count=100000")
        return False

    with caplog.at_level(logging.DEBUG, logger="inboxsort.db.retry"):
        result = retry_locked(lambda: _insert(full), what="test", wait=wait, give_up_after=0.0)
    assert result == "inserted" and len(waits) == 30
    assert waits == sorted(waits) and waits[-1] == FULL_CAP  # backoff, up to its cap
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 2, said  # not one line per retry
    assert said[0].startswith("database or disk is full during test: waiting for free space")
    assert said[1].startswith("database writable again after")


def test_a_stop_ends_the_wait_for_space_with_the_error(full: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        retry_locked(lambda: _insert(full), what="test", wait=lambda _s: True)


def test_a_lock_is_given_up_after_its_time(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as holder,
        closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as other,
    ):
        holder.execute("CREATE TABLE t (x TEXT)")
        holder.execute("BEGIN EXCLUSIVE")
        waits: list[float] = []

        def wait(seconds: float) -> bool:
            waits.append(seconds)
            return False

        with pytest.raises(sqlite3.OperationalError, match="locked"):
            retry_locked(lambda: _insert(other), what="test", wait=wait, give_up_after=0.0)
        assert waits == []
        holder.execute("ROLLBACK")
