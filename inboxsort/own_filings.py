"""Where the daemon itself just filed images, so the library watcher can skip them cheaply."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

Inode = tuple[int, int]  # device, inode


class OwnFilings:
    """A bounded, thread-safe note of (path → device, inode) for the daemon's own moves.

    Every image the daemon files raises an event in the library; without this note the
    library watcher asks the database whose file it is, once per image, on the cores the
    model needs. A note is taken by the first event at its path, dropped as soon as its
    inode is seen anywhere else (the user moved the file before its event was read), and
    expires after `ttl` seconds: a note whose event never came must not make a user's later
    move of that file back to that name look like the daemon's.
    """

    def __init__(
        self, *, ttl: float = 60.0, limit: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._by_path: OrderedDict[Path, tuple[Inode, float]] = OrderedDict()
        self._by_inode: dict[Inode, Path] = {}

    def __len__(self) -> int:
        return len(self._by_path)

    def add(self, path: Path, *, device: int, inode: int) -> None:
        """Note that the daemon is about to put the file (device, inode) at `path`."""
        key = (device, inode)
        with self._lock:
            self._drop_path(path)
            self._drop_inode(key)  # an earlier attempt under another name
            self._by_path[path] = (key, self._clock() + self.ttl)
            self._by_inode[key] = path
            while len(self._by_path) > self.limit:
                self._drop_path(next(iter(self._by_path)))

    def take(self, path: Path) -> Inode | None:
        """The (device, inode) noted for `path`, removed; None when absent or expired."""
        with self._lock:
            entry = self._drop_path(path)
        if entry is None or self._clock() > entry[1]:
            return None
        return entry[0]

    def discard(self, path: Path) -> None:
        """Forget the note for `path` (the move did not happen)."""
        with self._lock:
            self._drop_path(path)

    def seen_at(self, path: Path, *, device: int, inode: int) -> None:
        """The file (device, inode) was seen at `path`: a note for it elsewhere is stale."""
        key = (device, inode)
        with self._lock:
            if self._by_inode.get(key, path) != path:
                self._drop_inode(key)

    def _drop_path(self, path: Path) -> tuple[Inode, float] | None:
        entry = self._by_path.pop(path, None)
        if entry is not None and self._by_inode.get(entry[0]) == path:
            del self._by_inode[entry[0]]
        return entry

    def _drop_inode(self, key: Inode) -> None:
        path = self._by_inode.pop(key, None)
        if path is not None:
            self._by_path.pop(path, None)
