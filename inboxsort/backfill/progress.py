"""Progress a person can watch: a bar on a terminal, a plain line now and then elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from inboxsort.backfill.writer import Tally

_BAR = 30
_REDRAW_SECONDS = 0.2


def clock_text(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    whole = int(max(0.0, seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    """Shows done/total, images/s and the ETA; `every` seconds a line when not on a terminal."""

    def __init__(
        self,
        total: int,
        *,
        out: TextIO,
        tty: bool,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.out = out
        self.tty = tty
        self.every = every
        self.clock = clock
        self.start = clock()
        self._shown = -1e9

    def text(self, done: int) -> str:
        """The progress line for `done` of `total` images."""
        elapsed = max(1e-9, self.clock() - self.start)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        share = done / self.total if self.total else 1.0
        eta_text = clock_text(eta) if eta == eta else "?"
        return (
            f"{done}/{self.total} images ({share:.0%}), {rate:.1f} images/s, "
            f"elapsed {clock_text(elapsed)}, ETA {eta_text}"
        )

    def update(self, done: int, *, final: bool = False) -> None:
        """Redraw the bar (terminal) or print a line if `every` seconds have passed."""
        now = self.clock()
        if not final and now - self._shown < (_REDRAW_SECONDS if self.tty else self.every):
            return
        self._shown = now
        if self.tty:
            filled = int(_BAR * done / self.total) if self.total else _BAR
            bar = "#" * filled + "-" * (_BAR - filled)
            end = "\n" if final else ""
            self.out.write(f"\r[{bar}] {self.text(done)}\x1b[K{end}")
        else:
            self.out.write(f"backfill: {self.text(done)}\n")
        self.out.flush()


def summary(tally: Tally, *, elapsed: float, interrupted: bool = False) -> str:
    """The lines printed at the end: classified per label, skipped, moved, failed with reasons."""
    classified = sum(tally.labels.values())
    failed = sum(tally.failures.values())
    head = "backfill interrupted" if interrupted else "backfill done"
    rate = classified / elapsed if elapsed > 0 else 0.0
    lines = [
        f"{head} in {clock_text(elapsed)}: {classified} classified ({rate:.1f} images/s), "
        f"{tally.skipped} skipped (already on record), {tally.moved} found moved, "
        f"{failed} failed"
    ]
    lines += [f"  {label}: {n}" for label, n in sorted(tally.labels.items())]
    lines += [f"  failed: {n} × {reason}" for reason, n in tally.failures.most_common()]
    if interrupted:
        lines.append("  run it again to go on where it stopped")
    return "\n".join(lines) + "\n"
