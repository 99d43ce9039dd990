"""One node's part in a fleet of daemons sharing one database (and perhaps one inbox)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from inboxsort.config import Config
from inboxsort.db import Database
from inboxsort.db.listen import ModelChanges
from inboxsort.db.session import is_shared
from inboxsort.errors import StoreError
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.recovery import RecoveryReport, recover

log = logging.getLogger(__name__)

# How often a node of a fleet looks for dead nodes whose files it should take over.
FLEET_CHECK_SECONDS = 2.0


class Fleet:
    """Start-up recovery, the takeover of dead nodes, and the release of claims at a stop.

    A SQLite file has one daemon (its lock file sees to it), which recovers everything. Any
    other database may have a fleet: each node recovers its own work and that of dead nodes,
    never the moves a live node is making.
    """

    def __init__(self, config: Config, ledger: Ledger, *, rescan: Callable[[], None]) -> None:
        self.shared = is_shared(config.database.url)
        self._config = config
        self._ledger = ledger
        self._rescan = rescan
        self._stopped: set[str] = set()

    def recover(self) -> RecoveryReport:
        """At start: finish this node's interrupted moves (and a dead node's, in a fleet)."""
        report = recover(
            self._ledger,
            self._config.paths,
            sole=not self.shared,
            stale_seconds=self._config.node.stale_seconds,
        )
        if self.shared:
            self._stopped = self._ledger.fleet_stopped()
        return report

    def check(self) -> None:
        """Take over dead nodes' claims and rows; rescan when some node left files behind."""
        if not self.shared:
            return
        report = recover(
            self._ledger,
            self._config.paths,
            sole=False,
            own=False,
            stale_seconds=self._config.node.stale_seconds,
        )
        stopped = self._ledger.fleet_stopped()
        if report.taken_over or stopped - self._stopped:
            # Their files are free again: look at the whole inbox now, not at the next rescan.
            self._rescan()
        self._stopped = stopped

    def release(self) -> None:
        """At a stop: free this node's claims, so the others take what it leaves in the inbox."""
        if not self.shared:
            return
        try:
            self._ledger.release_mine()
        except StoreError as exc:
            log.warning("cannot release this node's claims; a restart will: %s", exc)


def listen_for_models(
    db: Database, stop: threading.Event, *, on_change: Callable[[], None]
) -> None:
    """Until `stop`: call `on_change` as soon as any node activates a version (PostgreSQL
    NOTIFY); a thread of the daemon. The daemon's poll sees each change too, seconds later."""
    changes = ModelChanges(db)
    if not changes.supported:
        stop.wait()
        return
    try:
        while not stop.is_set():
            try:
                if changes.wait(timeout=1.0):
                    on_change()
            except Exception as exc:  # a lost connection: the poll covers the gap
                log.warning("listening for model changes: %s; trying again in 5 s", exc)
                stop.wait(5.0)
    finally:
        changes.close()
