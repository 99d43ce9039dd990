"""Settling: a file is ready once its size and mtime stop changing, or its writer closed it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from inboxsort.files import loggable

Stat = Callable[[Path], os.stat_result]

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    closed: bool = False
    writing: bool = False  # inotify saw a write and no close since
    not_before: float = 0.0
    held_until: float = 0.0  # kept back while unchanged (a file that did not decode)


class SettleTracker:
    """Tracks candidate files until they are complete; plain code, no threads, no clock reads."""

    def __init__(
        self, settle_seconds: float, *, writer_timeout: float = 60.0, stat: Stat = os.lstat
    ) -> None:
        self.settle_seconds = settle_seconds
        # A file inotify saw written and not yet closed has a writer that may only be paused
        # (a stalled copy from a share): quiet for settle_seconds is not enough, only its close
        # is, or this much quiet time, for writers that never close.
        self.writer_timeout = max(writer_timeout, settle_seconds)
        self._stat = stat
        self._files: dict[Path, _Watched] = {}

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def note(
        self,
        path: Path,
        now: float,
        *,
        closed: bool = False,
        writing: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Record an event for path; `delay` holds it back (a retry after a transient error)."""
        entry = self._files.setdefault(path, _Watched(stable_since=now))
        entry.writing = (entry.writing or writing) and not closed
        if closed or writing:
            entry.held_until = 0.0  # written again: worth another look at once
        if closed:
            # The writer closed the file: what we see at the next look is complete, so that
            # look starts a fresh baseline instead of counting as a change.
            entry.closed, entry.size = True, -1
        elif entry.closed:
            # Written again after the close (the next look is a fresh baseline, so only the
            # event can tell): wait for the file to settle instead.
            entry.closed = False
        entry.not_before = max(entry.not_before, now + delay)

    def hold(self, path: Path, now: float, *, until: float, size: int, mtime_ns: int) -> None:
        """Keep path back until `until`, unless it is written or changes from (size, mtime_ns).

        A path noted again since it was claimed has changed already: it is looked at as usual.
        """
        if path not in self._files:
            self._files[path] = _Watched(
                size=size, mtime_ns=mtime_ns, stable_since=now, held_until=until
            )

    def forget(self, path: Path) -> None:
        """Stop tracking path."""
        self._files.pop(path, None)

    def poll(self, now: float) -> list[Path]:
        """Paths that are ready now; vanished paths are dropped quietly; the rest keep waiting."""
        ready = []
        for path, entry in list(self._files.items()):
            if now < entry.not_before:
                continue
            try:
                st = self._stat(path)
            except FileNotFoundError:
                del self._files[path]
                continue
            except OSError:
                # Unreadable metadata is the claimer's problem: it records the reason.
                ready.append(path)
                del self._files[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                first_look = entry.size == -1
                entry.size, entry.mtime_ns = st.st_size, st.st_mtime_ns
                entry.stable_since = now
                if not first_look:
                    # Written again since the close event: that close no longer proves much.
                    entry.closed = False
                entry.held_until = 0.0
            if now < entry.held_until:
                continue
            if entry.closed or self._quiet_enough(path, entry, st, now - entry.stable_since):
                ready.append(path)
                del self._files[path]
        return ready

    def _quiet_enough(self, path: Path, entry: _Watched, st: os.stat_result, quiet: float) -> bool:
        if quiet < self.settle_seconds:
            return False
        if not entry.writing or not S_ISREG(st.st_mode):
            return True  # only a regular file has a writer to wait for
        if quiet < self.writer_timeout:
            return False
        log.warning(
            "%s: written, unchanged for %.0f s, and still not closed; reading it as it is",
            loggable(path),
            quiet,
        )
        return True

    def next_check(self, now: float) -> float | None:
        """Seconds until poll() could next return something, or None when nothing is tracked."""
        if not self._files:
            return None
        due = [
            max(e.not_before, now)
            if e.closed
            else max(e.not_before, e.held_until, e.stable_since + self._wait(e), now)
            for e in self._files.values()
        ]
        # Re-stat at least every quarter of the settle time so changes restart the clock promptly
        # (and a symlink or FIFO noted as written is found ready after settle_seconds).
        return max(0.0, min(min(due) - now, max(self.settle_seconds / 4, 0.05)))

    def _wait(self, entry: _Watched) -> float:
        return self.writer_timeout if entry.writing else self.settle_seconds
