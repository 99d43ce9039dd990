"""Lookups of image and correction rows, shared by the flows and the CLI; none of them commits.

The heartbeat row lives in heartbeat.py, counts in counts.py, `inboxsort query` in search.py.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import (
    SOURCE_RECLASSIFY,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    Image,
)

_V = TypeVar("_V")


class FiledFile(NamedTuple):
    """A filed image's id, and what says whether a file is its file: path, inode, size, hash."""

    id: int
    path: str
    device: int | None
    inode: int | None
    size: int | None
    sha256: str | None


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


def filed_files(session: Session) -> list[FiledFile]:
    """Every filed image as a FiledFile (plain values, no ORM objects), in no particular order."""
    stmt = select(Image.id, Image.path, Image.device, Image.inode, Image.size, Image.sha256).where(
        Image.status == STATUS_FILED
    )
    return [FiledFile(*row) for row in session.execute(stmt)]


def filed_paths(session: Session, path: str, *, below: bool = False) -> list[tuple[int, str]]:
    """(id, path) of each filed image at `path` or, with below=True, anywhere under that folder."""
    where: ColumnElement[bool] = Image.path == path
    if below:
        # Everything below the folder, as a range the path index serves ('0' follows '/').
        column: ColumnElement[str] = Image.path.expression
        if session.get_bind().dialect.name == "postgresql":
            # A range of code points, whatever the database's collation (en_US would sort
            # '/' among letters); SQLite always compares bytes.
            column = Image.path.collate("C")
        where = (column > path + os.sep) & (column < path + chr(ord(os.sep) + 1))
    stmt = select(Image.id, Image.path).where(Image.status == STATUS_FILED, where)
    return [(row.id, row.path) for row in session.execute(stmt)]


def other_filed_at(session: Session, path: str, *, besides: int) -> list[Image]:
    """Every filed image whose path is `path`, except the image with id `besides`."""
    stmt = select(Image).where(
        Image.path == path, Image.status == STATUS_FILED, Image.id != besides
    )
    return list(session.scalars(stmt))


def pending_at(session: Session, path: str) -> bool:
    """Whether a pending image is being filed to `path` (its dest_path) or is still there."""
    # Pending rows are few, so the status index keeps this cheap as the table grows.
    stmt = select(Image.id).where(
        Image.status == STATUS_PENDING, or_(Image.dest_path == path, Image.path == path)
    )
    return session.execute(stmt.limit(1)).first() is not None


def with_sha256(
    session: Session, sha256: str, *, statuses: Iterable[str] = (STATUS_FILED,)
) -> list[Image]:
    """Every image with this content hash and one of `statuses`, newest (highest id) first."""
    stmt = (
        select(Image)
        .where(Image.sha256 == sha256, Image.status.in_(list(statuses)))
        .order_by(Image.id.desc())
    )
    return list(session.scalars(stmt))


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


def latest_correction(session: Session, image_id: int) -> Correction | None:
    """The image's most recent correction (the highest id), or None when it has none."""
    stmt = (
        select(Correction)
        .where(Correction.image_id == image_id)
        .order_by(Correction.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def delete_correction(session: Session, correction_id: int) -> None:
    """Delete the correction with this id; no error when there is none (the caller commits)."""
    session.execute(delete(Correction).where(Correction.id == correction_id))
