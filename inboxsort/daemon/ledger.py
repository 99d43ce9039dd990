"""The daemon's bookkeeping: a row before every move, a final status after it, and recovery.

The order that makes kill -9 safe at any instant:
  1. plan:   commit a pending row whose dest_path names where the file is about to go;
  2. move:   link into place (never clobbering), then drop the inbox name;
  3. finish: commit the final status and the new path.
A crash between 1 and 3 leaves a pending row with a dest_path, and `recover` looks at the disk
to finish the job: the file is either still in the inbox (processed again, same row), already
at dest_path (the row is completed), or in both places as one inode (the inbox name goes).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select

from inboxsort.config import PathsConfig
from inboxsort.daemon.moves import TEMP_PREFIX, TEMP_SUFFIX, same_file
from inboxsort.db import (
    STATUS_DELETED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    STATUS_PENDING,
    Database,
    Image,
    is_locked_error,
    utcnow,
)
from inboxsort.db.queries import (
    images_by_id,
    oldest_by_sha256,
    pending_by_sources,
    write_heartbeat,
)
from inboxsort.errors import StoreError
from inboxsort.hashing import sha256_or_none

log = logging.getLogger(__name__)
T = TypeVar("T")

# display_path's backslashreplace escapes only bytes that are not UTF-8: 0x80 to 0xff.
_ESCAPE = re.compile(rb"\\x([89a-f][0-9a-f])")

# Backoff for "database is locked": another writer (the CLI, a sqlite3 shell) holds the lock.
# The daemon waits rather than fails; images stay in the inbox meanwhile.
_RETRY_FIRST, _RETRY_MAX, _RETRY_TOTAL = 0.05, 2.0, 120.0


def display_path(path: Path) -> str:
    """A path as text for the database; bytes that are not UTF-8 are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Plan:
    """One image about to be moved: its row, where it is, where it goes, and what it is."""

    row_id: int
    source: Path
    dest: Path
    status: str


@dataclass(frozen=True)
class Entry:
    """What filing knows about one image before its row is written."""

    source: Path
    dest: Path
    status: str
    sha256: str | None
    size: int | None
    device: int | None
    inode: int | None
    received_at: datetime
    label: str | None = None
    score: float | None = None
    model_version: int | None = None
    error: str | None = None
    duplicate_of: int | None = None


class Ledger:
    """All database writes of the daemon, each retried while the database is locked."""

    def __init__(self, db: Database, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.db = db
        self._sleep = sleep

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        delay, waited = _RETRY_FIRST, 0.0
        while True:
            try:
                return action()
            except Exception as exc:
                if not is_locked_error(exc) or waited >= _RETRY_TOTAL:
                    raise StoreError(f"{what}: {exc}") from exc
                log.warning("database busy during %s; retrying in %.2f s", what, delay)
                self._sleep(delay)
                waited += delay
                delay = min(delay * 2, _RETRY_MAX)

    def filed_duplicates(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each content hash already filed, the id of the first image filed with it."""
        wanted = list(hashes)
        if not wanted:
            return {}

        def query() -> dict[str, int]:
            with self.db.session() as session:
                found = oldest_by_sha256(session, wanted, statuses=(STATUS_FILED,))
                return {sha: row.id for sha, row in found.items()}

        return self._retry("duplicate lookup", query)

    def plan(self, entries: Sequence[Entry]) -> list[Plan]:
        """Commit a pending row (new, or the one a crash left) naming each destination."""

        def write() -> list[Plan]:
            with self.db.begin() as session:
                # One query and one flush per batch, not per image: on two cores, the
                # per-image round trips cost the model CPU time it could use.
                sources = [display_path(e.source) for e in entries]
                left = pending_by_sources(session, sources)
                rows = []
                for e, source in zip(entries, sources, strict=True):
                    row = left.pop(source, None)
                    if row is None:
                        row = Image(source_path=source, received_at=e.received_at)
                        session.add(row)
                    row.original_name = display_path(Path(e.source.name))
                    row.path = source
                    row.dest_path = display_path(e.dest)
                    row.status = STATUS_PENDING
                    row.sha256, row.size = e.sha256, e.size
                    row.device, row.inode = e.device, e.inode
                    row.label, row.score, row.model_version = e.label, e.score, e.model_version
                    row.classified_at = utcnow() if e.label is not None else None
                    row.error, row.duplicate_of = e.error, e.duplicate_of
                    rows.append(row)
                session.flush()
                return [
                    Plan(row.id, e.source, e.dest, e.status)
                    for e, row in zip(entries, rows, strict=True)
                ]

        return self._retry("recording images", write)

    def replan(self, plan: Plan, dest: Path) -> Plan:
        """Point a pending row at a new destination (the planned name was taken meanwhile)."""

        def write() -> None:
            with self.db.begin() as session:
                row = session.get(Image, plan.row_id)
                assert row is not None
                row.dest_path = display_path(dest)

        self._retry("recording a new destination", write)
        return Plan(plan.row_id, plan.source, dest, plan.status)

    def finish(self, done: Iterable[tuple[Plan, str | None]]) -> None:
        """Commit the final status of moved images (None) or of vanished ones (the reason)."""
        items = list(done)
        if not items:
            return

        def write() -> None:
            now = utcnow()
            with self.db.begin() as session:
                rows = images_by_id(session, (plan.row_id for plan, _ in items))
                for plan, vanished in items:
                    row = rows[plan.row_id]
                    if vanished is not None:
                        row.status, row.error, row.dest_path = STATUS_DELETED, vanished, None
                        continue
                    _complete(row, plan.dest, plan.status, now)

        self._retry("recording filed images", write)

    def heartbeat(self, **fields: object) -> None:
        """Write the daemon_state row (what `inboxsort stats` shows)."""

        def write() -> None:
            with self.db.begin() as session:
                write_heartbeat(session, **fields)

        self._retry("heartbeat", write)

    def recover(self, paths: PathsConfig) -> dict[str, int]:
        """Reconcile rows a crash left pending with the disk; returns counts of what it did."""
        counts = {"completed": 0, "requeued": 0, "missing": 0, "temp_removed": 0}
        for folder in (paths.library, paths.failed, paths.duplicates):
            counts["temp_removed"] += _remove_own_temps(folder)

        def fix() -> None:
            now = utcnow()
            with self.db.begin() as session:
                rows = session.scalars(select(Image).where(Image.status == STATUS_PENDING))
                for row in rows:
                    counts[_recover_row(row, paths, now)] += 1

        self._retry("recovery", fix)
        if any(counts.values()):
            log.info("recovery after an unclean stop: %s", counts)
        return counts


def _complete(row: Image, dest: Path, status: str, now: datetime) -> None:
    row.status, row.path, row.dest_path, row.filed_at = status, display_path(dest), None, now
    try:
        st = os.lstat(dest)
    except OSError:
        return
    row.device, row.inode = st.st_dev, st.st_ino


def _status_for(dest: Path, paths: PathsConfig) -> str:
    if dest.is_relative_to(paths.failed):
        return STATUS_FAILED
    if dest.is_relative_to(paths.duplicates):
        return STATUS_DUPLICATE
    return STATUS_FILED


def _same_content(row: Image, path: Path) -> bool:
    if path.is_symlink():
        return True  # a symlink is moved, never read; its name is all there is to compare
    return row.sha256 is not None and sha256_or_none(path) == row.sha256


def _inbox_path(row: Image) -> Path:
    """The inbox path of a row; a name stored with escapes is turned back into its bytes.

    The unescaped path is used only if the file there is the row's own (device and inode), so
    an escape-like sequence typed into a real name can never point recovery at another file.
    """
    path = Path(row.source_path)
    if "\\x" not in row.source_path or os.path.lexists(path):
        return path
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), row.source_path.encode())
    candidate = Path(os.fsdecode(raw))
    try:
        st = os.lstat(candidate)
    except OSError:
        return path
    return candidate if (st.st_dev, st.st_ino) == (row.device, row.inode) else path


def _is_rows_file(row: Image, path: Path) -> bool:
    """Whether the file at path is the one the row was made for: its content, else its inode.

    Content first: once a file is unlinked its inode number can be reused by a newcomer.
    """
    if row.sha256 is not None or path.is_symlink():
        return _same_content(row, path)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino, st.st_size) == (row.device, row.inode, row.size)


def _recover_row(row: Image, paths: PathsConfig, now: datetime) -> str:
    # A name that is not UTF-8 is stored escaped: without turning it back into its bytes, the
    # inbox file would be filed again under a second row, or left beside its filed twin.
    source = _inbox_path(row)
    dest = Path(row.dest_path) if row.dest_path else None
    src_there = os.path.lexists(source)
    dest_there = dest is not None and os.path.lexists(dest)
    if dest is not None and dest_there:
        if not src_there:
            _complete(row, dest, _status_for(dest, paths), now)
            return "completed"
        linked = same_file(source, dest)
        if linked or _same_content(row, dest):
            # Crashed after the link (or the cross-filesystem copy) but before the inbox name
            # was removed: the file is safe at dest, so the inbox name is the extra one,
            # unless a new file has taken that name since (the scan gives it a row of its own).
            if linked or _is_rows_file(row, source):
                source.unlink()
            _complete(row, dest, _status_for(dest, paths), now)
            return "completed"
    if src_there:
        # Still in the inbox: the start-up scan processes it again and reuses this row.
        row.dest_path = None
        return "requeued"
    row.status, row.dest_path = STATUS_DELETED, None
    row.error = "missing after an unclean stop: neither in the inbox nor at its destination"
    return "missing"


def _remove_own_temps(folder: Path) -> int:
    """Remove half-written cross-filesystem copies; their source is still in the inbox."""
    removed = 0
    if not folder.is_dir():
        return 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed
