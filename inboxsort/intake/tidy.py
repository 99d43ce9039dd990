"""Folders dropped into the inbox: removed once the daemon has filed everything out of them.

Images from `inbox/trip/` are filed flat by class like any other; the folder they came in would
stay behind empty, and a user would wonder whether something was left. A folder the daemon has
filed a file out of is removed with rmdir (which only ever removes an empty folder) once it has
been empty and unchanged for `quiet_seconds`, so a copy still running into it (`cp -r`, a file
manager) is never cut short. Then its parent is looked at the same way, up to, never including,
the inbox itself. A folder that holds anything, an ignored file included, stays. A folder that
was made empty by someone else, or that the daemon never filed from, is not its to remove.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inboxsort.config import WatchConfig
from inboxsort.dirfd import PathChanged, folder_fd
from inboxsort.files import loggable

log = logging.getLogger(__name__)


# An emptied subfolder of the inbox stays this many settle times (at least the minimum) after
# its last change before it is removed: a copy still writing into it never finds it gone.
EMPTIED_QUIET_SETTLES = 5
EMPTIED_QUIET_MIN_SECONDS = 1.0


class EmptiedFolders:
    """Inbox subfolders files were filed out of; `sweep` removes those left empty and still."""

    @classmethod
    def for_inbox(cls, inbox: Path, *, watch: WatchConfig) -> EmptiedFolders:
        """The daemon's: a folder goes once emptied and still for EMPTIED_QUIET_SETTLES settles."""
        quiet = max(EMPTIED_QUIET_MIN_SECONDS, EMPTIED_QUIET_SETTLES * watch.settle_seconds)
        return cls(inbox, quiet_seconds=quiet)

    def __init__(
        self, inbox: Path, *, quiet_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.inbox = inbox
        self.quiet_seconds = quiet_seconds
        self._clock = clock  # wall time: it is compared with the folder's mtime
        self._lock = threading.Lock()
        self._pending: set[Path] = set()

    def note(self, folder: Path) -> None:
        """A file was filed out of `folder` (the inbox itself and anything outside are ignored)."""
        if folder != self.inbox and folder.is_relative_to(self.inbox):
            with self._lock:
                self._pending.add(folder)

    def pending(self) -> set[Path]:
        """The folders still to look at."""
        with self._lock:
            return set(self._pending)

    def sweep(self) -> list[Path]:
        """Remove each noted folder that is empty and quiet; returns the folders removed."""
        removed = []
        # Deepest first: a parent can only go once its emptied children have.
        for folder in sorted(self.pending(), key=lambda p: len(p.parts), reverse=True):
            outcome = self._try(folder)
            if outcome == "wait":
                continue
            with self._lock:
                self._pending.discard(folder)
                if outcome == "removed":
                    removed.append(folder)
                    if folder.parent != self.inbox:
                        self._pending.add(folder.parent)
        return removed

    def _try(self, folder: Path) -> str:
        """ "removed", "wait" (empty but touched lately) or "keep" (holds something, or gone)."""
        try:
            with folder_fd(self.inbox, folder.parent) as parent:
                st = os.stat(folder.name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    return "keep"
                if self._clock() - st.st_mtime < self.quiet_seconds:
                    return "wait" if _is_empty(parent, folder.name) else "keep"
                os.rmdir(folder.name, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError, PathChanged):
            return "keep"  # gone already, or reached only through a symbolic link now
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                log.warning("cannot remove the emptied folder %s: %s", loggable(folder), exc)
            return "keep"
        log.info("removed the emptied folder %s", loggable(folder.relative_to(self.inbox)))
        return "removed"


def _is_empty(parent: int, name: str) -> bool:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is None
    finally:
        os.close(fd)
