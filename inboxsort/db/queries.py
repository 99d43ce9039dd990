"""Small query helpers shared by the daemon and the CLI; none of them commits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import (
    DAEMON_ROW_ID,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    DaemonState,
    Image,
    utcnow,
)

# Columns write_heartbeat accepts; the primary key is fixed to DAEMON_ROW_ID.
_HEARTBEAT_FIELDS = frozenset(c.key for c in DaemonState.__table__.columns) - {"id"}


def images_by_status(session: Session, status: str) -> list[Image]:
    """Return all images with `status`, oldest first."""
    stmt = select(Image).where(Image.status == status).order_by(Image.id)
    return list(session.scalars(stmt))


def find_by_sha256(
    session: Session, sha256: str, *, statuses: Iterable[str] = (STATUS_FILED,)
) -> Image | None:
    """Return the oldest image with this content hash and one of `statuses`, or None."""
    wanted = list(statuses)
    stmt = (
        select(Image)
        .where(Image.sha256 == sha256, Image.status.in_(wanted))
        .order_by(Image.received_at, Image.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


def find_by_location(session: Session, *, device: int, inode: int) -> Image | None:
    """Return the most recent image recorded at this (device, inode), or None."""
    # Inodes are reused after deletion, so the newest row is the one that can still match.
    stmt = (
        select(Image)
        .where(Image.device == device, Image.inode == inode)
        .order_by(Image.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def find_by_path(session: Session, path: str) -> Image | None:
    """Return the most recent image whose current `path` equals `path`, or None."""
    stmt = select(Image).where(Image.path == path).order_by(Image.id.desc()).limit(1)
    return session.scalars(stmt).first()


def pending_by_source(session: Session, source_path: str) -> Image | None:
    """Return the most recent pending image that arrived at `source_path`, or None."""
    stmt = (
        select(Image)
        .where(Image.source_path == source_path, Image.status == STATUS_PENDING)
        .order_by(Image.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def corrections_since(session: Session, version: int | None) -> list[Correction]:
    """Return corrections not yet used for training, oldest first.

    With `version` given, corrections used only by versions newer than it also count:
    a model trained from `version` has not seen them (e.g. that newer model was rejected).
    """
    cond: ColumnElement[bool] = Correction.used_in_version.is_(None)
    if version is not None:
        cond = or_(cond, Correction.used_in_version > version)
    stmt = select(Correction).where(cond).order_by(Correction.created_at, Correction.id)
    return list(session.scalars(stmt))


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
