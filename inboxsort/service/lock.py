"""One daemon per database and per inbox: lock files held with flock for the process's life.

`<db>.lock` beside a SQLite file and `.inboxsort.lock` in the inbox (a hidden name: the watcher
ignores it) are locked with `flock`. The kernel drops such a lock when its process ends, however
it ends, `kill -9` included, so a stale lock file never blocks a start: only a live holder does.
The holder writes its pid into the file so that the one refused can say who holds it. Other
databases (PostgreSQL) have no file here: daemons on one of them form a fleet, which may share
an inbox (each file is claimed in the database), and each node name runs once (an advisory
lock, run.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from inboxsort.config import Config
from inboxsort.db.session import is_shared, sqlite_path
from inboxsort.errors import ConfigError
from inboxsort.files import loggable

log = logging.getLogger(__name__)

INBOX_LOCK_NAME = ".inboxsort.lock"
DATABASE_LOCK_SUFFIX = ".lock"
# The holder writes its pid just after taking the lock: wait this long for it to appear.
_PID_WAIT_SECONDS = 1.0
# flock is not available on this filesystem (some network shares): run without that lock.
_UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def lock_files(config: Config) -> list[tuple[str, Path]]:
    """(what it guards, its lock file) for the database, if it is a file, then the inbox."""
    files: list[tuple[str, Path]] = []
    if is_shared(config.database.url):
        # A fleet: daemons on one database may share one inbox, each file claimed in the
        # database; a second daemon under the same node name is refused there (run.py).
        return files
    database = sqlite_path(config.database.url)  # a bad URL: open_database reports it
    if database is not None:
        files.append((f"the database {database}", Path(f"{database}{DATABASE_LOCK_SUFFIX}")))
    inbox = config.paths.inbox
    files.append((f"the inbox {inbox}", inbox / INBOX_LOCK_NAME))
    return files


class DaemonLock:
    """The daemon's lock files, held until `release` (or until the process ends)."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    @classmethod
    def acquire(cls, config: Config) -> DaemonLock:
        """Lock the database's and the inbox's files; ConfigError naming a running holder."""
        fds: list[int] = []
        try:
            for what, path in lock_files(config):
                fd = _lock(what, path)
                if fd is not None:
                    fds.append(fd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds)

    def release(self) -> None:
        """Let go of every lock (closing the files releases them)."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def one_daemon(config: Config) -> Iterator[DaemonLock]:
    """Hold the daemon's locks for the block: `with one_daemon(config): ...`."""
    lock = DaemonLock.acquire(config)
    try:
        yield lock
    finally:
        lock.release()


def _lock(what: str, path: Path) -> int | None:
    """Open and flock `path` (its pid written in); None where flock is not supported."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise ConfigError(
            f"another daemon (pid {holder}) is running on {what}: it holds {path}; "
            "stop it first (one daemon per database and per inbox)"
        ) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _UNSUPPORTED:
            raise ConfigError(f"cannot lock {path}: {exc.strerror or exc}") from None
        log.warning(
            "cannot lock %s here (%s): a second daemon would not be refused", loggable(path), exc
        )
        return None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: the lock holds all the same, only the pid is missing
        log.warning("cannot write the pid into %s: %s", loggable(path), exc)
    return fd


def _open(path: Path) -> int:
    """Open (create) a lock file; never through a symlink, never a file with other names."""
    with contextlib.suppress(OSError):  # the open below says why
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_NOFOLLOW: the inbox is writable by others, and the file is truncated once locked.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        why = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise ConfigError(f"cannot use the lock file {path}: {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ConfigError(
            f"cannot use the lock file {path}: not a plain file with one name; remove it"
        )
    return fd


def _holder(fd: int) -> str:
    """The pid the holder wrote, waiting briefly for a holder that has only just locked."""
    deadline = time.monotonic() + _PID_WAIT_SECONDS
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        if time.monotonic() >= deadline:
            return "unknown"
        time.sleep(0.05)
