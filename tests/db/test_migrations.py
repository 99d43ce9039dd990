"""Alembic migrations: fresh databases, idempotence, downgrade, future revisions."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from inboxsort.db import Base, Database, current_revision, head_revision, open_database
from inboxsort.db.heartbeat import read_heartbeats, write_heartbeat
from inboxsort.db.histograms import Histogram
from inboxsort.db.session import _alembic_config
from inboxsort.errors import StoreError
from tests.helpers.dbrace import concurrent_opens

HEAD = "0005"
TABLES = {"images", "corrections", "model_versions", "daemon_state"}
INDEXES = {
    "images": {
        "ix_images_sha256",
        "ix_images_source_path",
        "ix_images_path",
        "ix_images_status",
        "ix_images_device_inode",
        "ix_images_origin",
    },
    "corrections": {"ix_corrections_image_id"},
}


def _migrate_only_to(url: str, revision: str) -> None:
    """Bring a fresh database up to an old `revision` only, as an older release left it."""
    old = open_database(url, migrate=False)
    with old.engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), revision)
    old.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "inboxsort.db"


@pytest.fixture
def db(db_file: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{db_file}")
    yield database
    database.close()


def test_fresh_database_gets_every_table_index_and_revision(db: Database, db_file: Path) -> None:
    assert db_file.is_file()  # the parent folder was created
    insp = inspect(db.engine)
    assert set(insp.get_table_names()) >= TABLES
    for table, wanted in INDEXES.items():
        assert wanted <= {ix["name"] for ix in insp.get_indexes(table)}
    assert current_revision(db) == HEAD == head_revision()


def test_migration_matches_the_orm_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_open_twice_is_idempotent(db_file: Path) -> None:
    url = f"sqlite:///{db_file}"
    for _ in range(2):
        database = open_database(url)
        assert current_revision(database) == HEAD
        database.close()
    open_database(url).close()  # and upgrading an up-to-date database is a no-op
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_database_at_an_older_revision_opens(db_file: Path) -> None:
    url = f"sqlite:///{db_file}"
    first = open_database(url)
    first.close()
    reopened = open_database(url)
    assert current_revision(reopened) == head_revision()
    reopened.close()


def test_downgrade_to_base_drops_everything(db: Database) -> None:
    with db.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "base")
    assert current_revision(db) is None
    assert not TABLES & set(inspect(db.engine).get_table_names())
    open_database(db.url).close()  # and back up again
    assert current_revision(db) == HEAD


def test_future_revision_is_refused(db: Database, db_file: Path) -> None:
    db.close()
    with sqlite3.connect(db_file) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            open_database(f"sqlite:///{db_file}", readonly=readonly)
        message = str(info.value)
        assert "9999" in message and "newer" in message and HEAD in message


def test_migrations_ignore_cwd_and_leave_logging_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the packaged one must be used
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    database = open_database("sqlite:///relative.db")
    database.close()
    assert (tmp_path / "relative.db").is_file()
    assert root.handlers == handlers and root.level == level
    assert not logging.getLogger("alembic").disabled
    assert not logging.getLogger("inboxsort").disabled


def test_readonly_does_not_migrate(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    database = open_database(f"sqlite:///{path}", readonly=True)
    assert current_revision(database) is None
    database.close()
    unmigrated = open_database(f"sqlite:///{path}", migrate=False)
    assert current_revision(unmigrated) is None
    unmigrated.close()


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    # A daemon and a CLI may start together on a fresh file: the migration lock serialises them.
    url = f"sqlite:///{tmp_path / 'race.db'}"
    assert concurrent_opens(url) == []
    database = open_database(url, readonly=True)
    assert current_revision(database) == HEAD
    database.close()


def test_open_waits_for_a_writer_instead_of_failing_the_wal_switch(tmp_path: Path) -> None:
    # A writer holding RESERVED on a fresh rollback-journal file makes SQLite refuse the WAL
    # switch at once, without its busy handler: the race of two first opens, made certain.
    path = tmp_path / "fresh.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        database = open_database(f"sqlite:///{path}")
    finally:
        release.join()
        writer.close()
    assert current_revision(database) == HEAD
    database.close()


# ---- 0002: model_label and model_score; score is the probability of label ------------------

# id: label, score, model_version, corrections as (old_label, new_label, source)
_OLD_ROWS = {
    1: ("cats", 0.7578, 0, [("dogs", "cats", "move")]),  # issue 14: showed cats 0.7578
    2: ("cats", 0.9, 0, []),
    3: ("cats", 0.8, 1, [("cats", "dogs", "move"), ("dogs", "cats", "label")]),  # and back
    4: ("birds", 0.6, 5, [("cats", "birds", "move")]),  # a three-class model
    5: ("dogs", 0.55, 1, [("dogs", "dogs", "review")]),  # confirmed out of _review
    6: (None, None, None, []),  # failed: never classified
}


def _write_0001_rows(db_file: Path) -> None:
    """The rows an 0001 inboxsort left: corrections changed label and kept the model's score."""
    now = "2024-06-01 12:00:00.000000"
    with sqlite3.connect(db_file) as raw:
        for version, classes in ((1, '["cats", "dogs"]'), (5, '["birds", "cats", "dogs"]')):
            raw.execute(
                "INSERT INTO model_versions (version, created_at, path, metrics, active, classes)"
                " VALUES (?, ?, ?, '{}', 0, ?)",
                (version, now, f"/models/{version:04d}", classes),
            )
        for image_id, (label, score, version, fixes) in _OLD_ROWS.items():
            raw.execute(
                "INSERT INTO images (id, original_name, source_path, path, label, score,"
                " model_version, status, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    image_id,
                    f"{image_id}.jpg",
                    f"/inbox/{image_id}.jpg",
                    f"/lib/{image_id}.jpg",
                    label,
                    score,
                    version,
                    "filed" if label else "failed",
                    now,
                ),
            )
            for old, new, source in fixes:
                raw.execute(
                    "INSERT INTO corrections (image_id, old_label, new_label, source, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (image_id, old, new, source, now),
                )


def _image_values(db_file: Path, columns: str) -> dict[int, tuple]:
    with sqlite3.connect(db_file) as raw:
        rows = raw.execute(f"SELECT id, {columns} FROM images ORDER BY id").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_upgrading_an_0001_database_backfills_what_the_model_said(db_file: Path) -> None:
    _migrate_only_to(f"sqlite:///{db_file}", "0001")
    _write_0001_rows(db_file)

    upgraded = open_database(f"sqlite:///{db_file}")
    assert current_revision(upgraded) == HEAD
    values = _image_values(db_file, "label, score, model_label, model_score")
    assert values[1] == ("cats", pytest.approx(0.2422), "dogs", 0.7578)
    assert values[2] == ("cats", 0.9, "cats", 0.9)
    assert values[3] == ("cats", 0.8, "cats", 0.8)  # corrected back to the model's label
    assert values[4] == ("birds", None, "cats", 0.6)  # P(birds) was never recorded
    assert values[5] == ("dogs", 0.55, "dogs", 0.55)
    assert values[6] == (None, None, None, None)
    with upgraded.engine.connect() as conn:  # and the ORM agrees with the upgraded schema
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

    # Down again: score is the model's figure once more, as 0001 kept it; nothing else moves.
    with upgraded.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "0001")
    assert current_revision(upgraded) == "0001"
    upgraded.close()
    assert _image_values(db_file, "label, score") == {
        image_id: (label, score) for image_id, (label, score, _, _) in _OLD_ROWS.items()
    }
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("SELECT count(*) FROM corrections").fetchone() == (5,)


# ---- 0003: node and origin ------------------------------------------------------------------


def test_upgrading_an_0002_database_marks_old_rows_as_from_the_inbox(db_file: Path) -> None:
    url = f"sqlite:///{db_file}"
    _migrate_only_to(url, "0002")
    with sqlite3.connect(db_file) as raw:
        raw.execute(
            "INSERT INTO images (id, original_name, source_path, path, status, received_at) "
            "VALUES (1, 'a.jpg', '/in/a.jpg', '/lib/cats/a.jpg', 'filed', '2026-11-01 10:00:00')"
        )
        raw.execute(
            "INSERT INTO corrections (image_id, old_label, new_label, source, created_at) "
            "VALUES (1, 'cats', 'dogs', 'move', '2026-11-01 11:00:00')"
        )
    database = open_database(url)
    with database.engine.connect() as conn:
        image = conn.exec_driver_sql("SELECT node, origin FROM images").one()
        correction = conn.exec_driver_sql("SELECT node FROM corrections").one()
    assert tuple(image) == (None, "inbox") and tuple(correction) == (None,)
    assert current_revision(database) == HEAD
    with database.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "0002")
    with database.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("images")}
    assert "origin" not in columns and "node" not in columns
    database.close()


# ---- 0005: batch histograms in the heartbeat ------------------------------------------------


def test_upgrading_an_0004_database_keeps_heartbeats_and_adds_histograms(db_file: Path) -> None:
    url = f"sqlite:///{db_file}"
    _migrate_only_to(url, "0004")
    with sqlite3.connect(db_file) as raw:
        raw.execute(
            "INSERT INTO daemon_state (node, pid, state, processed, failed, queue_depth, "
            "in_flight) VALUES ('box', 42, 'running', 7, 1, 0, 0)"
        )
    database = open_database(url)
    assert current_revision(database) == HEAD
    with database.session() as session:
        (row,) = read_heartbeats(session)
    assert (row.node, row.pid, row.processed, row.batch_histograms) == ("box", 42, 7, None)
    histograms = {"batch_size": Histogram([1, 2]).to_json()}
    with database.begin() as session:
        write_heartbeat(session, node="box", batch_histograms=histograms)
    with database.session() as session:
        (row,) = read_heartbeats(session)
    assert row.batch_histograms == histograms and row.processed == 7
    with database.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "0004")
    with database.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("daemon_state")}
        kept = conn.exec_driver_sql("SELECT node, processed FROM daemon_state").one()
    assert "batch_histograms" not in columns and tuple(kept) == ("box", 7)
    database.close()
