"""Rows as the daemon leaves them after filing, for library and label tests; and files as the
model leaves them, ready to be filed, for filing and recovery tests.

Import as `from filedrows import ...` (this folder is on sys.path through conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy import select

from inboxsort.db import STATUS_FILED, Correction, Database, Image, utcnow
from inboxsort.intake.records import Claim, Decoded
from inboxsort.model.classifier import Classifier
from inboxsort.model.live import LiveModel

CLASSES = ("cats", "dogs")


def write_file(path: Path, data: bytes | None = None) -> Path:
    """Create path with `data` (default: bytes unique to the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else b"image bytes of " + path.name.encode() * 50)
    return path


def file_image(
    db: Database,
    path: Path,
    label: str | None,
    *,
    source: Path | None = None,
    score: float = 0.9,
    model_version: int = 0,
    data: bytes | None = None,
) -> int:
    """Put a file at `path` (or copy `source` there) and record it as filed; returns its id."""
    if source is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
    elif not path.exists():
        write_file(path, data)
    st = path.stat()
    now = utcnow()
    with db.begin() as session:
        row = Image(
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            original_name=path.name,
            source_path=f"/inbox/{path.name}",
            path=str(path),
            dest_path=None,
            label=label,
            score=score,
            model_version=model_version,
            status=STATUS_FILED,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
            received_at=now,
            classified_at=now,
            filed_at=now,
        )
        session.add(row)
        session.flush()
        return row.id


def get_image(db: Database, image_id: int) -> Image:
    """The row as stored now."""
    with db.session() as session:
        row = session.get(Image, image_id)
        assert row is not None
        return row


def corrections(db: Database) -> list[Correction]:
    """Every correction, oldest first."""
    with db.session() as session:
        return list(session.scalars(select(Correction).order_by(Correction.id)))


def classified(
    folder: Path, name: str | bytes, *, label: str = "cats", data: bytes | None = None
) -> Decoded:
    """A file written at folder/name (raw bytes allowed), claimed, hashed and labelled."""
    raw = os.fsencode(name)
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))
    path.write_bytes(data if data is not None else b"pixels of " + raw * 40)
    claim = Claim.from_stat(path, os.lstat(path), received_at=utcnow())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pixels = np.zeros((2, 2, 3), np.uint8)
    return Decoded(claim, digest, pixels, None, label=label, score=0.9, model_version=1)


def serving(classes: tuple[str, ...] = CLASSES) -> LiveModel:
    """The model being served, as the library tracker sees it: only its classes matter there."""
    # No network behind it: the tracker never classifies, it asks which folders are classes.
    return LiveModel(Classifier(model=None, classes=tuple(classes), image_size=160, version=1))


def forget_stored_files(db: Database, version: int) -> None:
    """Drop a version's files from the database, as for a version registered before 0004: its
    folder on this node is then the only copy, and nothing heals a damaged one."""
    from sqlalchemy import delete

    from inboxsort.db.schema import ModelArtifact

    with db.begin() as session:
        session.execute(delete(ModelArtifact).where(ModelArtifact.version == version))
