"""Where the daemon itself just filed images, so the library watcher can skip them cheaply."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path


class OwnFilings:
    """A bounded, thread-safe note of (path → device, inode) for the daemon's own moves.

    Every image the daemon files raises an event in the library; without this note the
    library watcher asks the database whose file it is, once per image, on the cores the
    model needs. An entry is taken by the first event at its path and expires after `ttl`
    seconds, so a lost event cannot make a later move by the user look like the daemon's.
    """

    def __init__(
        self, *, ttl: float = 60.0, limit: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, tuple[int, int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, path: Path, *, device: int, inode: int) -> None:
        """Note that the daemon is about to put the file (device, inode) at `path`."""
        with self._lock:
            self._entries.pop(path, None)
            self._entries[path] = (device, inode, self._clock() + self.ttl)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)

    def take(self, path: Path) -> tuple[int, int] | None:
        """The (device, inode) noted for `path`, removed; None when absent or expired."""
        with self._lock:
            entry = self._entries.pop(path, None)
        if entry is None or self._clock() > entry[2]:
            return None
        return entry[0], entry[1]
