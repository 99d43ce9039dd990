"""The model_versions rows the model registry reads and writes; none of these commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from inboxsort.db.schema import ModelVersion, utcnow


def version_numbers(session: Session) -> list[int]:
    """Every registered version number, in no particular order."""
    return list(session.scalars(select(ModelVersion.version)))


def active_version(session: Session) -> int | None:
    """The version whose row is marked active, or None when no row is."""
    stmt = select(ModelVersion.version).where(ModelVersion.active.is_(True))
    return session.scalars(stmt).first()


def version_row(session: Session, version: int) -> ModelVersion | None:
    """The row of one version, or None if it is not registered."""
    return session.get(ModelVersion, version)


def versions_in_order(session: Session) -> list[ModelVersion]:
    """Every registered version's row, oldest (lowest number) first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.version)))


def deactivate_all(session: Session) -> None:
    """Clear the active flag of every registered version (within the caller's transaction)."""
    session.execute(update(ModelVersion).where(ModelVersion.active.is_(True)).values(active=False))


def mark_active(session: Session, version: int) -> None:
    """Set one version's active flag; the caller clears the others in the same transaction."""
    session.execute(update(ModelVersion).where(ModelVersion.version == version).values(active=True))


def add_version(
    session: Session,
    *,
    version: int,
    path: str,
    metrics: dict[str, Any] | None,
    active: bool,
    parent: int | None,
    promoted: bool | None,
    note: str | None,
    image_size: int | None,
    classes: list[str] | None,
) -> ModelVersion:
    """Add the row of a new version, created now (written when the caller's transaction commits)."""
    row = ModelVersion(
        version=version,
        created_at=utcnow(),
        path=path,
        metrics=metrics,
        active=active,
        parent=parent,
        promoted=promoted,
        note=note,
        image_size=image_size,
        classes=classes,
    )
    session.add(row)
    return row
