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
from inboxsort.db.session import _alembic_config
from inboxsort.errors import StoreError

TABLES = {"images", "corrections", "model_versions", "daemon_state"}
INDEXES = {
    "images": {
        "ix_images_sha256",
        "ix_images_source_path",
        "ix_images_path",
        "ix_images_status",
        "ix_images_device_inode",
    },
    "corrections": {"ix_corrections_image_id"},
}


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
    assert current_revision(db) == "0001" == head_revision()


def test_migration_matches_the_orm_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_open_twice_is_idempotent(db_file: Path) -> None:
    url = f"sqlite:///{db_file}"
    for _ in range(2):
        database = open_database(url)
        assert current_revision(database) == "0001"
        database.close()
    open_database(url).close()  # and upgrading an up-to-date database is a no-op
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]


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
    assert current_revision(db) == "0001"


def test_future_revision_is_refused(db: Database, db_file: Path) -> None:
    db.close()
    with sqlite3.connect(db_file) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            open_database(f"sqlite:///{db_file}", readonly=readonly)
        message = str(info.value)
        assert "9999" in message and "newer" in message and "0001" in message


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
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def opener() -> None:
        barrier.wait()
        try:
            open_database(url).close()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    database = open_database(url, readonly=True)
    assert current_revision(database) == "0001"
    database.close()
