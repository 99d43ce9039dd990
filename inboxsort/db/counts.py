"""Aggregate counts over images and corrections (what `inboxsort stats` reports)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import Correction, Image


def count_by_status(session: Session) -> dict[str, int]:
    """The number of images with each status (statuses with none are left out)."""
    stmt = select(Image.status, func.count()).group_by(Image.status)
    return {status: count for status, count in session.execute(stmt)}


def count_by_label(session: Session) -> dict[str, int]:
    """The number of images with each label; images with no label are not counted."""
    stmt = select(Image.label, func.count()).where(Image.label.is_not(None)).group_by(Image.label)
    return {label: count for label, count in session.execute(stmt) if label is not None}


def count_corrections(session: Session) -> int:
    """The number of corrections ever recorded, used for training or not."""
    return session.scalar(select(func.count()).select_from(Correction)) or 0


def received_since(session: Session, since: dt.datetime) -> list[dt.datetime]:
    """When each image received at or after `since` was received, in no particular order."""
    return list(session.scalars(select(Image.received_at).where(Image.received_at >= since)))
