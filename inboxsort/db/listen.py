"""Model changes told to every node at once: PostgreSQL NOTIFY on activation, LISTEN in daemons.

The registry sends a notification in the transaction that activates a version (delivered when it
commits); each daemon of a fleet listens on a connection of its own and looks at the active
version as soon as one arrives. The daemon's poll stays as the fallback (and is all SQLite has).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from inboxsort.db.session import Database

log = logging.getLogger(__name__)

CHANNEL = "inboxsort_models"


def notify_model_change(session: Session) -> None:
    """Tell every listening node that the active version changed (PostgreSQL; else nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class ModelChanges:
    """A LISTEN connection; `wait` returns True when a change was notified within `timeout`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._raw: Any = None

    @property
    def supported(self) -> bool:
        """Whether the database delivers notifications (PostgreSQL)."""
        return self.db.engine.dialect.name == "postgresql"

    def _connect(self) -> Any:
        raw = self.db.engine.raw_connection()
        conn: Any = raw.driver_connection
        conn.autocommit = True
        conn.execute(f"LISTEN {CHANNEL}")
        self._raw = raw
        return conn

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a notification; True if one (or more) came."""
        conn = self._raw.driver_connection if self._raw is not None else self._connect()
        try:
            # psycopg 3: a generator ending after `timeout`, or after the first notification.
            return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
        except Exception:
            self.close()  # connect again at the next wait
            raise

    def close(self) -> None:
        """Drop the listening connection."""
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()  # not back to the pool: it is in LISTEN and autocommit mode
            finally:
                raw.close()
