"""The rows retraining reads and marks: confirmed images, retrain attempts, used corrections."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from inboxsort.db.schema import SOURCE_RECLASSIFY, STATUS_FILED, Correction, Image, ModelVersion


class ConfirmedImage(NamedTuple):
    """A filed image the user never corrected: where it is, its label and its content hash."""

    path: str
    label: str
    sha256: str


def confirmed_images(session: Session, classes: Iterable[str]) -> list[ConfirmedImage]:
    """Filed images labelled one of `classes`, with a hash, and no correction but a reclassify."""
    # A reclassified image left in place is like one the daemon filed: a model's label the
    # user let stand. Any other correction makes it a correction, not a confirmation.
    corrected = select(Correction.image_id).where(Correction.source != SOURCE_RECLASSIFY)
    stmt = select(Image.path, Image.label, Image.sha256).where(
        Image.status == STATUS_FILED,
        Image.label.in_(list(classes)),
        Image.sha256.is_not(None),
        Image.id.not_in(corrected),
    )
    return [
        ConfirmedImage(path, label, sha)
        for path, label, sha in session.execute(stmt)
        if label is not None and sha is not None
    ]


def pool_looks(session: Session, version: int) -> list[ModelVersion]:
    """The rows of `version` and of every version trained from it: each records a retrain look."""
    stmt = select(ModelVersion).where(
        or_(ModelVersion.parent == version, ModelVersion.version == version)
    )
    return list(session.scalars(stmt))


def mark_corrections_used(session: Session, correction_ids: Iterable[int], version: int) -> None:
    """Record that `version` was trained on these corrections (in the caller's transaction)."""
    session.execute(
        update(Correction)
        .where(Correction.id.in_(list(correction_ids)))
        .values(used_in_version=version)
    )
