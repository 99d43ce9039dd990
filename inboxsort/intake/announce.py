"""One log line per image, saying where it went, held to a rate under a flood.

`journalctl -f` should answer "where did my file go" for the odd image, while 5000 images
dropped at once should not bury everything else: each second the first `per_second` images get
their own line and the rest one summary line ("… and 140 more: 138 filed, 2 failed").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("inboxsort.intake.filing")

LINES_PER_SECOND = 10


class Announcer:
    """Logs each image's outcome, at most `per_second` lines a second plus one summary.

    Thread-safe: several inference workers file side by side. Call `flush` now and then (the
    workers do between batches) so the summary of a flood's last second is not held back.
    """

    def __init__(
        self,
        *,
        per_second: int = LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._window = clock()
        self._used = 0
        self._held: Counter[str] = Counter()

    def image(self, level: int, outcome: str, message: str, *args: object) -> None:
        """Log one image's line, or count it under `outcome` for the next summary."""
        with self._lock:
            self._roll(self._clock())
            if self._used < self.per_second:
                self._used += 1
                log.log(level, message, *args)
            else:
                self._held[outcome] += 1

    def flush(self, *, force: bool = False) -> None:
        """Write the summary of a second that has ended (`force`: of the current one too)."""
        with self._lock:
            self._roll(self._clock(), force=force)

    def _roll(self, now: float, *, force: bool = False) -> None:
        if now - self._window < 1.0 and not force:
            return
        if self._held:
            total = sum(self._held.values())
            parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self._held.items()))
            level = logging.WARNING if self._held.get("failed") else logging.INFO
            log.log(
                level,
                "… and %d more in %.0f s: %s (inboxsort query --since 10m lists them)",
                total,
                max(1.0, now - self._window),
                parts,
            )
            self._held.clear()
        self._window = now
        self._used = 0
