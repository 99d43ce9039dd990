"""Model version files kept in the database (model_artifacts), so every node can load them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from inboxsort.db.schema import ModelArtifact


def put_artifacts(session: Session, version: int, files: Mapping[str, bytes]) -> None:
    """Store (or replace) these files of `version`, each with its SHA-256 (the caller commits)."""
    if not files:
        return
    session.execute(
        delete(ModelArtifact).where(
            ModelArtifact.version == version, ModelArtifact.name.in_(list(files))
        )
    )
    for name, data in files.items():
        session.add(
            ModelArtifact(
                version=version,
                name=name,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                data=data,
            )
        )
    session.flush()


def artifact_hashes(session: Session, version: int) -> dict[str, str]:
    """name -> SHA-256 of each stored file of `version` ({} when none is stored)."""
    stmt = select(ModelArtifact.name, ModelArtifact.sha256).where(ModelArtifact.version == version)
    return {name: sha for name, sha in session.execute(stmt)}


def read_artifacts(session: Session, version: int) -> list[ModelArtifact]:
    """Every stored file of `version`, contents included, by name."""
    stmt = (
        select(ModelArtifact).where(ModelArtifact.version == version).order_by(ModelArtifact.name)
    )
    return list(session.scalars(stmt))
