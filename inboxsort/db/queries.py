"""Small query helpers shared by the daemon and the CLI; none of them commits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import (
    DAEMON_ROW_ID,
    SOURCE_RECLASSIFY,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    DaemonState,
    Image,
    utcnow,
)

_V = TypeVar("_V")

# Columns write_heartbeat accepts; the primary key is fixed to DAEMON_ROW_ID.
_HEARTBEAT_FIELDS = frozenset(c.key for c in DaemonState.__table__.columns) - {"id"}


def pending_images(session: Session) -> list[Image]:
    """Every image whose move a crash may have interrupted (status pending), oldest first."""
    stmt = select(Image).where(Image.status == STATUS_PENDING).order_by(Image.id)
    return list(session.scalars(stmt))


def oldest_by_sha256(
    session: Session, hashes: Iterable[str], *, statuses: Iterable[str] = (STATUS_FILED,)
) -> dict[str, Image]:
    """The oldest image with one of `statuses` for each content hash that has one."""
    wanted = list(statuses)
    found: dict[str, Image] = {}
    for chunk in _chunks(hashes):
        stmt = (
            select(Image)
            .where(Image.sha256.in_(chunk), Image.status.in_(wanted))
            .order_by(Image.received_at, Image.id)
        )
        for row in session.scalars(stmt):
            assert row.sha256 is not None
            found.setdefault(row.sha256, row)
    return found


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


def newest_filed_at(session: Session, path: str) -> Image | None:
    """The newest filed image whose current path is `path`, or None."""
    stmt = (
        select(Image)
        .where(Image.path == path, Image.status == STATUS_FILED)
        .order_by(Image.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def find_filed(session: Session, *, path: str, device: int, inode: int, size: int) -> Image | None:
    """The filed image whose file this is: by (device, inode) first, then by recorded path."""
    row = find_by_location(session, device=device, inode=inode)
    # The size check guards against an inode the filesystem reused for an unrelated file.
    if row is not None and row.status == STATUS_FILED and row.size in (None, size):
        return row
    return newest_filed_at(session, path)


def pending_by_sources(session: Session, source_paths: Iterable[str]) -> dict[str, Image]:
    """The most recent pending image for each of `source_paths` that has one."""
    found: dict[str, Image] = {}
    for chunk in _chunks(source_paths):
        stmt = (
            select(Image)
            .where(Image.source_path.in_(chunk), Image.status == STATUS_PENDING)
            .order_by(Image.id.desc())
        )
        for row in session.scalars(stmt):
            found.setdefault(row.source_path, row)
    return found


def images_by_id(session: Session, ids: Iterable[int]) -> dict[int, Image]:
    """The images with these ids, by id (ids with no row are left out)."""
    found: dict[int, Image] = {}
    for chunk in _chunks(ids):
        found.update(
            (row.id, row) for row in session.scalars(select(Image).where(Image.id.in_(chunk)))
        )
    return found


def _chunks(values: Iterable[_V], size: int = 500) -> list[list[_V]]:
    """Distinct values in lists short enough for SQLite's limit on bound parameters."""
    distinct = list(dict.fromkeys(values))
    return [distinct[i : i + size] for i in range(0, len(distinct), size)]


def uncorrected_filed(session: Session, *, since: dt.datetime | None = None) -> list[Image]:
    """Filed images (filed since `since`, if given) with no correction but a reclassify."""
    # The user's word beats the model: any correction but an earlier reclassify excludes.
    corrected = exists().where(
        Correction.image_id == Image.id, Correction.source != SOURCE_RECLASSIFY
    )
    stmt = select(Image).where(Image.status == STATUS_FILED, ~corrected).order_by(Image.id)
    if since is not None:
        stmt = stmt.where(func.coalesce(Image.filed_at, Image.received_at) >= since)
    return list(session.scalars(stmt))


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
