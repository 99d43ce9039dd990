"""The daemon's batch histograms: each batch counted by size and seconds, as the JSON it stores."""

from __future__ import annotations

from inboxsort.db.histograms import BATCH_LATENCY_BOUNDS, BATCH_SIZE_BOUNDS, Histogram
from inboxsort.intake.inference import BatchHistograms


def test_a_new_daemon_stores_empty_histograms_with_every_bucket() -> None:
    data = BatchHistograms().to_json()
    assert set(data) == {"batch_size", "batch_latency_seconds"}
    assert data["batch_size"] == {
        "bounds": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        "buckets": [0] * 8,
        "sum": 0.0,
        "count": 0,
    }
    assert data["batch_latency_seconds"]["bounds"] == list(BATCH_LATENCY_BOUNDS)
    assert data["batch_latency_seconds"]["buckets"] == [0] * (len(BATCH_LATENCY_BOUNDS) + 1)


def test_batches_are_counted_by_size_and_by_seconds() -> None:
    histograms = BatchHistograms()
    for size, seconds in ((1, 0.004), (3, 0.04), (32, 0.3), (32, 0.3), (70, 7.0)):
        histograms.observe(size, seconds)
    data = histograms.to_json()
    # Sizes ≤ 1, 2, 4, 8, 16, 32, 64, +Inf (cumulative).
    assert data["batch_size"]["buckets"] == [1, 1, 2, 2, 2, 4, 4, 5]
    assert (data["batch_size"]["sum"], data["batch_size"]["count"]) == (138.0, 5)
    # Seconds ≤ 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, +Inf.
    assert data["batch_latency_seconds"]["buckets"] == [1, 1, 2, 2, 2, 4, 4, 4, 4, 5]
    assert data["batch_latency_seconds"]["count"] == 5
    assert abs(data["batch_latency_seconds"]["sum"] - 7.644) < 1e-9
    # What the web process reads back is what the daemon counted.
    assert Histogram.from_json(data["batch_size"]).cumulative() == data["batch_size"]["buckets"]
    assert len(BATCH_SIZE_BOUNDS) + 1 == len(data["batch_size"]["buckets"])
