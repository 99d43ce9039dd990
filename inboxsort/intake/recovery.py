"""Recovery after kill -9: finish or undo what the ledger's pending rows say was under way."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inboxsort.config import PathsConfig
from inboxsort.db import (
    STATUS_DELETED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    Image,
    utcnow,
)
from inboxsort.db.queries import pending_images
from inboxsort.files import TEMP_PREFIX, TEMP_SUFFIX, same_file, sha256_or_none
from inboxsort.intake.ledger import Ledger, complete

log = logging.getLogger(__name__)

# display_path's backslashreplace escapes only bytes that are not UTF-8: 0x80 to 0xff.
_ESCAPE = re.compile(rb"\\x([89a-f][0-9a-f])")


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery did: rows completed, requeued, found missing, and temp copies removed."""

    completed: int = 0
    requeued: int = 0
    missing: int = 0
    temp_removed: int = 0

    def __bool__(self) -> bool:
        return any((self.completed, self.requeued, self.missing, self.temp_removed))


def recover(ledger: Ledger, paths: PathsConfig) -> RecoveryReport:
    """Reconcile rows a crash left pending with the disk."""
    temps = sum(_remove_own_temps(f) for f in (paths.library, paths.failed, paths.duplicates))
    counts = {"completed": 0, "requeued": 0, "missing": 0}

    def fix() -> None:
        for key in counts:
            counts[key] = 0  # a retry after a locked database starts over
        now = utcnow()
        with ledger.db.begin() as session:
            for row in pending_images(session):
                counts[_recover_row(row, paths, now)] += 1

    ledger.run("recovery", fix)
    report = RecoveryReport(**counts, temp_removed=temps)
    if report:
        log.info(
            "recovery after an unclean stop: %d completed, %d requeued, %d missing, "
            "%d temporary copies removed",
            report.completed,
            report.requeued,
            report.missing,
            report.temp_removed,
        )
    return report


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
            complete(row, dest, _status_for(dest, paths), now)
            return "completed"
        linked = same_file(source, dest)
        if linked or _same_content(row, dest):
            # Crashed after the link (or the cross-filesystem copy) but before the inbox name
            # was removed: the file is safe at dest, so the inbox name is the extra one,
            # unless a new file has taken that name since (the scan gives it a row of its own).
            if linked or _is_rows_file(row, source):
                source.unlink()
            complete(row, dest, _status_for(dest, paths), now)
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
