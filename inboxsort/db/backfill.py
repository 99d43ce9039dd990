"""The queries of `inboxsort backfill`: what an archive already has on record, and its rows.

A backfill row's `received_at` is the file's mtime (an archive's files arrived when they were
written), so path, size and received_at together say "this very file is on record".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from inboxsort.db.schema import ORIGIN_BACKFILL, STATUS_PENDING, Image

_CHUNK = 500  # under SQLite's limit on bound parameters

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class OnRecord(NamedTuple):
    """What a row says about the file at its path: enough to tell if a file is that file."""

    id: int
    path: str
    size: int | None
    received_at: dt.datetime
    origin: str
    status: str
    sha256: str | None


def mtime_moment(mtime_ns: int) -> dt.datetime:
    """A file's mtime as the aware UTC datetime a row stores (microseconds, as both DBs keep)."""
    return EPOCH + dt.timedelta(microseconds=mtime_ns // 1000)


def _chunks(values: Iterable[str]) -> list[list[str]]:
    distinct = list(dict.fromkeys(values))
    return [distinct[i : i + _CHUNK] for i in range(0, len(distinct), _CHUNK)]


def recorded_at(session: Session, paths: Iterable[str]) -> dict[str, OnRecord]:
    """The newest row whose current path is each of `paths` (paths with none are left out)."""
    found: dict[str, OnRecord] = {}
    columns = (
        Image.id,
        Image.path,
        Image.size,
        Image.received_at,
        Image.origin,
        Image.status,
        Image.sha256,
    )
    for chunk in _chunks(paths):
        stmt = select(*columns).where(Image.path.in_(chunk)).order_by(Image.id.desc())
        for row in session.execute(stmt):
            found.setdefault(row.path, OnRecord(*row))
    return found


def backfilled_with(session: Session, hashes: Iterable[str]) -> dict[str, list[Image]]:
    """Backfill rows (not pending) holding each content hash, oldest first."""
    found: dict[str, list[Image]] = {}
    for chunk in _chunks(hashes):
        stmt = (
            select(Image)
            .where(
                Image.sha256.in_(chunk),
                Image.origin == ORIGIN_BACKFILL,
                Image.status != STATUS_PENDING,
            )
            .order_by(Image.id)
        )
        for row in session.scalars(stmt):
            assert row.sha256 is not None
            found.setdefault(row.sha256, []).append(row)
    return found


def pending_backfill(session: Session) -> list[Image]:
    """Backfill rows a `--file` run left pending (a move it was making when it stopped)."""
    stmt = (
        select(Image)
        .where(Image.origin == ORIGIN_BACKFILL, Image.status == STATUS_PENDING)
        .order_by(Image.id)
    )
    return list(session.scalars(stmt))
