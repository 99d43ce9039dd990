"""The one rule for a locked database: wait, doubling the wait, and try again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from inboxsort.backoff import backoff_delay
from inboxsort.db.session import is_locked_error

log = logging.getLogger(__name__)
T = TypeVar("T")

# Another writer (the CLI, a sqlite3 shell) holds the lock: waits double up to this cap.
RETRY_FIRST, RETRY_CAP = 0.05, 2.0


def retry_locked(
    action: Callable[[], T],
    *,
    what: str,
    wait: Callable[[float], object],
    give_up_after: float | None = None,
) -> T:
    """Run `action`; while the database is locked, wait and run it again.

    `wait(seconds)` returning True (a stop event's wait) or `give_up_after` seconds of waiting
    end the retries; then, as for any error that is not a lock, the error propagates.
    """
    attempt, waited = 0, 0.0
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_locked_error(exc):
                raise
            if give_up_after is not None and waited >= give_up_after:
                raise
            attempt += 1
            delay = backoff_delay(attempt, first=RETRY_FIRST, cap=RETRY_CAP)
            log.warning("database busy during %s; retrying in %.2f s", what, delay)
            if wait(delay) is True:
                raise
            waited += delay
