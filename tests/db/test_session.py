"""Opening databases: pragmas, read-only access, errors, transient errors (a lock, a full disk),
writability, UTC datetimes."""

from __future__ import annotations

import datetime as dt
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from inboxsort.db import (
    STATUS_PENDING,
    Correction,
    Database,
    Image,
    UTCDateTime,
    database_write_problem,
    is_disk_full_error,
    is_transient_db_error,
    open_database,
)
from inboxsort.errors import StoreError
from tests.helpers.disklimits import refusing_writes


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "inboxsort.db"


@pytest.fixture
def db(db_file: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{db_file}")
    yield database
    database.close()


def _image(name: str = "a.jpg", **kw: object) -> Image:
    kw.setdefault("status", STATUS_PENDING)
    return Image(original_name=name, source_path=f"/inbox/{name}", path=f"/inbox/{name}", **kw)


def test_pragmas_are_set_on_every_connection(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_foreign_keys_are_enforced(db: Database) -> None:
    with db.session() as session:
        session.add(Correction(image_id=12345, new_label="cats", source="label"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_readonly_reads_while_a_writer_is_open(db: Database, db_file: Path) -> None:
    with db.session() as session:
        session.add(_image("committed.jpg"))
        session.commit()
    reader = open_database(f"sqlite:///{db_file}", readonly=True)
    try:
        with db.session() as writer:
            writer.add(_image("uncommitted.jpg"))
            writer.flush()  # the writer now holds SQLite's write lock
            with reader.session() as session:
                names = session.scalars(select(Image.original_name)).all()
            assert names == ["committed.jpg"]
            writer.rollback()
        with reader.session() as session:
            session.add(_image("nope.jpg"))
            with pytest.raises(OperationalError, match="readonly"):
                session.commit()
    finally:
        reader.close()


def test_readonly_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "x.db"
    with pytest.raises(StoreError, match=str(missing)):
        open_database(f"sqlite:///{missing}", readonly=True)
    assert not missing.parent.exists()  # read-only never creates folders


@pytest.mark.parametrize("readonly", [False, True])
def test_directory_instead_of_file_names_the_path(tmp_path: Path, readonly: bool) -> None:
    folder = tmp_path / "adir.db"
    folder.mkdir()
    with pytest.raises(StoreError, match=str(folder)):
        open_database(f"sqlite:///{folder}", readonly=readonly)


def test_not_a_database_becomes_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db.*not a database"):
        open_database(f"sqlite:///{junk}")


def test_password_is_hidden_in_errors() -> None:
    with pytest.raises(StoreError) as info:
        open_database("nosuchdialect://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)


def test_utc_datetime_round_trips_aware_values(db: Database) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=paris)
    with db.session() as session:
        image = _image(received_at=when)
        session.add(image)
        session.commit()
        image_id = image.id
    with db.session() as session:
        loaded = session.get(Image, image_id)
        assert loaded is not None
        assert loaded.received_at == when
        assert loaded.received_at.utcoffset() == dt.timedelta(0)
        assert loaded.received_at.hour == 12
        assert loaded.updated_at is not None and loaded.updated_at.tzinfo is not None
        # SQLite holds naive UTC text, so ordering and comparisons in SQL stay correct.
        raw = session.execute(text("SELECT received_at FROM images")).scalar()
        assert str(raw).startswith("2024-05-01 12:30:15")


def test_utc_datetime_rejects_naive_values(db: Database) -> None:
    with db.session() as session:
        session.add(_image(received_at=dt.datetime(2024, 5, 1, 12, 0)))
        # SQLAlchemy wraps the ValueError raised while binding in a StatementError.
        with pytest.raises(StatementError, match="naive") as info:
            session.commit()
        assert isinstance(info.value.orig, ValueError)
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(dt.datetime(2024, 5, 1), db.engine.dialect)


def test_is_transient_db_error_on_a_real_lock(db_file: Path) -> None:
    holder = open_database(f"sqlite:///{db_file}")
    other = open_database(f"sqlite:///{db_file}")
    try:
        with holder.engine.connect() as locker:
            locker.exec_driver_sql("BEGIN IMMEDIATE")
            with other.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
                with pytest.raises(OperationalError) as info:
                    conn.exec_driver_sql(
                        "INSERT INTO daemon_state (node, state) VALUES ('a', 'running')"
                    )
                    conn.commit()
            locker.rollback()
        assert is_transient_db_error(info.value)
        assert info.value.orig is not None
        assert is_transient_db_error(info.value.orig)  # the bare DBAPI error too
        wrapped = StoreError("write failed")
        wrapped.__cause__ = info.value
        assert is_transient_db_error(wrapped)
    finally:
        holder.close()
        other.close()


def test_is_transient_db_error_false_for_other_errors(db: Database) -> None:
    with db.engine.connect() as conn, pytest.raises(OperationalError) as info:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert not is_transient_db_error(info.value)
    with sqlite3.connect(":memory:") as raw, pytest.raises(sqlite3.IntegrityError) as bad:
        raw.execute("CREATE TABLE t (x NOT NULL)")
        raw.execute("INSERT INTO t VALUES (NULL)")
    assert not is_transient_db_error(bad.value)
    assert not is_transient_db_error(ValueError("database is locked"))
    assert not is_transient_db_error(StoreError("nothing underneath"))
    assert not is_disk_full_error(info.value) and not is_disk_full_error(bad.value)


def _full_database_error(db_file: Path) -> OperationalError:
    """The error of an insert into a database that cannot grow (SQLITE_FULL, code 13)."""
    full = open_database(f"sqlite:///{db_file}")
    try:
        with full.engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE filler (x TEXT)")
            conn.commit()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            conn.exec_driver_sql(f"PRAGMA max_page_count={pages}")
            with pytest.raises(OperationalError) as info:
                conn.exec_driver_sql(f"INSERT INTO filler VALUES ('{'x' * 100_000}')")
                conn.commit()
            conn.rollback()
    finally:
        full.close()
    return info.value


def test_a_full_database_is_a_transient_error(db_file: Path) -> None:
    error = _full_database_error(db_file)
    assert "database or disk is full" in str(error.orig)
    assert is_disk_full_error(error) and is_transient_db_error(error)
    assert is_disk_full_error(error.orig)  # the bare DBAPI error too
    wrapped = StoreError("write failed")
    wrapped.__cause__ = error
    assert is_disk_full_error(wrapped) and is_transient_db_error(wrapped)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_and_quota_io_errors_are_transient(code: int) -> None:
    wrapped = StoreError("write failed")
    wrapped.__cause__ = OSError(code, os.strerror(code))
    assert is_disk_full_error(wrapped) and is_transient_db_error(wrapped)
    assert not is_transient_db_error(OSError(errno.EACCES, "Permission denied"))


def test_the_daemon_busy_timeout_is_set_on_its_connections(db_file: Path) -> None:
    with (
        open_database(f"sqlite:///{db_file}", busy_timeout_ms=1000) as db,
        db.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1000


def test_a_writable_database_and_folder_have_no_write_problem(db: Database, db_file: Path) -> None:
    assert database_write_problem(f"sqlite:///{db_file}") is None
    assert database_write_problem(f"sqlite:///{db_file.parent / 'not-yet.db'}") is None
    assert database_write_problem("sqlite:///:memory:") is None


def test_a_folder_refusing_writes_is_a_write_problem_naming_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    open_database(f"sqlite:///{folder / 'inboxsort.db'}").close()
    with refusing_writes(folder) as how:
        problem = database_write_problem(f"sqlite:///{folder / 'inboxsort.db'}")
    assert problem is not None, how
    assert str(folder / "inboxsort.db") in problem[0] and "refuses writes" in problem[0]
    assert str(folder) in problem[1] and "-wal" in problem[1]
