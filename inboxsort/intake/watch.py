"""Watching: a thin watchdog adapter that only enqueues, and the observer factory."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from inboxsort.config import WatchConfig
from inboxsort.files import loggable
from inboxsort.intake.records import Arrival

log = logging.getLogger(__name__)


def _as_path(raw: str | bytes) -> Path:
    return Path(os.fsdecode(raw))


class InboxHandler(FileSystemEventHandler):
    """Turns watchdog events into Arrivals on a queue; no filtering, no I/O, never blocks."""

    def __init__(
        self,
        arrivals: queue.SimpleQueue[Arrival],
        *,
        moves_are_complete: bool = True,
        writes_end_with_close: bool = True,
    ) -> None:
        self.arrivals = arrivals
        # Only inotify reports real renames; the polling observer infers "moves" from inode
        # numbers, and a deleted file's inode reused by a new upload looks like one.
        self.moves_are_complete = moves_are_complete
        # Only inotify reports closes: there, a write with no close yet is a writer still at it
        # (FSEvents, kqueue, Windows and polling never report one).
        self.writes_end_with_close = writes_end_with_close

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Enqueue the path an event brings into view."""
        if isinstance(event, FileCreatedEvent):
            # Not a sign of a writer: hard links and the files of a folder moved or copied in
            # arrive as creations that no close follows.
            self.arrivals.put(Arrival(_as_path(event.src_path)))
        elif isinstance(event, FileModifiedEvent):
            # IN_MODIFY comes only from a write: its writer's close is reported in turn.
            writing = self.writes_end_with_close and not event.is_synthetic
            self.arrivals.put(Arrival(_as_path(event.src_path), writing=writing))
        elif isinstance(event, FileClosedEvent):
            self.arrivals.put(Arrival(_as_path(event.src_path), closed=True))
        elif isinstance(event, FileMovedEvent):
            # A rename is atomic: what was moved in is complete (browsers and uploaders write
            # a .part file and rename it; `mv` from elsewhere on the disk), so it needs no
            # settling time. No dest: moved out of the inbox (full events), nothing to do.
            if event.dest_path:
                dest = _as_path(event.dest_path)
                self.arrivals.put(Arrival(dest, closed=self.moves_are_complete))
        elif isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # A folder moved in brings files that raise no events of their own: scan it.
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            if target:
                self.arrivals.put(Arrival(_as_path(target), is_dir=True))


def uses_inotify(config: WatchConfig) -> bool:
    """Whether make_observer(config) uses inotify, the one that reports renames and closes."""
    return not config.polling and sys.platform.startswith("linux")


def make_observer(config: WatchConfig) -> Any:
    """An inotify observer, or a polling one for network shares where inotify is silent."""
    if config.polling:
        return PollingObserver(timeout=config.poll_interval_seconds)
    if uses_inotify(config):
        from watchdog.observers.inotify import InotifyObserver

        # Full events: a file renamed in from outside the watched tree arrives as a move
        # (complete, filed at once) instead of a creation that waits settle_seconds; a file
        # moved out of the library is told apart from one moved within it.
        emitter_log = logging.getLogger("watchdog.observers.inotify")
        if not any(isinstance(f, _EmitterStopping) for f in emitter_log.filters):
            emitter_log.addFilter(_EmitterStopping())
        return InotifyObserver(generate_full_events=True)
    return Observer()


# What watchdog's inotify emitter logs at ERROR when an event arrives while the emitter is
# being stopped (its read loop runs once more after on_thread_stop closed the inotify handle).
# Emitters stop only when the daemon stops or re-arms its watch, so the line is expected.
_EMITTER_STOPPED = "queue_events() called when the thread is inactive"


class _EmitterStopping(logging.Filter):
    """Drops that one line of watchdog's; every other line passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _EMITTER_STOPPED not in record.getMessage()


def _folder_identity(path: Path) -> tuple[int, int] | None:
    """Device and inode of the folder at path (followed if a link), or None if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class _RootDeleted(FileSystemEventHandler):
    """Notes inotify's word that the watched folder itself was deleted (its watch is dead)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Set `seen` when the event is the root's own deletion."""
        if isinstance(event, DirDeletedEvent) and _as_path(event.src_path) == self.root:
            self.seen.set()


class InboxWatch:
    """The observer's watch on the inbox, armed again when the inbox folder itself is replaced.

    inotify watches a folder, not a path: once the inbox is renamed or deleted and made again,
    it reports nothing from the new folder. `check` compares the folder at the inbox's path
    with the one watched (device and inode, a stat) and moves the watch to the new one; a
    folder deleted and made again may get the same inode number, so inotify's report of the
    deletion counts too.
    """

    def __init__(self, observer: Any, handler: FileSystemEventHandler, root: Path) -> None:
        self.observer = observer
        self.handler = handler
        self.root = root
        self.recursive = True
        self._watch: Any = None
        self._identity: tuple[int, int] | None = None
        self._gone = False
        self._deleted = _RootDeleted(root)

    def arm(self, *, recursive: bool) -> None:
        """Watch the folder now at the inbox's path (the first time, before observer.start)."""
        self.recursive = recursive
        self._identity = _folder_identity(self.root)
        self._watch = self._schedule()

    def _schedule(self) -> Any:
        watch = self.observer.schedule(self.handler, str(self.root), recursive=self.recursive)
        self.observer.add_handler_for_watch(self._deleted, watch)
        return watch

    def check(self) -> bool:
        """True when the inbox was replaced and its new folder is watched (scan it then)."""
        current = _folder_identity(self.root)
        if current == self._identity and not self._deleted.seen.is_set():
            return False
        if current is None:
            if not self._gone:
                self._gone = True
                log.warning(
                    "the inbox %s is gone (moved or deleted); waiting for it to be made again",
                    loggable(self.root),
                )
            return False
        if self._watch is not None:
            with contextlib.suppress(KeyError):
                self.observer.unschedule(self._watch)
            self._watch = None
        self._deleted.seen.clear()
        try:
            self._watch = self._schedule()
        except OSError as exc:
            log.warning("cannot watch the new inbox %s yet: %s", loggable(self.root), exc)
            self._deleted.seen.set()  # try again at the next check
            return False
        self._identity, self._gone = current, False
        log.warning(
            "the inbox %s was replaced (moved, deleted or made again); watching the new folder",
            loggable(self.root),
        )
        return True
