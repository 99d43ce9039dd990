"""PostgreSQL as the database, on the real test server: migrations (fresh, concurrent, from old
revisions with rows), read-only access, the retry rules on real server errors, collation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from inboxsort.db import (
    STATUS_FILED,
    Base,
    Database,
    Image,
    current_revision,
    head_revision,
    is_disk_full_error,
    is_transient_db_error,
    open_database,
)
from inboxsort.db.heartbeat import read_heartbeats, write_heartbeat
from inboxsort.db.queries import filed_paths
from inboxsort.db.retry import retry_locked
from inboxsort.db.session import MIGRATION_LOCK_KEY, _alembic_config
from inboxsort.errors import StoreError
from tests.db.test_migrations import _OLD_ROWS, INDEXES, TABLES
from tests.helpers import pgdb
from tests.helpers.dbrace import concurrent_opens


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[Database]:
    database = open_database(fresh_pg_url)
    yield database
    database.close()


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


# ---- migrations -------------------------------------------------------------------------------


def test_a_fresh_database_gets_every_table_index_and_matches_the_orm(pg: Database) -> None:
    insp = inspect(pg.engine)
    assert set(insp.get_table_names()) >= TABLES
    for table, wanted in INDEXES.items():
        assert wanted <= {ix["name"] for ix in insp.get_indexes(table)}
    assert current_revision(pg) == head_revision()
    with pg.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_concurrent_first_opens_migrate_once(fresh_pg_url: str) -> None:
    assert concurrent_opens(fresh_pg_url) == []
    with open_database(fresh_pg_url, readonly=True) as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        assert current_revision(db) == head_revision()


def test_the_migration_waits_for_the_advisory_lock(fresh_pg_url: str) -> None:
    # Another process migrating holds the lock: opening waits for it rather than racing.
    with psycopg.connect(pgdb._conninfo(fresh_pg_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        release = threading.Timer(0.5, holder.execute, ("SELECT pg_advisory_unlock_all()",))
        started = time.monotonic()
        release.start()
        try:
            database = open_database(fresh_pg_url)
        finally:
            release.join()
        waited = time.monotonic() - started
    assert waited >= 0.45
    assert current_revision(database) == head_revision()
    database.close()


def _write_0001_rows(conn: Connection) -> None:
    """test_migrations' 0001 rows, plus a version whose classes are JSON null."""
    now = "2024-06-01 12:00:00+00"
    for version, classes in ((1, '["cats", "dogs"]'), (5, '["birds", "cats", "dogs"]')):
        conn.execute(
            text(
                "INSERT INTO model_versions (version, created_at, path, metrics, active, classes)"
                " VALUES (:v, :now, :p, '{}', false, CAST(:c AS json))"
            ),
            {"v": version, "now": now, "p": f"/models/{version:04d}", "c": classes},
        )
    conn.execute(
        text(
            "INSERT INTO model_versions (version, created_at, path, metrics, active, classes)"
            " VALUES (7, :now, '/models/0007', '{}', false, 'null')"
        ),
        {"now": now},
    )
    rows = dict(_OLD_ROWS)
    rows[7] = ("cats", 0.6, 7, [("dogs", "cats", "move")])  # a model of unknown classes
    for image_id, (label, score, version, fixes) in rows.items():
        conn.execute(
            text(
                "INSERT INTO images (id, original_name, source_path, path, label, score,"
                " model_version, status, received_at)"
                " VALUES (:id, :n, :s, :p, :label, :score, :v, :status, :now)"
            ),
            {
                "id": image_id,
                "n": f"{image_id}.jpg",
                "s": f"/inbox/{image_id}.jpg",
                "p": f"/lib/{image_id}.jpg",
                "label": label,
                "score": score,
                "v": version,
                "status": "filed" if label else "failed",
                "now": now,
            },
        )
        for old, new, source in fixes:
            conn.execute(
                text(
                    "INSERT INTO corrections (image_id, old_label, new_label, source, created_at)"
                    " VALUES (:i, :o, :n, :s, :now)"
                ),
                {"i": image_id, "o": old, "n": new, "s": source, "now": now},
            )


def test_upgrading_an_0001_database_with_rows_backfills_as_on_sqlite(fresh_pg_url: str) -> None:
    old = open_database(fresh_pg_url, migrate=False)
    with old.engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0001")
        _write_0001_rows(conn)
    old.close()

    upgraded = open_database(fresh_pg_url)
    with upgraded.engine.connect() as conn:
        values = {
            row[0]: tuple(row[1:])
            for row in conn.exec_driver_sql(
                "SELECT id, label, score, model_label, model_score, node, origin "
                "FROM images ORDER BY id"
            )
        }
    assert values[1] == ("cats", pytest.approx(0.2422), "dogs", 0.7578, None, "inbox")
    assert values[2] == ("cats", 0.9, "cats", 0.9, None, "inbox")
    assert values[3] == ("cats", 0.8, "cats", 0.8, None, "inbox")
    assert values[4] == ("birds", None, "cats", 0.6, None, "inbox")
    assert values[5] == ("dogs", 0.55, "dogs", 0.55, None, "inbox")
    assert values[6] == (None, None, None, None, None, "inbox")
    assert values[7] == ("cats", None, "dogs", 0.6, None, "inbox")  # classes unknown
    assert current_revision(upgraded) == head_revision()

    with upgraded.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "0001")
    with upgraded.engine.connect() as conn:
        scores = dict(conn.exec_driver_sql("SELECT id, score FROM images").all())
        assert conn.exec_driver_sql("SELECT count(*) FROM corrections").scalar() == 6
    assert scores[1] == 0.7578 and scores[7] == 0.6
    with upgraded.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "base")
    assert not TABLES & set(inspect(upgraded.engine).get_table_names())
    upgraded.close()


def test_a_future_revision_is_refused(pg: Database, fresh_pg_url: str) -> None:
    with pg.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    pg.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"9999.*newer"):
            open_database(fresh_pg_url, readonly=readonly)


# ---- read-only access -------------------------------------------------------------------------


def test_a_readonly_database_reads_and_refuses_every_write(pg: Database, fresh_pg_url: str) -> None:
    with pg.begin() as session:
        session.add(Image(original_name="a.jpg", source_path="/in/a", path="/a", status="filed"))
    with open_database(fresh_pg_url, readonly=True, migrate=False) as ro:
        with ro.session() as session:
            assert [i.original_name for i in session.query(Image)] == ["a.jpg"]
        with pytest.raises(DBAPIError) as info, ro.begin() as session:
            session.add(Image(original_name="b.jpg", source_path="/in/b", path="/l", status="x"))
        assert _sqlstate(info.value) == "25006"  # read_only_sql_transaction
        with pytest.raises(DBAPIError), ro.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM images")
    with pg.session() as session:
        assert session.query(Image).count() == 1


def test_a_readonly_open_of_an_empty_database_creates_nothing(fresh_pg_url: str) -> None:
    with open_database(fresh_pg_url, readonly=True) as ro:
        assert current_revision(ro) is None
        assert inspect(ro.engine).get_table_names() == []


def test_the_busy_timeout_is_the_servers_lock_timeout(fresh_pg_url: str) -> None:
    with (
        open_database(fresh_pg_url, busy_timeout_ms=1000) as db,
        db.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1s"
        assert conn.exec_driver_sql("SHOW default_transaction_read_only").scalar() == "off"


# ---- errors worth a retry ---------------------------------------------------------------------


def test_a_row_lock_is_transient_and_retried_until_it_is_released(pg: Database) -> None:
    with pg.begin() as session:
        session.add(Image(id=1, original_name="a", source_path="/in/a", path="/a", status="x"))
    daemon = open_database(pg.url, busy_timeout_ms=100)
    try:
        with pg.engine.connect() as holder:
            holder.exec_driver_sql("UPDATE images SET label = 'cats' WHERE id = 1")

            def write() -> str:
                with daemon.engine.begin() as conn:
                    conn.exec_driver_sql("UPDATE images SET label = 'dogs' WHERE id = 1")
                return "written"

            with pytest.raises(OperationalError) as info:
                write()
            assert _sqlstate(info.value) == "55P03" and is_transient_db_error(info.value)
            waits: list[float] = []

            def wait(seconds: float) -> bool:
                waits.append(seconds)
                if len(waits) == 2:
                    holder.commit()
                return False

            assert retry_locked(write, what="test", wait=wait) == "written"
            assert len(waits) == 2
    finally:
        daemon.close()
    with pg.session() as session:
        assert session.get(Image, 1).label == "dogs"  # type: ignore[union-attr]


def test_a_deadlock_is_transient(pg: Database) -> None:
    with pg.begin() as session:
        for i in (1, 2):
            session.add(Image(id=i, original_name="a", source_path="/in", path="/a", status="x"))
    errors: list[BaseException] = []
    with pg.engine.connect() as a, pg.engine.connect() as b:
        a.exec_driver_sql("UPDATE images SET label = 'a' WHERE id = 1")
        b.exec_driver_sql("UPDATE images SET label = 'b' WHERE id = 2")

        def cross(conn: Connection, image_id: int) -> None:
            try:
                conn.exec_driver_sql(f"UPDATE images SET label = 'x' WHERE id = {image_id}")
            except DBAPIError as exc:
                errors.append(exc)
                conn.rollback()

        other = threading.Thread(target=cross, args=(a, 2))
        other.start()
        time.sleep(0.2)
        cross(b, 1)
        other.join()
        a.rollback()
        b.rollback()
    assert len(errors) == 1
    assert isinstance(errors[0], DBAPIError)
    assert _sqlstate(errors[0]) == "40P01" and is_transient_db_error(errors[0])


def test_a_connection_the_server_dropped_is_transient_and_replaced(pg: Database) -> None:
    with pg.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with pg.engine.connect() as killer:
            killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(DBAPIError) as info:
            conn.exec_driver_sql("SELECT 1")
    assert is_transient_db_error(info.value) and not is_disk_full_error(info.value)
    with pg.session() as session:  # the next try gets a working connection
        assert session.query(Image).count() == 0


def test_other_server_errors_are_not_transient(pg: Database) -> None:
    with pytest.raises(DBAPIError) as missing, pg.engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    with pg.begin() as session:
        session.add(Image(id=1, original_name="a", source_path="/in", path="/a", status="x"))
    with pytest.raises(DBAPIError) as duplicate, pg.begin() as session:
        session.add(Image(id=1, original_name="a", source_path="/in", path="/a", status="x"))
    for error in (missing.value, duplicate.value):
        assert not is_transient_db_error(error) and not is_disk_full_error(error)


def test_the_servers_disk_full_is_a_full_database() -> None:
    # The server's disk cannot be filled from a test: this is the error psycopg raises for it.
    orig = psycopg.errors.DiskFull("could not extend file: No space left on device")
    error = OperationalError("INSERT INTO images ...", {}, orig)
    assert is_disk_full_error(error) and is_transient_db_error(error)
    wrapped = StoreError("write failed")
    wrapped.__cause__ = error
    assert is_disk_full_error(wrapped)


# ---- opening errors and collation ---------------------------------------------------------------


def test_an_unreachable_server_or_missing_driver_is_a_clear_store_error() -> None:
    with pytest.raises(StoreError, match=r"cannot open database postgresql\+psycopg://.*:1/x"):
        open_database("postgresql+psycopg://postgres@127.0.0.1:1/x")
    with pytest.raises(StoreError, match=r"pip install 'inboxsort\[postgres\]'"):
        open_database("postgresql+pg8000://postgres@127.0.0.1/x")  # a driver not installed


def test_paths_below_a_folder_whatever_the_collation(tmp_path: object) -> None:
    # ICU's en-US puts '+' between '/' and '0': a plain range would take /lib/cats+x/ in.
    name = pgdb.PREFIX + "icu_" + str(time.monotonic_ns())
    with pgdb._admin() as admin:
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
            "LOCALE 'C.UTF-8'"
        )
    url = pgdb.url_of(name)
    try:
        with open_database(url) as db, db.begin() as session:
            for i, path in enumerate(["/lib/cats/a.jpg", "/lib/cats+x/b.jpg", "/lib/cats/s/c"]):
                session.add(
                    Image(id=i + 1, original_name="n", source_path="/in", path=path, status="x")
                )
            session.flush()
            session.execute(text(f"UPDATE images SET status = '{STATUS_FILED}'"))
            below = sorted(p for _, p in filed_paths(session, "/lib/cats", below=True))
        assert below == ["/lib/cats/a.jpg", "/lib/cats/s/c"]
    finally:
        pgdb.drop_database(url)


def test_db_upgrade_on_the_command_line(fresh_pg_url: str, make_config, run_cli) -> None:
    config = make_config(database_url=fresh_pg_url)
    result = run_cli("--config", config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"database at revision {head_revision()}\n"
    with open_database(fresh_pg_url, readonly=True) as db:
        assert set(inspect(db.engine).get_table_names()) >= TABLES


def test_upgrading_an_0004_heartbeat_row_adds_its_histograms_column(fresh_pg_url: str) -> None:
    old = open_database(fresh_pg_url, migrate=False)
    with old.engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0004")
        conn.exec_driver_sql(
            "INSERT INTO daemon_state (node, pid, state, processed, failed, queue_depth, "
            "in_flight) VALUES ('box', 42, 'running', 7, 1, 0, 0)"
        )
    old.close()
    upgraded = open_database(fresh_pg_url)
    histograms = {"batch_size": {"bounds": [1.0], "buckets": [2, 3], "sum": 5.0, "count": 3}}
    with upgraded.begin() as session:
        write_heartbeat(session, node="box", batch_histograms=histograms)
    with upgraded.session() as session:
        (row,) = read_heartbeats(session)
    assert (row.pid, row.processed, row.batch_histograms) == (42, 7, histograms)
    with upgraded.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "0004")
    with upgraded.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("daemon_state")}
    assert "batch_histograms" not in columns
    upgraded.close()
