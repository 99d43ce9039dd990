"""Which database errors are worth another try: a lock, a full disk, a server going away.

SQLite and PostgreSQL (psycopg 3) errors alike; retry.py holds what to do about them.
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import DBAPIError

# SQLite primary result codes for "another connection holds the lock".
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# ... and for "database or disk is full" (no space, or a quota, under the database).
_SQLITE_FULL = 13
# PostgreSQL SQLSTATEs worth a retry: serialization failure, deadlock, lock not available
# (lock_timeout), too many connections, and a server shutting down or restarting.
_PG_RETRY_CODES = frozenset({"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03"})
# ... and every "connection exception" (class 08): the server went away under a connection.
_PG_RETRY_CLASSES = ("08",)
_PG_DISK_FULL = "53100"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def describe_db_error(exc: BaseException) -> str:
    """Return the short driver message of a database error (no SQL, no background link)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig)
    return str(exc)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error it wraps, and a few `raise ... from` causes (e.g. StoreError)."""
    found: list[BaseException] = []
    seen: BaseException | None = exc
    for _ in range(5):  # follow the wrappers a little way
        if seen is None:
            break
        found.append(seen)
        if isinstance(seen, DBAPIError) and seen.orig is not None:
            found.append(seen.orig)
        seen = seen.__cause__
    return found


def _sqlstate(orig: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error (psycopg 3: sqlstate; psycopg2: pgcode)."""
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _is_locked(orig: BaseException) -> bool:
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return True
        text = str(orig).lower()
        if "database is locked" in text or "database is busy" in text:
            return True
        if "database table is locked" in text:
            return True
    if isinstance(orig, DBAPIError) and orig.connection_invalidated:
        return True  # SQLAlchemy saw the connection drop; the pool makes a new one
    state = _sqlstate(orig)
    return state is not None and (state in _PG_RETRY_CODES or state.startswith(_PG_RETRY_CLASSES))


def _is_full(orig: BaseException) -> bool:
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == _SQLITE_FULL:
            return True
        if "database or disk is full" in str(orig).lower():
            return True
    if isinstance(orig, OSError) and orig.errno in _FULL_ERRNOS:
        return True
    return _sqlstate(orig) == _PG_DISK_FULL


def is_disk_full_error(exc: BaseException) -> bool:
    """Tell whether `exc` says the database cannot grow: SQLITE_FULL, ENOSPC, EDQUOT or
    PostgreSQL's disk_full (53100)."""
    return any(_is_full(e) for e in _causes(exc))


def is_transient_db_error(exc: BaseException) -> bool:
    """Tell whether `exc` is worth another try later: a lock held by another writer (or, on
    PostgreSQL, a deadlock, a serialization failure, a server restarting or unreachable), or a
    database that cannot grow for now (a full disk, a quota); see is_disk_full_error."""
    return any(_is_locked(e) or _is_full(e) for e in _causes(exc))
