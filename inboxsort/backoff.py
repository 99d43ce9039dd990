"""The one backoff rule: each wait doubles from `first` up to `cap`."""

from __future__ import annotations


def backoff_delay(attempt: int, *, first: float, cap: float) -> float:
    """Seconds to wait before try number `attempt` + 1 (attempt counts from 1)."""
    return min(first * 2.0 ** max(attempt - 1, 0), cap)
