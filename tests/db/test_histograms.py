"""The histogram the heartbeat stores and /metrics reads: buckets, JSON round trip, bad data."""

from __future__ import annotations

import pytest

from inboxsort.db.histograms import Histogram


def test_each_observation_lands_in_the_first_bucket_at_or_above_it() -> None:
    histogram = Histogram([1, 2, 4])
    for value in (1, 1, 2, 3, 4, 5, 100):
        histogram.observe(value)
    # 1, 1 ≤ 1; 2 ≤ 2; 3, 4 ≤ 4; 5, 100 only in +Inf: cumulative as Prometheus counts them.
    assert histogram.cumulative() == [2, 3, 5, 7]
    assert (histogram.sum, histogram.count) == (116.0, 7)


def test_json_round_trips_and_says_its_bounds() -> None:
    histogram = Histogram([0.1, 0.5])
    for value in (0.05, 0.3, 0.3, 2.0):
        histogram.observe(value)
    data = histogram.to_json()
    assert data == {"bounds": [0.1, 0.5], "buckets": [1, 3, 4], "sum": 2.65, "count": 4}
    again = Histogram.from_json(data)
    assert again.to_json() == data
    again.observe(0.2)
    assert again.cumulative() == [1, 4, 5]


def test_buckets_that_do_not_fit_the_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        Histogram.from_json({"bounds": [1, 2], "buckets": [1, 2], "sum": 0, "count": 2})
    with pytest.raises(ValueError, match="do not fit"):
        Histogram.from_json({"bounds": [1], "buckets": [3, 2], "sum": 0, "count": 2})
    with pytest.raises(ValueError, match="must increase"):
        Histogram([2, 1])
