"""What the web page reads: one page of images by filter, choices, counts and time series."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import STATUS_DELETED, STATUS_FAILED, Correction, Image, ModelVersion


@dataclass(frozen=True)
class ReviewFilter:
    """The review grid's filters; None means any."""

    label: str | None = None
    status: str | None = None
    model: int | None = None
    min_score: float | None = None
    max_score: float | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    node: str | None = None
    # Paths below this prefix (the library's _review/ folder, with its trailing slash).
    under: str | None = None
    # Lowest scores first instead of newest first: the uncertain ones.
    uncertain: bool = False


def _filtered(stmt: Select[Any], f: ReviewFilter) -> Select[Any]:
    conditions: list[tuple[Any, Callable[[Any], ColumnElement[bool]]]] = [
        (f.label, lambda v: Image.label == v),
        (f.status, lambda v: Image.status == v),
        (f.model, lambda v: Image.model_version == v),
        (f.min_score, lambda v: Image.score >= v),
        (f.max_score, lambda v: Image.score <= v),
        (f.since, lambda v: Image.received_at >= v),
        (f.until, lambda v: Image.received_at < v),
        (f.node, lambda v: Image.node == v),
        # A prefix match with LIKE's wildcards escaped: a folder named 50%_off stays literal.
        (f.under, lambda v: Image.path.like(_like_prefix(v), escape="\\")),
    ]
    for value, condition in conditions:
        if value is not None:
            stmt = stmt.where(condition(value))
    return stmt


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def review_page(session: Session, f: ReviewFilter, *, offset: int, limit: int) -> list[Image]:
    """One page of images matching `f`: newest first, or lowest score first when uncertain."""
    order: list[Any]
    if f.uncertain:
        order = [Image.score, Image.id.desc()]
        ids = _filtered(select(Image.id), f).where(Image.score.is_not(None))
    else:
        # id breaks ties, so pages are stable when many images arrive in the same instant.
        order = [Image.received_at.desc(), Image.id.desc()]
        ids = _filtered(select(Image.id), f)
    # The page's ids first, then their rows: the sort then moves narrow keys instead of
    # whole rows with their paths (several times faster on a large library).
    page = ids.order_by(*order).offset(offset).limit(limit).scalar_subquery()
    return list(session.scalars(select(Image).where(Image.id.in_(page)).order_by(*order)))


def review_count(session: Session, f: ReviewFilter) -> int:
    """How many images match `f` (the uncertain order counts only scored ones)."""
    stmt = _filtered(select(func.count()).select_from(Image), f)
    if f.uncertain:
        stmt = stmt.where(Image.score.is_not(None))
    return session.scalar(stmt) or 0


def image_row(session: Session, image_id: int) -> Image | None:
    """One image's row by id, or None."""
    return session.get(Image, image_id)


def filter_choices(session: Session) -> dict[str, list[Any]]:
    """The values the grid's filters can take: labels, model versions, statuses and nodes."""

    # One pass over the table for the unindexed columns: their combinations are few.
    combos = list(session.execute(select(Image.label, Image.model_version, Image.node).distinct()))

    def values(index: int) -> list[Any]:
        return sorted({c[index] for c in combos if c[index] is not None})

    statuses = select(Image.status).distinct().order_by(Image.status)
    return {
        "labels": values(0),
        "models": values(1),
        "statuses": list(session.scalars(statuses)),
        "nodes": values(2),
    }


def count_by_status_label(session: Session) -> list[tuple[str, str | None, int]]:
    """(status, label, count) for every pair that has images."""
    stmt = select(Image.status, Image.label, func.count()).group_by(Image.status, Image.label)
    return [(status, label, count) for status, label, count in session.execute(stmt)]


def failed_errors(session: Session) -> list[tuple[str | None, int]]:
    """(error text, count) over failed images; the caller groups texts into reasons."""
    stmt = (
        select(Image.error, func.count()).where(Image.status == STATUS_FAILED).group_by(Image.error)
    )
    return [(error, count) for error, count in session.execute(stmt)]


def corrections_by_source(session: Session) -> dict[str, int]:
    """The number of corrections from each source (move, label, review, reclassify)."""
    stmt = select(Correction.source, func.count()).group_by(Correction.source)
    return {source: count for source, count in session.execute(stmt)}


def corrections_since(session: Session, since: dt.datetime) -> list[dt.datetime]:
    """When each correction made at or after `since` was made, in no particular order."""
    stmt = select(Correction.created_at).where(Correction.created_at >= since)
    return list(session.scalars(stmt))


def retrain_outcomes(session: Session) -> dict[str, int]:
    """Versions the gate promoted, refused, or never judged (trained by hand)."""
    out = {"promoted": 0, "refused": 0, "not_gated": 0}
    stmt = select(ModelVersion.promoted, func.count()).group_by(ModelVersion.promoted)
    for promoted, count in session.execute(stmt):
        key = "not_gated" if promoted is None else "promoted" if promoted else "refused"
        out[key] += count
    return out


def retrain_durations(session: Session) -> list[tuple[str, float]]:
    """(outcome, the worker's total wall seconds) of each gated version that recorded them."""
    stmt = select(ModelVersion.promoted, ModelVersion.metrics).where(
        ModelVersion.promoted.is_not(None)
    )
    out = []
    for promoted, metrics in session.execute(stmt):
        # Read in Python: JSON paths differ between SQLite and PostgreSQL, and versions from
        # before wall seconds were recorded (or trained by hand) have none.
        retrain = metrics.get("retrain") if isinstance(metrics, dict) else None
        wall = retrain.get("wall_seconds") if isinstance(retrain, dict) else None
        total = wall.get("total") if isinstance(wall, dict) else None
        if isinstance(total, int | float):
            out.append(("promoted" if promoted else "refused", float(total)))
    return out


def mark_sent_back(session: Session, image_id: int, *, note: str) -> None:
    """A failed image's file was moved back to the inbox: its row no longer names a file.

    The daemon files the file again under a new row; this one stays, `deleted`, saying where
    the file went, so the history of the failure is kept.
    """
    row = session.get(Image, image_id)
    if row is not None:
        row.status = STATUS_DELETED
        row.error = note if not row.error else f"{note}; failed before: {row.error}"
