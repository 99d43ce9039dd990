"""The one rule for a database that cannot be written for now: wait, doubling the wait, and try
again. Two kinds: another writer holds the lock (short waits; a caller may give up), and the
database cannot grow (a full disk, a quota: longer waits, never given up, since the space may
come back tomorrow).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from inboxsort.backoff import backoff_delay
from inboxsort.db.session import describe_db_error, is_disk_full_error, is_transient_db_error

log = logging.getLogger(__name__)
T = TypeVar("T")

# Another writer (the CLI, a sqlite3 shell) holds the lock: waits double up to this cap.
RETRY_FIRST, RETRY_CAP = 0.05, 2.0
# The disk under the database is full: waits double up to this cap, for as long as it lasts.
FULL_FIRST, FULL_CAP = 0.5, 10.0
# A full disk is announced when a write first meets it, then again at most this often (across
# every thread that waits for it), not once per retry.
FULL_REPEAT_SECONDS = 60.0


class _FullDisk:
    """The log lines of a full disk: when it starts, a reminder while it lasts, when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._said = -math.inf

    def hit(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = now
            speak = now - self._said >= FULL_REPEAT_SECONDS
            if speak:
                self._said = now
            since = self._since
        level = logging.WARNING if speak else logging.DEBUG
        driver = describe_db_error(exc)
        detail = "" if driver == "database or disk is full" else f" ({driver})"
        if now - since < 1.0:
            log.log(
                level,
                "database or disk is full during %s%s: waiting for free space, retrying with "
                "backoff up to every %.0f s; nothing is lost meanwhile",
                what,
                detail,
                FULL_CAP,
            )
        else:
            log.log(
                level,
                "database or disk is still full after %.0f s (%s%s): waiting for free space",
                now - since,
                what,
                detail,
            )

    def cleared(self, what: str) -> None:
        now = time.monotonic()
        with self._lock:
            since, self._since, self._said = self._since, None, -math.inf
        if since is not None:
            log.info("database writable again after %.0f s (%s)", now - since, what)


_FULL_DISK = _FullDisk()


def retry_locked(
    action: Callable[[], T],
    *,
    what: str,
    wait: Callable[[float], object],
    give_up_after: float | None = None,
) -> T:
    """Run `action`; while the database is locked or full, wait and run it again.

    `wait(seconds)` returning True (a stop event's wait) ends the retries, and so does
    `give_up_after` seconds of a locked database (a full one is waited out however long it
    lasts); then, as for any error that is not transient, the error propagates.
    """
    locked, full = 0, 0
    locked_since: float | None = None
    while True:
        try:
            result = action()
        except Exception as exc:
            if is_disk_full_error(exc):
                full += 1
                delay = backoff_delay(full, first=FULL_FIRST, cap=FULL_CAP)
                _FULL_DISK.hit(what, exc)
            elif is_transient_db_error(exc):
                now = time.monotonic()
                locked_since = now if locked_since is None else locked_since
                if give_up_after is not None and now - locked_since >= give_up_after:
                    raise
                locked += 1
                delay = backoff_delay(locked, first=RETRY_FIRST, cap=RETRY_CAP)
                log.warning("database busy during %s; retrying in %.2f s", what, delay)
            else:
                raise
            if wait(delay) is True:
                raise
            continue
        if full:
            _FULL_DISK.cleared(what)
        return result
