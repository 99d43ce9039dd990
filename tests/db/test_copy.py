"""copy_database between real databases: SQLite into a fresh PostgreSQL database and back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxsort.db import (
    STATUS_DUPLICATE,
    STATUS_FILED,
    Correction,
    DaemonState,
    Database,
    Image,
    ModelVersion,
    open_database,
)
from inboxsort.db.copy import copy_database
from inboxsort.errors import StoreError

T0 = dt.datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)


def _fill(db: Database) -> None:
    """Rows with gaps in their ids, a duplicate pointing at a later row, JSON and booleans."""
    with db.begin() as s:
        for image_id in (3, 7, 9):
            s.add(
                Image(
                    id=image_id,
                    sha256=f"{image_id:064x}",
                    original_name=f"é {image_id}.jpg",
                    source_path=f"/in/{image_id}.jpg",
                    path=f"/lib/cats/{image_id}.jpg",
                    label="cats",
                    score=0.25 + image_id / 100,
                    model_version=1,
                    status=STATUS_FILED,
                    size=2**40 + image_id,
                    received_at=T0 + dt.timedelta(minutes=image_id),
                    node="scanner",
                )
            )
        s.flush()
        # Duplicates point at the first copy; this one at a row with a higher id.
        s.get(Image, 3).duplicate_of = 9  # type: ignore[union-attr]
        s.get(Image, 3).status = STATUS_DUPLICATE  # type: ignore[union-attr]
        s.add(Correction(id=4, image_id=7, old_label="dogs", new_label="cats", source="move"))
        s.add(
            ModelVersion(
                version=2,
                path="/models/0002",
                metrics={"test": {"accuracy": 0.5, "n": 10}},
                active=True,
                promoted=None,
                classes=["cats", "dogs"],
            )
        )
        s.add(DaemonState(node="box", pid=42, state="stopped", heartbeat_at=T0))


def _snapshot(db: Database) -> dict[str, list[tuple[object, ...]]]:
    tables = {"images": Image, "corrections": Correction}
    found: dict[str, list[tuple[object, ...]]] = {}
    with db.session() as s:
        for name, model in tables.items():
            columns = [c.key for c in model.__table__.columns]
            found[name] = [
                tuple(getattr(row, c) for c in columns)
                for row in s.scalars(select(model).order_by(model.id))
            ]
        found["model_versions"] = [
            (v.version, v.metrics, v.active, v.promoted, v.classes, v.created_at)
            for v in s.scalars(select(ModelVersion))
        ]
        found["daemon_state"] = [
            (d.node, d.pid, d.heartbeat_at) for d in s.scalars(select(DaemonState))
        ]
    return found


def test_sqlite_into_postgresql_and_back_keeps_every_row_and_id(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    with open_database(f"sqlite:///{tmp_path / 'a.db'}") as source:
        _fill(source)
        before = _snapshot(source)
        with open_database(fresh_pg_url) as target:
            result = copy_database(source, target)
            assert result.rows == {
                "images": 3,
                "corrections": 1,
                "model_versions": 1,
                "daemon_state": 1,
                "claims": 0,
                "model_artifacts": 0,
            }
            assert _snapshot(target) == before
            # New rows take ids after the copied ones, not 1 again.
            with target.begin() as s:
                image = Image(original_name="n", source_path="/in/n", path="/n", status="x")
                s.add(image)
                s.flush()
                s.add(Correction(image_id=image.id, new_label="dogs", source="label"))
                s.flush()
                assert image.id == 10
            with target.session() as s:
                assert max(c.id for c in s.scalars(select(Correction))) == 5
            # ... and back into a new SQLite file, the new rows included.
            with open_database(f"sqlite:///{tmp_path / 'b.db'}") as back:
                copy_database(target, back)
                assert _snapshot(back) == _snapshot(target)


def test_a_target_with_rows_is_refused_and_left_alone(db_url: str, tmp_path: Path) -> None:
    with (
        open_database(f"sqlite:///{tmp_path / 'src.db'}") as source,
        open_database(db_url) as target,
    ):
        _fill(source)
        with target.begin() as s:
            s.add(Image(id=1, original_name="x", source_path="/x", path="/x", status="filed"))
        with pytest.raises(StoreError, match=r"not empty: images \(1 rows\)"):
            copy_database(source, target)
        with target.session() as s:
            assert [i.id for i in s.scalars(select(Image))] == [1]


def test_a_source_at_an_older_revision_is_refused(tmp_path: Path, fresh_pg_url: str) -> None:
    from alembic import command

    from inboxsort.db.session import _alembic_config

    old = open_database(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    with old.engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0002")
    with open_database(fresh_pg_url) as target, pytest.raises(StoreError, match="db upgrade"):
        copy_database(old, target)
    old.close()
