"""Cumulative histograms as the daemon stores them in its heartbeat row and /metrics reads them.

Both sides import the bucket bounds and the JSON shape from here, so they cannot disagree:
{"bounds": [finite upper bounds], "buckets": [cumulative counts, one per bound, then +Inf],
"sum": the observations' total, "count": how many}.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

# Images per batch: batches hold at most batch.max_size images (32 by default).
BATCH_SIZE_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)
# Seconds from a batch's start to its last image filed.
BATCH_LATENCY_BOUNDS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A retrain's wall seconds in its worker process: loading, fine-tuning and judging.
RETRAIN_SECONDS_BOUNDS: tuple[float, ...] = (30, 60, 120, 300, 600, 1200, 1800, 3600)

# The keys of the heartbeat's batch_histograms column.
BATCH_SIZE = "batch_size"
BATCH_LATENCY = "batch_latency_seconds"


class Histogram:
    """Counts of observations at or below each bound, their sum and their count."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase: {list(bounds)}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation in the first bucket whose bound is at or above it."""
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, then the count (the +Inf bucket)."""
        out, total = [], 0
        for n in self._counts:
            total += n
            out.append(total)
        return out

    def to_json(self) -> dict[str, Any]:
        """The stored shape: bounds, cumulative buckets, sum and count."""
        return {
            "bounds": list(self.bounds),
            "buckets": self.cumulative(),
            "sum": self.sum,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        """Read what to_json wrote; ValueError if the buckets do not fit the bounds."""
        histogram = cls([float(b) for b in data["bounds"]])
        buckets = [int(n) for n in data["buckets"]]
        if len(buckets) != len(histogram.bounds) + 1 or buckets != sorted(buckets):
            raise ValueError(f"histogram buckets do not fit its bounds: {buckets}")
        histogram._counts = [b - a for a, b in zip([0, *buckets], buckets, strict=False)]
        histogram.sum, histogram.count = float(data["sum"]), buckets[-1]
        return histogram
