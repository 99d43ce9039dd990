"""Start-up reconciliation: filed images the user moved or deleted while no daemon ran.

`LibraryTracker.reconcile()` calls `reconcile(tracker)`; the tracker's matching and applying
(`sha`, `apply`) are shared with the live events, so a move made while stopped is recorded as
the same move seen live would be.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inboxsort.db import STATUS_DELETED, STATUS_FILED, Image
from inboxsort.db.queries import FiledFile, filed_files
from inboxsort.files import display_path, loggable, scan
from inboxsort.library.relabel import relabel_in_flight

if TYPE_CHECKING:
    from inboxsort.library.tracker import LibraryTracker

log = logging.getLogger(__name__)

Inode = tuple[int, int]  # device, inode


@dataclass(frozen=True)
class ReconcileReport:
    """What reconcile() found: filed rows checked, missing ones, and what became of them."""

    checked: int = 0
    missing: int = 0
    moved: int = 0
    corrected: int = 0
    deleted: int = 0

    def summary(self) -> str:
        """One readable line for the log: what was checked and what became of the missing."""
        line = f"{self.checked} filed image(s) checked"
        if not self.missing:
            return line + ", none missing"
        line += f", {self.missing} missing since the last run: {self.moved} found moved"
        if self.corrected:
            line += f" ({self.corrected} of them into another class: corrections)"
        line += f", {self.deleted} deleted"
        unsettled = self.missing - self.moved - self.deleted
        return line + (f", {unsettled} changed meanwhile" if unsettled > 0 else "")


class _LooseFiles:
    """Library files that are no filed row's file, found by inode or, if need be, by content."""

    def __init__(self, tracker: LibraryTracker, *, known: set[str], sizes: set[int | None]) -> None:
        self._tracker = tracker
        self._sizes = sizes  # hash only files whose size some missing row has
        self._by_sha: dict[str, list[Inode]] | None = None  # built on first need
        # One pass over the library: every file that is not already some filed row's file.
        self.files: dict[Inode, tuple[Path, os.stat_result]] = {}
        for path in scan(tracker.library, recursive=True, ignore=tracker.ignore):
            if display_path(path) not in known:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                self.files[(st.st_dev, st.st_ino)] = (path, st)

    def find(self, r: FiledFile) -> Inode | None:
        """The loose file that is the missing row's: its inode, else its content hash."""
        found: Inode | None = None
        if r.device is not None and r.inode is not None and (r.device, r.inode) in self.files:
            found = (r.device, r.inode)
        if found is not None and not self._same_values(r, *self.files[found]):
            found = None
        if found is None and r.sha256:
            if self._by_sha is None:
                self._by_sha = {}
                for ino, (path, st) in self.files.items():
                    if None in self._sizes or st.st_size in self._sizes:
                        self._by_sha.setdefault(self._tracker.sha(path, st) or "", []).append(ino)
            found = next((k for k in self._by_sha.get(r.sha256, []) if k in self.files), None)
        return found

    def _same_values(self, r: FiledFile, path: Path, st: os.stat_result) -> bool:
        if r.size is not None:
            return r.size == st.st_size
        return not r.sha256 or self._tracker.sha(path, st) == r.sha256


def reconcile(tracker: LibraryTracker) -> ReconcileReport:
    """Start-up: find filed images moved while no daemon ran; mark the rest deleted."""
    with tracker.db.session() as session:
        rows = filed_files(session)
    missing = [r for r in rows if not os.path.lexists(r.path)]
    if not missing:
        report = ReconcileReport(checked=len(rows))
        if rows:
            log.info("library reconciled: %s", report.summary())
        return report
    loose = _LooseFiles(tracker, known={r.path for r in rows}, sizes={r.size for r in missing})
    counts = {"moved": 0, "corrected": 0, "deleted": 0}
    for r in missing:
        outcome = _settle(tracker, r.id, loose.find(r), loose)
        if outcome == "corrected":
            counts["moved"] += 1
        if outcome is not None:
            counts[outcome] += 1
    report = ReconcileReport(len(rows), len(missing), **counts)
    log.info("library reconciled: %s", report.summary())
    return report


def _settle(
    tracker: LibraryTracker, row_id: int, found: Inode | None, loose: _LooseFiles
) -> str | None:
    """Apply what became of one missing row: "moved", "corrected", "deleted", or None."""
    with tracker.db.begin() as session:
        row = session.get(Image, row_id)
        if row is None or row.status != STATUS_FILED or os.path.lexists(row.path):
            return None  # changed since the first look
        if found is None:
            row.status = STATUS_DELETED
            log.info("deleted from the library while stopped: %s", loggable(row.path))
            return "deleted"
        path, st = loose.files.pop(found)
        if relabel_in_flight(session, row, display_path(path)):
            row.path, row.dest_path = display_path(path), None
            row.device, row.inode = st.st_dev, st.st_ino
            log.warning("a relabel of %s was interrupted; label kept", loggable(path))
            return "moved"
        return "corrected" if tracker.apply(session, row, path, st) else "moved"
