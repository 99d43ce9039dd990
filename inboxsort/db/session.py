"""Opening the database: engine, SQLite pragmas, read-only access and Alembic migrations."""

from __future__ import annotations

import sqlite3
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
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from inboxsort.errors import StoreError

_DB_DIR = Path(__file__).resolve().parent
_ALEMBIC_INI = _DB_DIR / "alembic.ini"
_MIGRATIONS_DIR = _DB_DIR / "migrations"

BUSY_TIMEOUT_MS = 30_000

# SQLite primary result codes for "another connection holds the lock".
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# PostgreSQL SQLSTATEs worth a retry: serialization failure, deadlock, lock not available.
_PG_RETRY_CODES = frozenset({"40001", "40P01", "55P03"})


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


def _describe(exc: BaseException) -> str:
    """Return the short driver message of a database error."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig)
    return str(exc)


def sqlite_file(url: URL) -> Path | None:
    """Return the file of a plain sqlite URL, or None (memory, URI form, other backends)."""
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


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
        if engine.dialect.name == "sqlite":
            # Take the write lock first so a daemon and a CLI starting together do not both
            # try to create the tables; the loser waits (busy_timeout) and finds head.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        _check_known(conn)
        command.upgrade(_alembic_config(conn), "head")


def _set_sqlite_pragmas(readonly: bool) -> Any:
    """Return a connect-event listener applying the pragmas to each new DBAPI connection."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may need to wait for a lock.
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                # WAL lets readers (the CLI) run while the daemon writes; NORMAL is safe in WAL.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


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


def open_database(url: str, *, readonly: bool = False, migrate: bool = True) -> Database:
    """Open (and unless readonly, migrate to head) the database at `url`."""
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
    try:
        engine = create_engine(engine_url, **kwargs)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot open database {shown}: {exc}") from exc
    if is_sqlite:
        event.listen(engine, "connect", _set_sqlite_pragmas(readonly))
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
        raise StoreError(f"cannot open database {shown}: {_describe(exc)}") from exc
    return Database(engine, url, readonly=readonly)


def current_revision(db: Database) -> str | None:
    """Return the Alembic revision the database is at, or None if it has none."""
    try:
        with db.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the schema revision of {safe_url(db.url)}: {exc}") from exc


def is_locked_error(exc: BaseException) -> bool:
    """Tell whether `exc` is a transient lock/busy error worth retrying."""
    seen: BaseException | None = exc
    for _ in range(5):  # follow `raise ... from` wrappers (e.g. StoreError) a little way
        if seen is None:
            return False
        orig = seen.orig if isinstance(seen, DBAPIError) else seen
        if isinstance(orig, sqlite3.OperationalError):
            code = getattr(orig, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
                return True
            text = str(orig).lower()
            if "database is locked" in text or "database is busy" in text:
                return True
            if "database table is locked" in text:
                return True
        if getattr(orig, "pgcode", None) in _PG_RETRY_CODES:
            return True
        seen = seen.__cause__
    return False
