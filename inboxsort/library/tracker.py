"""The plain half of the library watcher: which filed image a file is, and what its move means.

No threads and no clock reads: `handle(event, now)`, `flush(now)` and `reconcile()` are called
by the worker in watcher.py (or directly by tests). See watcher.py for the daemon's wiring, and
reconcile.py for the start-up pass over the library.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from inboxsort.config import DEFAULT_IGNORE
from inboxsort.db import (
    SOURCE_MOVE,
    SOURCE_REVIEW,
    STATUS_DELETED,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    Database,
    Image,
    utcnow,
)
from inboxsort.db.queries import (
    filed_paths,
    find_by_location,
    newest_filed_at,
    other_filed_at,
    pending_at,
    with_sha256,
)
from inboxsort.files import Ignore, display_path, loggable, same_file, scan, sha256_or_none
from inboxsort.layout import REVIEW_FOLDER, Placement, placement
from inboxsort.library.events import CLOSED, CREATED, DELETED, MOVED, LibraryEvent
from inboxsort.library.reconcile import ReconcileReport, reconcile
from inboxsort.library.relabel import relabel_in_flight
from inboxsort.model.live import LiveModel
from inboxsort.own_filings import OwnFilings

log = logging.getLogger(__name__)


@dataclass
class _Orphan:
    """A file in the library that matches no row (yet): a copy whose original is still there."""

    key: tuple[int, int, int, int]  # device, inode, size, mtime_ns
    changed_at: float
    tried_key: tuple[int, int, int, int] | None = None


_SKIP = object()  # _identify: the file is the daemon's own filing in progress, or known


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class LibraryTracker:
    """Recognizes filed images the user moved, renamed or deleted; plain code, no threads."""

    def __init__(
        self,
        db: Database,
        *,
        library: Path,
        model: LiveModel,
        review_folder_name: str = REVIEW_FOLDER,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        grace_seconds: float = 5.0,
        orphan_seconds: float = 60.0,
        own: OwnFilings | None = None,
        node: str | None = None,
    ) -> None:
        self.db = db
        self.node = node  # recorded on each correction it makes
        self._own = own
        self.library = library
        self._model = model  # its classes say which folders are classes, after a swap too
        self.review_folder_name = review_folder_name
        self.grace_seconds = grace_seconds
        self.orphan_seconds = orphan_seconds
        self.ignore = Ignore(library, ignore)  # reconcile.py scans with it too
        self._missing: dict[int, float] = {}  # row id → when it is declared deleted
        self._orphans: dict[Path, _Orphan] = {}
        self._hashes: dict[tuple[int, int, int, int], str | None] = {}

    # ---- events -------------------------------------------------------------------------

    def handle(self, event: LibraryEvent, now: float) -> None:
        """Apply one event; `now` is a monotonic clock reading in seconds."""
        if event.kind == MOVED:
            # The new place first: once the row points there, the old name has no row left.
            if self._inside(event.path):
                self._arrived(event.path, now)
            if event.src is not None and self._inside(event.src):
                self._vanished(event.src, now, is_dir=event.is_dir)
        elif event.kind in (CREATED, CLOSED):
            self._arrived(event.path, now)
        elif event.kind == DELETED:
            self._vanished(event.path, now, is_dir=event.is_dir)

    def flush(self, now: float) -> None:
        """Mark rows missing past the grace period deleted; retry orphans that settled."""
        for path, orphan in list(self._orphans.items()):
            try:
                key = _key(os.lstat(path))
            except OSError:
                self._orphans.pop(path, None)
                continue
            if key != orphan.key:
                orphan.key, orphan.changed_at = key, now
            elif now - orphan.changed_at > self.orphan_seconds:
                self._orphans.pop(path, None)  # a new file the user put here: not ours to track
            elif key != orphan.tried_key and now - orphan.changed_at >= 1.0:
                self._arrived(path, now)  # finished copying since the last try (no close event)
        for row_id, due in list(self._missing.items()):
            if due <= now:
                self._expire(row_id)

    def _inside(self, path: Path) -> bool:
        return path.is_relative_to(self.library) and path != self.library

    def _arrived(self, path: Path, now: float) -> None:
        """A file (or folder of files) appeared at `path`: whose is it, and what did it mean?"""
        if self.ignore(path):
            return
        # Taken before the lookup below; an event retried after "database is locked" then
        # simply looks the file up.
        mine = self._own.take(path) if self._own is not None else None
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone again: its next event says where to
        if stat.S_ISDIR(st.st_mode):
            for child in scan(path, recursive=True, ignore=self.ignore):
                self._arrived(child, now)
            return
        if mine == (st.st_dev, st.st_ino):
            # The daemon's own filing, still where it put it: its rows say all there is.
            self._orphans.pop(path, None)
            return
        if self._own is not None:
            # Moved on before its own event was read (a poll can miss both halves of a move):
            # the note at the old name must not hide the user moving it back there.
            self._own.seen_at(path, device=st.st_dev, inode=st.st_ino)
        with self.db.begin() as session:
            row = self._identify(session, path, st)
            row_id = row.id if isinstance(row, Image) else None
            if isinstance(row, Image):
                self.apply(session, row, path, st)
        # Memory changes only after the commit, so a retried event starts from the same state.
        if row_id is not None:
            self._missing.pop(row_id, None)
        if row is None:
            orphan = self._orphans.setdefault(path, _Orphan(_key(st), now))
            orphan.tried_key = _key(st)
        else:
            self._orphans.pop(path, None)

    def _vanished(self, path: Path, now: float, *, is_dir: bool = False) -> None:
        """A file or folder left `path`: its rows are missing, unless a copy is already here."""
        for orphan in [p for p in self._orphans if p == path or p.is_relative_to(path)]:
            del self._orphans[orphan]
        with self.db.session() as session:
            rows = filed_paths(session, display_path(path), below=is_dir)
            gone = [row_id for row_id, text in rows if not os.path.lexists(text)]
        for row_id in gone:
            if not self._adopt_orphan(row_id):
                self._missing.setdefault(row_id, now + self.grace_seconds)

    def _expire(self, row_id: int) -> None:
        """The grace period is over: the file turned up (copy-then-delete) or it is deleted."""
        if self._adopt_orphan(row_id):
            self._missing.pop(row_id, None)
            return
        with self.db.begin() as session:
            row = session.get(Image, row_id)
            if row is not None and row.status == STATUS_FILED and not os.path.lexists(row.path):
                row.status = STATUS_DELETED
                log.info("deleted from the library: %s (not a correction)", loggable(row.path))
        self._missing.pop(row_id, None)

    def _adopt_orphan(self, row_id: int) -> bool:
        """Find the missing row's content among the orphans; apply that move if found."""
        with self.db.begin() as session:
            row = session.get(Image, row_id)
            if row is None or row.status != STATUS_FILED or os.path.lexists(row.path):
                return True  # nothing is missing any more
            for path in list(self._orphans):
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if self._content_of(row, path, st):
                    self.apply(session, row, path, st)
                    break
            else:
                return False
        self._orphans.pop(path, None)
        return True

    # ---- matching -----------------------------------------------------------------------

    def _identify(self, session: Session, path: Path, st: os.stat_result) -> Image | object | None:
        """The row a file at `path` belongs to, _SKIP when there is nothing to do, or None."""
        text = display_path(path)
        row = find_by_location(session, device=st.st_dev, inode=st.st_ino)
        if row is not None:
            if row.status == STATUS_PENDING:
                return _SKIP  # the daemon is filing it right now; its commit follows
            if row.path != text and same_file(Path(row.path), path):
                return None  # a second name (a hard link, or a link-then-unlink move half done)
            if row.status == STATUS_FILED and relabel_in_flight(session, row, text, recent=True):
                # relabel() has committed the new path and is about to move this file: an
                # old event for it must not undo that. Kept as an orphan, so that if the user
                # really moved it back, the deletion at the new path finds it here.
                return None
            if row.status in (STATUS_FILED, STATUS_DELETED) and self._same(row, path, st):
                return row
        # The daemon files under dest_path before its final commit; a cross-filesystem copy
        # has a new inode, so the path is what tells its own filing from a user's action.
        if pending_at(session, text):
            return _SKIP
        here = newest_filed_at(session, text)
        if here is not None:
            # Saved over in place by an editor (write, then rename): same image, new inode.
            here.device, here.inode = st.st_dev, st.st_ino
            return _SKIP
        sha = self.sha(path, st)
        if sha is None:
            return None
        candidates = with_sha256(session, sha, statuses=(STATUS_FILED, STATUS_DELETED))
        # Copied here and the original removed (rsync, a file manager across mounts): a row
        # whose own file is gone. Rows deleted from the inbox never were in the library.
        gone = [
            c
            for c in candidates
            if self._inside(Path(c.path)) and (c.path == text or not os.path.lexists(c.path))
        ]
        gone.sort(key=lambda c: c.id not in self._missing)  # rows we saw vanish come first
        return gone[0] if gone else None

    def _placement(self, path: Path) -> Placement:
        return placement(
            path,
            library=self.library,
            classes=self._model.classes(),
            review_folder=self.review_folder_name,
        )

    def _same(self, row: Image, path: Path, st: os.stat_result) -> bool:
        """Whether an inode match is really this row's file and not a reused inode."""
        if row.size is not None:
            return row.size == st.st_size
        return not row.sha256 or self.sha(path, st) == row.sha256

    def _content_of(self, row: Image, path: Path, st: os.stat_result) -> bool:
        """Whether the file is the row's: its inode, else its content hash."""
        if (st.st_dev, st.st_ino) == (row.device, row.inode):
            return self._same(row, path, st)
        if not row.sha256 or row.size not in (None, st.st_size):
            return False
        return self.sha(path, st) == row.sha256

    def sha(self, path: Path, st: os.stat_result) -> str | None:
        """SHA-256 of the file, cached by (device, inode, size, mtime)."""
        key = _key(st)
        if key not in self._hashes:
            if len(self._hashes) > 4096:
                self._hashes.clear()
            self._hashes[key] = None if stat.S_ISLNK(st.st_mode) else sha256_or_none(path)
        return self._hashes[key]

    # ---- applying -----------------------------------------------------------------------

    def apply(self, session: Session, row: Image, path: Path, st: os.stat_result) -> bool:
        """Point `row` at its file's new place; record a correction if it was one. Flushes."""
        text = display_path(path)
        row.device, row.inode = st.st_dev, st.st_ino
        if row.status == STATUS_DELETED:
            row.status = STATUS_FILED
            log.info("back in the library: %s", loggable(text))
        if text in (row.path, row.dest_path):
            row.path, row.dest_path = text, None
            return False
        # `mv -f` over another filed image replaces that image's file: it is gone.
        for other in other_filed_at(session, text, besides=row.id):
            other.status = STATUS_DELETED
            log.info("replaced in the library by another image: %s", loggable(text))
        was = self._placement(Path(row.path))
        now = self._placement(path)
        learned = now.label is not None and (now.label != row.label or was.review)
        if learned:
            assert now.label is not None
            # Out of _review is a verdict even when it agrees with the model: the model was
            # unsure there, which is what makes the user's answer worth learning from.
            source = SOURCE_REVIEW if was.review else SOURCE_MOVE
            session.add(
                Correction(
                    image_id=row.id,
                    old_label=row.label,
                    new_label=now.label,
                    source=source,
                    old_path=row.path,
                    new_path=text,
                    created_at=utcnow(),
                    node=self.node,
                )
            )
            log.info("correction (%s): %s: %s → %s", source, loggable(text), row.label, now.label)
            # model_label, model_score and model_version stay: they are what the model said.
            row.set_label(now.label, class_count=len(self._model.classes()))
        elif now.label is None:
            log.info(
                "moved to %s: not a class folder (%s), so not learned",
                loggable(text),
                ", ".join(self._model.classes()),
            )
        row.path, row.dest_path = text, None
        session.flush()
        return learned

    # ---- start-up -----------------------------------------------------------------------

    def reconcile(self) -> ReconcileReport:
        """Start-up: find filed images moved while no daemon ran; mark the rest deleted."""
        return reconcile(self)
