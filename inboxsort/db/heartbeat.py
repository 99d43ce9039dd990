"""The nodes' health rows (daemon_state, one per node): written by daemons, read by the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxsort.db.schema import DAEMON_LOST, DAEMON_STOPPED, DaemonState, utcnow

# Columns write_heartbeat accepts; the primary key is the node's name, given apart.
_HEARTBEAT_FIELDS = frozenset(c.key for c in DaemonState.__table__.columns) - {"node"}

# A node that has not written its heartbeat for this long (and did not stop cleanly) is taken
# for dead: `stats` marks it stale, and its claims on a shared inbox are taken over. Daemons
# write every 2 s, so a few missed beats (a long database wait, a busy machine) never count.
HEARTBEAT_STALE_SECONDS = 30.0


def write_heartbeat(session: Session, *, node: str, **fields: Any) -> DaemonState:
    """Insert or update this node's daemon_state row (flushes; the caller commits)."""
    unknown = set(fields) - _HEARTBEAT_FIELDS
    if unknown:
        raise TypeError(f"unknown daemon_state field(s): {', '.join(sorted(unknown))}")
    # A heartbeat is "now" unless the caller says otherwise.
    fields.setdefault("heartbeat_at", utcnow())
    # Select-then-write rather than a dialect-specific upsert keeps this portable; only the
    # node's own daemon writes its row, so there is no insert race to lose.
    row = session.get(DaemonState, node)
    if row is None:
        row = DaemonState(node=node, **fields)
        session.add(row)
    else:
        for key, value in fields.items():
            setattr(row, key, value)
    session.flush()
    return row


def read_heartbeat(session: Session, node: str) -> DaemonState | None:
    """Return one node's daemon_state row as currently stored, or None if it never ran."""
    # populate_existing: a long-lived session must not answer from its stale identity map.
    return session.get(DaemonState, node, populate_existing=True)


def read_heartbeats(session: Session) -> list[DaemonState]:
    """Every node's daemon_state row, by node name."""
    stmt = select(DaemonState).order_by(DaemonState.node).execution_options(populate_existing=True)
    return list(session.scalars(stmt))


def is_stale(
    row: DaemonState, *, now: dt.datetime, seconds: float = HEARTBEAT_STALE_SECONDS
) -> bool:
    """Whether a node that did not stop cleanly has been silent too long to be alive."""
    if row.state in (DAEMON_STOPPED, DAEMON_LOST):
        return False
    if row.heartbeat_at is None:
        return True
    return (now - row.heartbeat_at).total_seconds() > seconds
