"""The daemon's single health row (daemon_state): written by the daemon, read by the CLI."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from inboxsort.db.schema import DAEMON_ROW_ID, DaemonState, utcnow

# Columns write_heartbeat accepts; the primary key is fixed to DAEMON_ROW_ID.
_HEARTBEAT_FIELDS = frozenset(c.key for c in DaemonState.__table__.columns) - {"id"}


def write_heartbeat(session: Session, **fields: Any) -> DaemonState:
    """Insert or update the single daemon_state row (flushes; the caller commits)."""
    unknown = set(fields) - _HEARTBEAT_FIELDS
    if unknown:
        raise TypeError(f"unknown daemon_state field(s): {', '.join(sorted(unknown))}")
    # A heartbeat is "now" unless the caller says otherwise.
    fields.setdefault("heartbeat_at", utcnow())
    # Select-then-write rather than a dialect-specific upsert keeps this portable; only the
    # daemon writes this row, so there is no insert race to lose.
    row = session.get(DaemonState, DAEMON_ROW_ID)
    if row is None:
        row = DaemonState(id=DAEMON_ROW_ID, **fields)
        session.add(row)
    else:
        for key, value in fields.items():
            setattr(row, key, value)
    session.flush()
    return row


def read_heartbeat(session: Session) -> DaemonState | None:
    """Return the daemon_state row as currently stored, or None if no daemon ever ran."""
    # populate_existing: a long-lived session must not answer from its stale identity map.
    return session.get(DaemonState, DAEMON_ROW_ID, populate_existing=True)
