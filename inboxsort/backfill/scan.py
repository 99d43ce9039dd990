"""The archive's files: walked as the inbox is scanned, then what is on record left out."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from inboxsort.db import Database
from inboxsort.db.backfill import OnRecord, mtime_moment, recorded_at
from inboxsort.db.schema import ORIGIN_BACKFILL, STATUS_PENDING
from inboxsort.errors import ConfigError
from inboxsort.files import Ignore, ScanErrors, display_path, scan

log = logging.getLogger(__name__)

_LOOKUP_CHUNK = 2000


@dataclass(frozen=True)
class Candidate:
    """One file of the archive as lstat saw it; `problem` is why it cannot be read at all."""

    root: Path
    path: Path
    size: int
    mtime_ns: int
    device: int
    inode: int
    problem: str | None = None

    @property
    def text(self) -> str:
        """The path as the database holds it."""
        return display_path(self.path)


def check_roots(roots: Sequence[Path]) -> list[Path]:
    """The folders to walk, absolute; ConfigError for one that is not a folder or overlaps."""
    out: list[Path] = []
    for root in roots:
        folder = root.resolve()
        if not folder.is_dir():
            raise ConfigError(f"backfill: {root} is not a folder")
        for other in out:
            if folder.is_relative_to(other) or other.is_relative_to(folder):
                raise ConfigError(f"backfill: {root} and {other} overlap; give each folder once")
        out.append(folder)
    return out


def _problem(path: Path, st: os.stat_result) -> str | None:
    # As the daemon says for the same files (intake/decode.py).
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def walk(roots: Sequence[Path], ignore: Sequence[str]) -> Iterator[Candidate]:
    """Every file under `roots` that the inbox would not ignore; links are not followed."""
    errors = ScanErrors()
    for root in roots:
        for path in scan(root, recursive=True, ignore=Ignore(root, ignore), on_error=errors):
            try:
                st = path.lstat()
            except OSError:
                continue  # gone since it was listed
            yield Candidate(
                root, path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, _problem(path, st)
            )


def on_record(row: OnRecord | None, candidate: Candidate) -> bool:
    """Whether `row` already records this very file (same size, and mtime for a backfill row)."""
    if row is None or row.status == STATUS_PENDING or row.size != candidate.size:
        return False
    # The daemon's rows hold when a file arrived, not its mtime: path and size must do.
    return row.origin != ORIGIN_BACKFILL or row.received_at == mtime_moment(candidate.mtime_ns)


def unrecorded(db: Database, candidates: Iterable[Candidate]) -> tuple[list[Candidate], int]:
    """The candidates with no row yet, and how many were skipped because they have one."""
    todo: list[Candidate] = []
    skipped = 0
    chunk: list[Candidate] = []

    def flush() -> None:
        nonlocal skipped
        with db.session() as session:
            rows = recorded_at(session, [c.text for c in chunk])
        for c in chunk:
            if on_record(rows.get(c.text), c):
                skipped += 1
            else:
                todo.append(c)
        chunk.clear()

    for candidate in candidates:
        chunk.append(candidate)
        if len(chunk) >= _LOOKUP_CHUNK:
            flush()
    if chunk:
        flush()
    return todo, skipped
