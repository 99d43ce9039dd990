"""Claims on a shared inbox (the claims table) and the takeover of nodes that died holding some.

A claim is one row, unique per file (its key): inserting it is the claim, and the insert is
atomic in the database, so of several daemons watching one inbox exactly one gets each file.
Its row goes once the file has left the inbox (or is put back for a later look). A node whose
heartbeat went stale while it held claims is taken over by a live node: its claims are
dropped (the files are claimed again by whoever looks first) and its pending rows recovered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from inboxsort.db.heartbeat import is_stale
from inboxsort.db.schema import (
    DAEMON_LOST,
    DAEMON_STOPPED,
    STATUS_PENDING,
    DaemonState,
    Image,
    InboxClaim,
    utcnow,
)
from inboxsort.errors import StoreError


def try_claim(session: Session, *, key: str, node: str, path: str) -> bool:
    """Insert a claim for `key` as `node`; False when another claim holds it (flushes)."""
    values = {"key": key, "node": node, "path": path, "claimed_at": utcnow()}
    dialect = session.get_bind().dialect.name
    # ON CONFLICT: a lost race is an answer, not an error that aborts the transaction
    # (PostgreSQL) or needs a savepoint. A claim this node already holds (one whose release
    # has not landed yet) is its own again.
    if dialect == "postgresql":
        pg = pg_insert(InboxClaim).values(values)
        stmt: Any = pg.on_conflict_do_update(
            index_elements=[InboxClaim.key],
            set_={"claimed_at": pg.excluded.claimed_at, "path": pg.excluded.path},
            where=InboxClaim.node == node,
        )
    elif dialect == "sqlite":
        lite = sqlite_insert(InboxClaim).values(values)
        stmt = lite.on_conflict_do_update(
            index_elements=[InboxClaim.key],
            set_={"claimed_at": lite.excluded.claimed_at, "path": lite.excluded.path},
            where=InboxClaim.node == node,
        )
    else:
        raise StoreError(f"claims need PostgreSQL or SQLite, not {dialect}")
    result = session.execute(stmt.returning(InboxClaim.key))
    return result.first() is not None


def release_claims(session: Session, keys: Iterable[str], *, node: str) -> None:
    """Drop this node's claims with these keys (a claim taken over meanwhile stays)."""
    wanted = list(dict.fromkeys(keys))
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        session.execute(
            delete(InboxClaim).where(InboxClaim.key.in_(chunk), InboxClaim.node == node)
        )


def release_node(session: Session, node: str) -> int:
    """Drop every claim of `node`; the number dropped."""
    result = session.execute(delete(InboxClaim).where(InboxClaim.node == node))
    return int(getattr(result, "rowcount", 0) or 0)


def release_all(session: Session) -> None:
    """Drop every claim (a sole daemon starting: any claim left is from its own crash)."""
    session.execute(delete(InboxClaim))


def claim_holders(session: Session) -> dict[str, int]:
    """How many claims each node holds now."""
    rows = session.execute(select(InboxClaim.node, InboxClaim.key))
    counts: dict[str, int] = {}
    for node, _key in rows:
        counts[node] = counts.get(node, 0) + 1
    return counts


def take_over_stale(
    session: Session, *, node: str, stale_seconds: float, now: dt.datetime | None = None
) -> list[str]:
    """Mark every other node whose heartbeat is stale as lost and drop its claims.

    Returns the nodes taken over; their pending rows are the caller's to recover, in the same
    transaction. Each dead node is taken over once: the update that marks it lost only matches
    while it is not, so of two live nodes racing for it one gets it, the other nothing.
    """
    moment = now or utcnow()
    rows = session.scalars(
        select(DaemonState).where(
            DaemonState.node != node, DaemonState.state.not_in((DAEMON_STOPPED, DAEMON_LOST))
        )
    )
    candidates = [
        (r.node, r.heartbeat_at) for r in rows if is_stale(r, now=moment, seconds=stale_seconds)
    ]
    taken: list[str] = []
    for name, beat in candidates:
        # Matches only if that node has neither beaten again nor been taken over since.
        result = session.execute(
            update(DaemonState)
            .where(
                DaemonState.node == name,
                DaemonState.state.not_in((DAEMON_STOPPED, DAEMON_LOST)),
                DaemonState.heartbeat_at.is_(None)
                if beat is None
                else DaemonState.heartbeat_at == beat,
            )
            .values(state=DAEMON_LOST, queue_depth=0, in_flight=0)
        )
        if getattr(result, "rowcount", 0):
            release_node(session, name)
            taken.append(name)
    return taken


def stopped_nodes(session: Session) -> set[str]:
    """Nodes that stopped (cleanly, or taken over as lost)."""
    stmt = select(DaemonState.node).where(DaemonState.state.in_((DAEMON_STOPPED, DAEMON_LOST)))
    return set(session.scalars(stmt))


def pending_of(session: Session, nodes: Iterable[str], *, unowned: bool) -> list[Image]:
    """Pending images made by `nodes` (and, with `unowned`, by no recorded node), oldest first."""
    cond: ColumnElement[bool] = Image.node.in_(list(nodes))
    if unowned:
        cond = cond | Image.node.is_(None)
    stmt = select(Image).where(Image.status == STATUS_PENDING, cond).order_by(Image.id)
    return list(session.scalars(stmt))
