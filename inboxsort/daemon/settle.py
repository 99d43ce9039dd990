"""Settling: a file is ready once its size and mtime stop changing, or its writer closed it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Stat = Callable[[Path], os.stat_result]


@dataclass
class _Watched:
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    closed: bool = False
    not_before: float = 0.0


class SettleTracker:
    """Tracks candidate files until they are complete; plain code, no threads, no clock reads."""

    def __init__(self, settle_seconds: float, *, stat: Stat = os.lstat) -> None:
        self.settle_seconds = settle_seconds
        self._stat = stat
        self._files: dict[Path, _Watched] = {}

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def note(self, path: Path, now: float, *, closed: bool = False, delay: float = 0.0) -> None:
        """Record an event for path; `delay` holds it back (a retry after a transient error)."""
        entry = self._files.setdefault(path, _Watched(stable_since=now))
        if closed:
            # The writer closed the file: what we see at the next look is complete, so that
            # look starts a fresh baseline instead of counting as a change.
            entry.closed, entry.size = True, -1
        elif entry.closed:
            # Written again after the close (the next look is a fresh baseline, so only the
            # event can tell): wait for the file to settle instead.
            entry.closed = False
        entry.not_before = max(entry.not_before, now + delay)

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
            if entry.closed or now - entry.stable_since >= self.settle_seconds:
                ready.append(path)
                del self._files[path]
        return ready

    def next_check(self, now: float) -> float | None:
        """Seconds until poll() could next return something, or None when nothing is tracked."""
        if not self._files:
            return None
        due = [
            max(e.not_before, e.stable_since + self.settle_seconds, now)
            if not e.closed
            else max(e.not_before, now)
            for e in self._files.values()
        ]
        # Re-stat at least every quarter of the settle time so changes restart the clock promptly.
        return max(0.0, min(min(due) - now, max(self.settle_seconds / 4, 0.05)))
