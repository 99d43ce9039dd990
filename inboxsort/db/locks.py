"""Fleet-wide locks: PostgreSQL advisory locks, held on a connection of their own.

A session-level advisory lock belongs to the connection that took it and goes when that
connection closes, however its process ends (kill -9 included: the server sees the socket
close). SQLite has one daemon per file (its lock file), so there these locks always succeed
and the caller's local lock is what counts.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from sqlalchemy import Connection, text

from inboxsort.db.session import Database


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same on every node)."""
    digest = hashlib.sha256(f"inboxsort:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class FleetLock:
    """One named advisory lock; `acquire` tries once, `release` lets go (idempotent)."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._conn: Connection | None = None

    @property
    def shared(self) -> bool:
        """Whether the database may have other daemons (it is not SQLite)."""
        return self.db.engine.dialect.name != "sqlite"

    def acquire(self) -> bool:
        """Take the lock if no other connection in the fleet holds it; True when taken."""
        if not self.shared:
            return True
        conn = self.db.engine.connect()
        try:
            taken = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": lock_key(self.name)}
            ).scalar()
            # End the implicit transaction: the lock is the session's, and stays.
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        """Let go of the lock (closing its connection releases it on the server)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a dead connection has released it already
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(self.name)})
            conn.commit()
        conn.close()


@contextlib.contextmanager
def fleet_lock(db: Database, name: str) -> Iterator[bool]:
    """Hold the fleet-wide lock `name` for the block; yields False when another node has it."""
    lock = FleetLock(db, name)
    taken = lock.acquire()
    try:
        yield taken
    finally:
        lock.release()
