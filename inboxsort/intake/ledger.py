"""The daemon's bookkeeping: a row before every move and a final status after it.

The order that makes kill -9 safe at any instant:
  1. plan:   commit a pending row whose dest_path names where the file is about to go;
  2. move:   link into place (never clobbering), then drop the inbox name;
  3. finish: commit the final status and the new path.
A crash between 1 and 3 leaves a pending row with a dest_path, and `recover` (recovery.py)
looks at the disk to finish the job: the file is either still in the inbox (processed again,
same row), already at dest_path (the row is completed), or in both places as one inode (the
inbox name goes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from inboxsort.db import STATUS_DELETED, STATUS_FILED, STATUS_PENDING, Database, Image, utcnow
from inboxsort.db.claims import release_claims, release_node, stopped_nodes, try_claim
from inboxsort.db.heartbeat import read_heartbeat, write_heartbeat
from inboxsort.db.queries import images_by_id, oldest_by_sha256, pending_by_sources
from inboxsort.db.retry import retry_locked
from inboxsort.db.schema import ORIGIN_INBOX
from inboxsort.db.session import describe_db_error
from inboxsort.errors import StoreError
from inboxsort.files import display_path

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long the daemon waits out a locked database before it gives up on one write; images
# stay in the inbox meanwhile.
_LOCKED_GIVE_UP_SECONDS = 120.0


@dataclass(frozen=True)
class PlannedMove:
    """One image about to be moved: its row, where it is, where it goes, and what it is."""

    row_id: int
    source: Path
    dest: Path
    status: str


@dataclass(frozen=True)
class Entry:
    """What filing knows about one image before its row is written."""

    source: Path
    dest: Path
    status: str
    sha256: str | None
    size: int | None
    device: int | None
    inode: int | None
    received_at: datetime
    label: str | None = None
    score: float | None = None
    model_version: int | None = None
    error: str | None = None
    duplicate_of: int | None = None
    # Who made the row and how the file came: `inboxsort backfill --file` files with this too.
    origin: str = ORIGIN_INBOX
    node: str | None = None


class Ledger:
    """All database writes of the daemon, each retried while the database is locked or full.

    `stop`: the daemon's stop event; once set, a write that cannot be made now is not waited
    for (what it would have recorded is left to recovery at the next start). `ping`: called
    while waiting, so that a long wait for disk space is not taken for a hung daemon.
    """

    def __init__(
        self,
        db: Database,
        *,
        node: str = "local",
        stop: threading.Event | None = None,
        ping: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.node = node
        self._stop = stop
        self._ping = ping
        self._sleep = sleep

    def _wait(self, seconds: float) -> bool:
        """Wait between tries; True when the daemon is stopping."""
        self._ping()
        if self._stop is None:
            self._sleep(seconds)
            return False
        return self._stop.wait(seconds)

    def run(self, what: str, action: Callable[[], T]) -> T:
        """Run one database action, waiting out a locked or full database; StoreError if it
        fails, gives up on a lock, or the daemon stops meanwhile."""
        try:
            return retry_locked(
                action, what=what, wait=self._wait, give_up_after=_LOCKED_GIVE_UP_SECONDS
            )
        except Exception as exc:
            stopping = " (stopping)" if self._stop is not None and self._stop.is_set() else ""
            raise StoreError(f"{what}{stopping}: {describe_db_error(exc)}") from exc

    def filed_duplicates(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each content hash already filed, the id of the first image filed with it."""
        wanted = list(hashes)
        if not wanted:
            return {}

        def query() -> dict[str, int]:
            with self.db.session() as session:
                found = oldest_by_sha256(session, wanted, statuses=(STATUS_FILED,))
                return {sha: row.id for sha, row in found.items()}

        return self.run("duplicate lookup", query)

    def plan(self, entries: Sequence[Entry]) -> list[PlannedMove]:
        """Commit a pending row (new, or the one a crash left) naming each destination."""

        def write() -> list[PlannedMove]:
            with self.db.begin() as session:
                # One query and one flush per batch, not per image: on two cores, the
                # per-image round trips cost the model CPU time it could use.
                sources = [display_path(e.source) for e in entries]
                left = pending_by_sources(session, sources)
                rows = []
                for e, source in zip(entries, sources, strict=True):
                    row = left.pop(source, None)
                    if row is None:
                        row = Image(source_path=source, received_at=e.received_at)
                        session.add(row)
                    row.original_name = display_path(Path(e.source.name))
                    row.path = source
                    row.dest_path = display_path(e.dest)
                    row.status = STATUS_PENDING
                    row.sha256, row.size = e.sha256, e.size
                    row.device, row.inode = e.device, e.inode
                    row.label, row.score, row.model_version = e.label, e.score, e.model_version
                    # What the model said; corrections change label and score, not these.
                    row.model_label, row.model_score = e.label, e.score
                    row.classified_at = utcnow() if e.label is not None else None
                    row.error, row.duplicate_of = e.error, e.duplicate_of
                    # The node that classified it when not this process (a backfill's Ray
                    # actor), else the node that files it (after a takeover: the successor).
                    row.origin, row.node = e.origin, e.node or self.node
                    rows.append(row)
                session.flush()
                return [
                    PlannedMove(row.id, e.source, e.dest, e.status)
                    for e, row in zip(entries, rows, strict=True)
                ]

        return self.run("recording images", write)

    def replan(self, plan: PlannedMove, dest: Path) -> PlannedMove:
        """Point a pending row at a new destination (the planned name was taken meanwhile)."""

        def write() -> None:
            with self.db.begin() as session:
                row = session.get(Image, plan.row_id)
                assert row is not None
                row.dest_path = display_path(dest)

        self.run("recording a new destination", write)
        return PlannedMove(plan.row_id, plan.source, dest, plan.status)

    def finish(self, done: Iterable[tuple[PlannedMove, str | None]]) -> None:
        """Commit the final status of moved images (None) or of vanished ones (the reason)."""
        items = list(done)
        if not items:
            return

        def write() -> None:
            now = utcnow()
            with self.db.begin() as session:
                rows = images_by_id(session, (plan.row_id for plan, _ in items))
                for plan, vanished in items:
                    row = rows[plan.row_id]
                    if vanished is not None:
                        row.status, row.error, row.dest_path = STATUS_DELETED, vanished, None
                        continue
                    complete(row, plan.dest, plan.status, now)

        self.run("recording filed images", write)

    def heartbeat(self, **fields: object) -> str | None:
        """Write this node's daemon_state row (what `inboxsort stats` shows); returns the
        state it had before (DAEMON_LOST: another node took this one over meanwhile)."""

        def write() -> str | None:
            with self.db.begin() as session:
                before = read_heartbeat(session, self.node)
                was = None if before is None else before.state
                write_heartbeat(session, node=self.node, **fields)
                return was

        return self.run("heartbeat", write)

    def fleet_stopped(self) -> set[str]:
        """The nodes that stopped or were taken over."""

        def query() -> set[str]:
            with self.db.session() as session:
                return stopped_nodes(session)

        return self.run("reading the fleet", query)

    def release_mine(self) -> None:
        """Drop every claim of this node (it stops: what it did not file stays in the inbox)."""

        def write() -> None:
            with self.db.begin() as session:
                release_node(session, self.node)

        self.run("releasing claims", write)

    def claim(self, key: str, path: Path) -> bool:
        """Claim one inbox file for this node; False when another node holds it."""

        def write() -> bool:
            with self.db.begin() as session:
                return try_claim(session, key=key, node=self.node, path=display_path(path))

        return self.run("claiming a file", write)

    def release(self, keys: Iterable[str]) -> None:
        """Drop this node's claims on these files (they left the inbox, or wait for a look)."""
        wanted = list(keys)
        if not wanted:
            return

        def write() -> None:
            with self.db.begin() as session:
                release_claims(session, wanted, node=self.node)

        self.run("releasing claims", write)


def complete(row: Image, dest: Path, status: str, now: datetime) -> None:
    """Mark a row's move done: its status, its new path and the inode it has there."""
    row.status, row.path, row.dest_path, row.filed_at = status, display_path(dest), None, now
    try:
        st = os.lstat(dest)
    except OSError:
        return
    row.device, row.inode = st.st_dev, st.st_ino
