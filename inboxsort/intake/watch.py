"""Watching: a thin watchdog adapter that only enqueues, and the observer factory."""

from __future__ import annotations

import os
import queue
import sys
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
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
from inboxsort.intake.records import Arrival


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
        return InotifyObserver(generate_full_events=True)
    return Observer()
