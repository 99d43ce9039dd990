"""Searching images by label, status, time, model, score or name (`inboxsort query`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import Correction, Image


@dataclass(frozen=True)
class ImageQuery:
    """Validated filters, sort and limit of `inboxsort query`."""

    label: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    model: int | None = None
    min_score: float | None = None
    max_score: float | None = None
    name: str | None = None
    corrected: bool = False
    sort: str = "received_at"
    descending: bool = False
    limit: int | None = None


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern (escape character backslash) for a shell glob using * and ?."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def build_select(query: ImageQuery) -> Select[Any]:
    """The SELECT over images that `query` describes (search_images runs it)."""
    # Select[Any]: its parameter is Tuple[Image] in SQLAlchemy 2.0 and Image in 2.1.
    stmt = select(Image)
    if query.label is not None:
        stmt = stmt.where(Image.label == query.label)
    if query.status is not None:
        stmt = stmt.where(Image.status == query.status)
    if query.since is not None:
        stmt = stmt.where(Image.received_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(Image.received_at < query.until)
    if query.model is not None:
        stmt = stmt.where(Image.model_version == query.model)
    if query.min_score is not None:
        stmt = stmt.where(Image.score >= query.min_score)
    if query.max_score is not None:
        stmt = stmt.where(Image.score <= query.max_score)
    if query.name is not None:
        stmt = stmt.where(Image.original_name.ilike(glob_to_like(query.name), escape="\\"))
    if query.corrected:
        stmt = stmt.where(Image.id.in_(select(Correction.image_id)))
    column = Image.__table__.columns[query.sort]
    # id breaks ties, so equal sort keys keep arrival order and pages are stable. NULLs (no
    # score yet) count as the smallest value on every backend, as SQLite has it; PostgreSQL
    # alone would put them last going up and first going down.
    if query.descending:
        order = [column.desc().nulls_last(), Image.id.desc()]
    else:
        order = [column.asc().nulls_first(), Image.id.asc()]
    stmt = stmt.order_by(*order)
    return stmt if query.limit is None else stmt.limit(query.limit)


def search_images(session: Session, query: ImageQuery) -> list[Image]:
    """The images that `query` describes, in its order and up to its limit."""
    return list(session.scalars(build_select(query)))
