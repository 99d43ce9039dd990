"""The library watcher: the user's moves, renames and deletions of filed images, as rows.

A user who drags library/cats/x.jpg into library/dogs/ has corrected the model; that move is
recorded as a Correction (the first half of the learning loop). The pieces, as in watch.py:
`LibraryHandler` only enqueues, `LibraryTracker` is plain code with no threads and no clock
reads, and `run_library_worker` / `LibraryWorker` is the tiny thread that connects the two.

Wiring in the daemon (the library folder must exist before it is scheduled):

    events: queue.SimpleQueue[LibraryEvent] = queue.SimpleQueue()
    observer.schedule(LibraryHandler(events), str(config.paths.library), recursive=True)
    tracker = LibraryTracker(db, library=config.paths.library, model=live_model,
                             ignore=config.watch.ignore)
    worker = LibraryWorker(tracker, events)   # reconciles first, then follows the events
    worker.start() ... worker.stop()

With no observer (`run --once`): reconcile_library(tracker, stop) alone.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from inboxsort.db.retry import retry_locked
from inboxsort.files import loggable
from inboxsort.library.events import CLOSED, CREATED, DELETED, MOVED, LibraryEvent
from inboxsort.library.reconcile import ReconcileReport
from inboxsort.library.tracker import LibraryTracker

__all__ = [
    "CLOSED",
    "CREATED",
    "DELETED",
    "MOVED",
    "LibraryEvent",
    "LibraryHandler",
    "LibraryTracker",
    "LibraryWorker",
    "ReconcileReport",
    "reconcile_library",
    "run_library_worker",
]

log = logging.getLogger(__name__)


class LibraryHandler(FileSystemEventHandler):
    """Turns watchdog events under the library into LibraryEvents; no I/O, never blocks."""

    def __init__(self, events: queue.SimpleQueue[LibraryEvent]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Enqueue creations, moves, deletions and closes-after-write."""
        path = Path(os.fsdecode(event.src_path))
        is_dir = event.is_directory
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            dest = os.fsdecode(event.dest_path)
            if not dest:  # a move out of the watched tree (full_events mode): a deletion
                self.events.put(LibraryEvent(DELETED, path, is_dir=is_dir))
            elif not os.fsdecode(event.src_path):  # a move in from outside: a creation
                self.events.put(LibraryEvent(CREATED, Path(dest), is_dir=is_dir))
            else:
                self.events.put(LibraryEvent(MOVED, Path(dest), src=path, is_dir=is_dir))
        elif isinstance(event, (FileCreatedEvent, DirCreatedEvent)):
            self.events.put(LibraryEvent(CREATED, path, is_dir=is_dir))
        elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
            self.events.put(LibraryEvent(DELETED, path, is_dir=is_dir))
        elif isinstance(event, FileClosedEvent):
            self.events.put(LibraryEvent(CLOSED, path))


# ---- the thread -------------------------------------------------------------------------


def _retrying(
    what: str, call: Callable[[float], object], clock: Callable[[], float], stop: threading.Event
) -> None:
    """Run call(now), waiting out a locked database; log and drop any other error."""
    try:
        retry_locked(lambda: call(clock()), what=what, wait=stop.wait)
    except Exception:
        # One bad event must not end the tracking of all later ones.
        log.exception("library tracking: %s failed", what)


def reconcile_library(
    tracker: LibraryTracker,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Moves and deletions made while no daemon ran, as rows; a failure is logged, not raised.

    The worker's first step; `run --once`, which starts no observer, calls it on its own.
    """
    _retrying("reconcile", lambda _now: tracker.reconcile(), clock, stop)


def run_library_worker(
    tracker: LibraryTracker,
    events: queue.SimpleQueue[LibraryEvent],
    stop: threading.Event,
    *,
    reconcile: bool = True,
    tick: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Reconcile, then feed events to the tracker and flush it every `tick` s until `stop`."""
    if reconcile:
        reconcile_library(tracker, stop, clock=clock)
    next_flush = clock() + tick
    while not stop.is_set():
        try:
            event = events.get(timeout=tick)
        except queue.Empty:
            pass
        else:
            what = f"{event.kind} {loggable(event.path)}"
            _retrying(what, partial(tracker.handle, event), clock, stop)
        if clock() >= next_flush:
            _retrying("flush", tracker.flush, clock, stop)
            next_flush = clock() + tick


class LibraryWorker:
    """run_library_worker on its own thread: start(), then stop() sets the event and joins."""

    def __init__(
        self,
        tracker: LibraryTracker,
        events: queue.SimpleQueue[LibraryEvent],
        *,
        reconcile: bool = True,
        tick: float = 0.5,
    ) -> None:
        self.stop_event = threading.Event()
        self._thread = threading.Thread(
            target=run_library_worker,
            args=(tracker, events, self.stop_event),
            kwargs={"reconcile": reconcile, "tick": tick},
            name="library",
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait for it; True when it has ended."""
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()
