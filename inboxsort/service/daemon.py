"""The daemon: start-up checks, recovery, the threads of each stage, signals, heartbeat, swaps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from typing import Any

from inboxsort.config import Config
from inboxsort.db import (
    DAEMON_LOST,
    DAEMON_RUNNING,
    DAEMON_STARTING,
    DAEMON_STOPPED,
    Database,
    utcnow,
)
from inboxsort.errors import InboxsortError, StoreError
from inboxsort.files import loggable
from inboxsort.intake.claim import Intake
from inboxsort.intake.filing import Filer
from inboxsort.intake.inference import BatchReport, InferencePool
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Arrival
from inboxsort.intake.tidy import EmptiedFolders
from inboxsort.intake.watch import InboxHandler, InboxWatch, make_observer, uses_inotify
from inboxsort.library.watcher import (
    LibraryEvent,
    LibraryHandler,
    LibraryTracker,
    LibraryWorker,
    reconcile_library,
)
from inboxsort.model.classifier import Classifier, warm_up
from inboxsort.model.live import LiveModel
from inboxsort.model.registry import ModelStore
from inboxsort.own_filings import OwnFilings
from inboxsort.service.fleet import FLEET_CHECK_SECONDS, Fleet, listen_for_models
from inboxsort.service.lock import INBOX_LOCK_NAME
from inboxsort.service.notify import Notifier

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# How often the daemon looks for an activation or rollback made by `inboxsort models`.
MODEL_POLL_SECONDS = 3.0
RATE_WINDOW_SECONDS = 60.0  # the throughput systemctl status shows is over this window
_JOIN_SECONDS = 8.0  # stays inside the 10 s the unit's TimeoutStopSec allows for a clean stop
# How often the daemon checks that the inbox it watches is still the folder at its path.
INBOX_CHECK_SECONDS = 1.0


class Daemon:
    """All stages wired together; `start`, then `supervise` until stopped, then `close`."""

    def __init__(
        self,
        config: Config,
        *,
        db: Database,
        store: ModelStore,
        classifier: Classifier,
        notifier: Notifier | None = None,
        once: bool = False,
    ) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.once = once
        self.notifier = notifier or Notifier(None)
        self.stop_event = threading.Event()
        # Its waits for a locked or full database end when the daemon stops.
        self.ledger = Ledger(
            db, node=config.node.name, stop=self.stop_event, ping=self._ping_watchdog
        )
        self.fleet = Fleet(config, self.ledger, rescan=self.rescan)
        self.own_filings = OwnFilings()
        self.reload_event = threading.Event()
        self.model = LiveModel(classifier)
        # The inbox's lock file (lock.py) is never an arrival, whatever watch.ignore says.
        watch = dataclasses.replace(config.watch, ignore=(*config.watch.ignore, INBOX_LOCK_NAME))
        self.intake = Intake(
            root=config.paths.inbox,
            watch=watch,
            batch=config.batch,
            model=self.model,
            ledger=self.ledger if self.fleet.shared else None,
        )
        self.emptied = EmptiedFolders.for_inbox(config.paths.inbox, watch=config.watch)
        self.inference = InferencePool(
            model=self.model,
            intake=self.intake,
            filer=Filer(
                config.paths,
                config.filing,
                self.ledger,
                own=self.own_filings,
                emptied=self.emptied,
            ),
            max_size=config.batch.max_size,
            max_delay=config.batch.max_delay_ms / 1000,
            ping=self._ping_watchdog,
        )
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self._inbox_watch: InboxWatch | None = None
        self._library: LibraryWorker | None = None
        self._started_at = utcnow()
        self._last_ping = 0.0
        self._failed_version: int | None = None
        self._scheduler: Any = None
        # Set at shutdown: kills a training process the scheduled job is waiting on.
        self._retrain_stop = threading.Event()
        self._done_samples: deque[tuple[float, int]] = deque()

    def _ping_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        now = time.monotonic()
        if interval is not None and now - self._last_ping >= min(interval / 2, 1.0):
            self._last_ping = now
            self.notifier.watchdog()

    def start(self) -> None:
        """Recover from an unclean stop, start every stage, scan what is already there."""
        self.ledger.heartbeat(
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=self._started_at,
            state=DAEMON_STARTING,
            model_version=self.model.version(),
            **self.inference.counters(),
            queue_depth=0,
            in_flight=0,
        )
        self.fleet.recover()
        if self.once:
            # What a full run's library worker does first, without an observer: the moves and
            # deletions made in the library while no daemon ran.
            reconcile_library(self._library_tracker(), self.stop_event)
        workers = self.config.batch.inference_workers
        stages = [("intake", self.intake.run), ("heartbeat", self._heartbeat_loop)]
        if self.fleet.shared and not self.once:
            listen = functools.partial(listen_for_models, self.db, on_change=self.reload_event.set)
            stages.append(("model-changes", listen))
        stages += [(f"inference-{n}", self.inference.run) for n in range(1, workers + 1)]
        for name, target in stages:
            thread = threading.Thread(target=target, args=(self.stop_event,), name=name)
            thread.start()
            self._threads.append(thread)
        if not self.once:
            observer = make_observer(self.config.watch)
            handler = InboxHandler(
                self.intake.arrivals,
                moves_are_complete=not self.config.watch.polling,
                writes_end_with_close=uses_inotify(self.config.watch),
            )
            self._observer = observer
            self._inbox_watch = InboxWatch(observer, handler, self.config.paths.inbox)
            self._inbox_watch.arm(recursive=self.config.watch.recursive)
            self._watch_library(observer)
            observer.start()
            self._start_schedule()
        # Scanned after the observer starts: a file dropped in between is seen (claimed once).
        self.rescan()
        self.ledger.heartbeat(state=DAEMON_RUNNING)
        self.notifier.ready(self.status_line())
        if self.once:
            how = "once: what is there now, then exit"
        else:
            how = "polling" if self.config.watch.polling else "inotify"
            how += ", recursive" if self.config.watch.recursive else ""
        log.info(
            "watching %s (%s) with model version %d; filing into %s",
            loggable(self.config.paths.inbox),
            how,
            self.model.version(),
            loggable(self.config.paths.library),
        )

    def _watch_library(self, observer: Any) -> None:
        """Follow the user's moves in the library: the corrections the model learns from."""
        library = self.config.paths.library
        # Every class folder exists from the start, so a user can drag a misfiled image into
        # one even before the model has filed anything there.
        for name in self.model.classes():
            (library / name).mkdir(parents=True, exist_ok=True)
        events: queue.SimpleQueue[LibraryEvent] = queue.SimpleQueue()
        observer.schedule(LibraryHandler(events), str(library), recursive=True)
        # It reconciles first: moves and deletions made while no daemon ran.
        self._library = LibraryWorker(self._library_tracker(), events)
        self._library.start()

    def _library_tracker(self) -> LibraryTracker:
        """What tells the user's moves in the library from the daemon's own filings."""
        return LibraryTracker(
            self.db,
            library=self.config.paths.library,
            model=self.model,
            ignore=self.config.watch.ignore,
            own=self.own_filings,
            node=self.config.node.name,
        )

    def _start_schedule(self) -> None:
        """Start the retrain schedule; a version it promotes is loaded at once, not at the poll."""
        from inboxsort.service.schedule import make_scheduler
        from inboxsort.trainer.retrain.run import retrain

        def job() -> None:
            outcome = retrain(self.config, stop=self._retrain_stop)
            if outcome.promoted:
                # Pick it up now rather than at the next poll.
                self.reload_event.set()

        self._scheduler = make_scheduler(self.config, job)
        self._scheduler.start()

    def rescan(self) -> None:
        """Look at every file in the inbox (a safety net for events the watcher lost)."""
        self.intake.arrivals.put(Arrival(self.config.paths.inbox, is_dir=True))

    def status_line(self) -> str:
        """One line for `systemctl status`: queue, throughput, model."""
        last = self.inference.last
        batch = f"; last batch {last.size} in {last.millis:.0f} ms" if last else ""
        return (
            f"model v{self.model.version()}; {self.inference.processed} filed, "
            f"{self.inference.failed} failed, {self.throughput():.1f} images/s; "
            f"queue {self.inference.queued()}, in flight {self.intake.in_flight()}, "
            f"settling {self.intake.waiting()}{batch}"
        )

    def throughput(self) -> float:
        """Images done per second over the last RATE_WINDOW_SECONDS (0 until two samples)."""
        now, done = time.monotonic(), self.inference.processed + self.inference.failed
        samples = self._done_samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_SECONDS:
            samples.popleft()
        first_at, first_done = samples[0]
        return (done - first_done) / (now - first_at) if now > first_at else 0.0

    def heartbeat(self) -> None:
        """Write the state `inboxsort stats` shows."""
        last = self.inference.last
        try:
            self._beat(last)
        except StoreError:
            # A stop ends the ledger's wait for a locked or full database: what could not be
            # recorded now is the next start's to record, and the stop stays a clean one.
            if not self.stop_event.is_set():
                raise
            log.warning("stopping without the last heartbeat: the database is not writable")

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        """Beat every HEARTBEAT_SECONDS on a thread of its own: a model load in the supervise
        loop must not make this node look dead to the rest of the fleet."""
        while not stop.wait(HEARTBEAT_SECONDS):
            self.heartbeat()

    def _beat(self, last: BatchReport | None) -> None:
        was = self.ledger.heartbeat(
            state=DAEMON_RUNNING,
            queue_depth=self.inference.queued() + self.intake.waiting(),
            in_flight=self.intake.in_flight(),
            **self.inference.counters(),
            model_version=self.model.version(),
            last_batch_size=last.size if last else None,
            last_batch_ms=last.millis if last else None,
            last_batch_at=dt.datetime.fromtimestamp(last.at, dt.UTC) if last else None,
        )
        if was == DAEMON_LOST:
            # Another node took this one's claims over (it was silent too long): two nodes
            # could now file one file. Stop; the restart's recovery makes everything exact.
            raise InboxsortError(
                f"node {self.config.node.name} was taken over by another node after no "
                f"heartbeat for {self.config.node.stale_seconds:.0f} s; stopping"
            )

    def supervise(self, *, tick: float = 0.2) -> None:
        """Run the housekeeping loop (heartbeat, rescans, model swaps) until stopped."""
        next_beat = next_model = next_fleet = time.monotonic()
        next_rescan = time.monotonic() + self.config.watch.rescan_seconds
        next_inbox_check = time.monotonic() + INBOX_CHECK_SECONDS
        idle_ticks = 0
        while not self.stop_event.wait(tick):
            now = time.monotonic()
            # A stop asked for since the wait returned ends the threads on purpose.
            if any(not t.is_alive() for t in self._threads) and not self.stop_event.is_set():
                raise InboxsortError("a daemon thread died; see the log above")
            if self.once:
                idle_ticks = idle_ticks + 1 if self.intake.idle() else 0
                if idle_ticks >= 3:
                    break
            if now >= next_beat:
                next_beat = now + HEARTBEAT_SECONDS
                self.notifier.status(self.status_line())
            self.emptied.sweep()
            if now >= next_fleet:
                next_fleet = now + FLEET_CHECK_SECONDS
                self.fleet.check()
            if self.config.watch.rescan_seconds > 0 and now >= next_rescan:
                next_rescan = now + self.config.watch.rescan_seconds
                self.rescan()
            if self._inbox_watch is not None and now >= next_inbox_check:
                next_inbox_check = now + INBOX_CHECK_SECONDS
                if self._inbox_watch.check():
                    self.rescan()  # what was dropped into the new folder before it was watched
            if self.reload_event.is_set() or now >= next_model:
                next_model = now + MODEL_POLL_SECONDS
                self._check_model(forced=self.reload_event.is_set())

    def _check_model(self, *, forced: bool) -> None:
        """Load the active version off the inference thread, warm it up, then offer it."""
        reload = forced
        self.reload_event.clear()
        if reload:
            self.notifier.reloading()
        current = self.model.version()
        wanted: int | None = None
        try:
            wanted = self.store.active_version()
            if wanted == current or (wanted == self._failed_version and not reload):
                return
            log.info(
                "model version %d is active; loading it (serving %d meanwhile)", wanted, current
            )
            start = time.perf_counter()
            classifier = self.store.load(
                wanted,
                runtime=self.config.serving.runtime,
                workers=self.config.batch.inference_workers,
            )
            warm_up(classifier, max_batch=self.config.batch.max_size)
            self.model.offer(classifier)
            self._failed_version = None
            log.info(
                "model version %d loaded and warmed up in %.1f s",
                wanted,
                time.perf_counter() - start,
            )
        except Exception as exc:  # an edge: whatever fails, serving goes on with the old model
            if wanted is None:  # the registry itself (a locked or missing database)
                log.warning("cannot read the active model version, serving %d: %s", current, exc)
            else:
                self._failed_version = wanted
                log.error(
                    "cannot load model version %d, still serving %d: %s", wanted, current, exc
                )
        finally:
            if reload:
                self.notifier.ready(self.status_line())

    def stop(self) -> None:
        """Ask every stage to stop (safe from a signal handler)."""
        self.stop_event.set()

    def close(self) -> None:
        """Stop intake, finish the batch in flight, record the final state."""
        self.notifier.stopping(f"stopping; {self.status_line()}")
        self.stop_event.set()
        self._retrain_stop.set()
        if self._scheduler is not None:
            # A running retrain sees _retrain_stop, kills its child and returns within seconds.
            self._scheduler.shutdown(wait=True)
        if self._observer is not None:
            self._observer.stop()
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._observer is not None and self._observer.is_alive():
            self._observer.join(max(0.1, deadline - time.monotonic()))
        if self._library is not None:
            self._library.stop(timeout=max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.error("threads still running at exit: %s", ", ".join(stuck))
        self.fleet.release()  # before "stopped": the others rescan when they see it
        try:
            # One try (the stop event is set): a locked or full database is not waited for.
            self.ledger.heartbeat(
                state=DAEMON_STOPPED,
                queue_depth=0,
                in_flight=0,
                **self.inference.counters(),
            )
        except StoreError as exc:
            log.warning("cannot record the stopped state; stats will show a stale one: %s", exc)

        log.info("stopped: %s", self.status_line())
