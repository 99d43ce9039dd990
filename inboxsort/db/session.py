"""Opening the database: engine, SQLite pragmas or PostgreSQL session settings, read-only
access and Alembic migrations."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from inboxsort.db.failures import describe_db_error as describe_db_error
from inboxsort.db.failures import is_disk_full_error as is_disk_full_error
from inboxsort.db.failures import is_transient_db_error as is_transient_db_error
from inboxsort.errors import StoreError

_DB_DIR = Path(__file__).resolve().parent
_ALEMBIC_INI = _DB_DIR / "alembic.ini"
_MIGRATIONS_DIR = _DB_DIR / "migrations"

BUSY_TIMEOUT_MS = 30_000
# The daemon's connections wait this long inside SQLite for a lock, then the retry loop of
# retry.py takes over: its waits end when the daemon is stopping, SQLite's own do not.
DAEMON_BUSY_TIMEOUT_MS = 1_000

# pg_advisory_xact_lock key that serialises schema migrations between processes (any bigint
# works, as long as nothing else in the database uses it): "ibxs-mig" read as a number.
MIGRATION_LOCK_KEY = int.from_bytes(b"ibxs-mig", "big")


class Database:
    """An Engine plus a session factory; one per process, shared by all threads."""

    def __init__(self, engine: Engine, url: str, *, readonly: bool = False) -> None:
        self.engine = engine
        self.url = url
        self.readonly = readonly
        # expire_on_commit=False: rows handed to other threads or printed after the
        # session closed must not trigger lazy reloads (DetachedInstanceError).
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    def session(self) -> Session:
        """Return a new Session; use it as a context manager (`with db.session() as s:`)."""
        return self._sessions()

    def begin(self) -> AbstractContextManager[Session]:
        """Return a context manager yielding a Session that commits on success."""
        return self._sessions.begin()

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)!r}, readonly={self.readonly!r})"


def safe_url(url: str | URL) -> str:
    """Return the URL as text with any password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def sqlite_file(url: URL) -> Path | None:
    """Return the file of a plain sqlite URL, or None (memory, URI form, other backends)."""
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def is_shared(url: str) -> bool:
    """Whether daemons on other machines may share this database (it is not SQLite)."""
    try:
        return make_url(url).get_backend_name() != "sqlite"
    except ArgumentError:
        return False


def sqlite_path(url: str) -> Path | None:
    """The file a database URL names, for a plain SQLite URL; None otherwise or when invalid."""
    try:
        return sqlite_file(make_url(url))
    except ArgumentError:
        return None


def _alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic Config for the packaged migrations, independent of the cwd."""
    cfg = Config(str(_ALEMBIC_INI))
    # configparser interpolates '%', so escape it in the absolute path.
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """Return the newest schema revision this code knows ("0001")."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # only possible if the versions folder was not packaged
        raise StoreError(f"no Alembic revisions found in {_MIGRATIONS_DIR}")
    return head


def _check_known(connection: Connection) -> str | None:
    """Return the database's revision; raise StoreError if it is newer than this code."""
    rev = MigrationContext.configure(connection).get_current_revision()
    if rev is None:
        return None
    script = ScriptDirectory.from_config(_alembic_config())
    known = {s.revision for s in script.walk_revisions()}
    if rev not in known:
        raise StoreError(
            f"database schema {rev} is newer than this inboxsort "
            f"(knows up to {script.get_current_head()}); upgrade inboxsort"
        )
    return rev


def _migrate(engine: Engine) -> None:
    """Run Alembic `upgrade head` on the engine, serialised against other processes."""
    with engine.connect() as conn, conn.begin():
        # Take a lock first so a daemon and a CLI starting together do not both try to create
        # the tables; the loser waits and then finds head.
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            # PostgreSQL's DDL is transactional: the lock and the migration end together.
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        _check_known(conn)
        command.upgrade(_alembic_config(conn), "head")
    # The pooled connection goes back with the busy timeout its engine was opened with.
    engine.dispose()


def _set_sqlite_pragmas(readonly: bool, busy_timeout_ms: int) -> Any:
    """Return a connect-event listener applying the pragmas to each new DBAPI connection."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may need to wait for a lock.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                # WAL lets readers (the CLI) run while the daemon writes; NORMAL is safe in WAL.
                _switch_to_wal(cursor, busy_timeout_ms / 1000)
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def _switch_to_wal(cursor: Any, patience: float) -> None:
    """Set journal_mode=WAL, waiting up to `patience` s for a lock another opener holds."""
    # SQLite answers "database is locked" to this pragma at once, without its busy handler,
    # while another connection is switching the same fresh file; so wait here instead.
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _postgres_options(readonly: bool, lock_timeout_ms: int) -> dict[str, Any]:
    """connect_args of a PostgreSQL engine: its session settings, sent when connecting."""
    # lock_timeout plays SQLite's busy_timeout: a statement waits that long for another
    # writer's row lock, then fails with 55P03, which the retry loop of retry.py waits out.
    options = f"-c lock_timeout={int(lock_timeout_ms)}"
    if readonly:
        # Every transaction of this engine is READ ONLY: the server refuses any write.
        options += " -c default_transaction_read_only=on"
    return {"options": options, "application_name": "inboxsort"}


def _engine_url(url: URL, *, readonly: bool) -> URL:
    """Return the URL to connect with: read-only SQLite files use a `mode=ro` URI."""
    path = sqlite_file(url)
    if path is not None and not readonly:
        if path.is_dir():
            raise StoreError(f"cannot open database {path}: it is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of database {path}: {exc}") from exc
    if path is None or not readonly:
        return url
    if not path.is_file():
        what = "it is a directory" if path.is_dir() else "no such file"
        raise StoreError(f"cannot open database {path} read-only: {what}")
    # A URI with mode=ro never creates or writes the file, and still sees a daemon's WAL.
    return URL.create(
        "sqlite+pysqlite",
        database="file:" + quote(str(path.absolute())),
        query={"mode": "ro", "uri": "true"},
    )


def open_database(
    url: str,
    *,
    readonly: bool = False,
    migrate: bool = True,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
) -> Database:
    """Open (and unless readonly, migrate to head) the database at `url`.

    `busy_timeout_ms`: how long one SQLite statement waits for another writer's lock (the
    migration at the start always waits BUSY_TIMEOUT_MS).
    """
    shown = safe_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {shown}: {exc}") from exc
    engine_url = _engine_url(parsed, readonly=readonly)
    kwargs: dict[str, Any] = {}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        # The daemon's threads share the pool; SQLite itself serialises access.
        kwargs["connect_args"] = {"check_same_thread": False}
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = _postgres_options(readonly, busy_timeout_ms)
        # A pooled connection the server dropped (a restart) is replaced, not handed out.
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(engine_url, **kwargs)
    except ImportError as exc:
        raise StoreError(f"cannot open database {shown}: {exc}{_driver_hint(parsed)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open database {shown}: {exc}") from exc
    if is_sqlite:
        event.listen(engine, "connect", _set_sqlite_pragmas(readonly, busy_timeout_ms))
    try:
        with engine.connect() as conn:
            # Reading the schema forces SQLite to read the file header, so a corrupt or
            # foreign file fails here rather than in the middle of the daemon's work.
            probe = "SELECT count(*) FROM sqlite_master" if is_sqlite else "SELECT 1"
            conn.exec_driver_sql(probe)
            if readonly or not migrate:
                _check_known(conn)
        if migrate and not readonly:
            _migrate(engine)
    except StoreError:
        engine.dispose()
        raise
    except (SQLAlchemyError, CommandError, OSError) as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {describe_db_error(exc)}") from exc
    return Database(engine, url, readonly=readonly)


def _driver_hint(url: URL) -> str:
    """What to install or write when a URL's driver is missing (PostgreSQL: psycopg 3)."""
    if url.get_backend_name() != "postgresql":
        return ""
    return (
        " (PostgreSQL needs psycopg 3: pip install 'inboxsort[postgres]', and a URL that "
        "starts with postgresql+psycopg://)"
    )


def current_revision(db: Database) -> str | None:
    """Return the Alembic revision the database is at, or None if it has none."""
    try:
        with db.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the schema revision of {safe_url(db.url)}: {exc}") from exc


def database_write_problem(url: str) -> tuple[str, str] | None:
    """What keeps the daemon from writing a SQLite database, and the fix (one line each).

    SQLite writes the file and, beside it, its -wal and -shm files, so the folder must take
    new files too. None when all is writable, or for what this cannot tell (a missing folder,
    which opening creates; other backends). access() sees read-only mounts and immutable
    files as refused, also for root.
    """
    path = sqlite_path(url)
    if path is None or not path.parent.is_dir():
        return None
    folder = path.parent
    effective = os.access in os.supports_effective_ids
    refused = [
        each
        for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), folder)
        if (each == folder or each.is_file())
        and not os.access(each, os.W_OK, effective_ids=effective)
    ]
    if not refused:
        return None
    what = "its folder" if refused[0] == folder else str(refused[0].name)
    try:
        why = "read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else ""
    except OSError:
        why = ""
    return (
        f"database {path} is not writable: {what} refuses writes{f' ({why})' if why else ''}",
        f"make {folder} and the database files in it writable by this user (SQLite creates "
        "its -wal and -shm files there), or set database.url to a writable place",
    )
