"""Batcher with an injected clock: full batches, batches due by age, and leftovers."""

from __future__ import annotations

import pytest

from inboxsort.intake.batching import Batcher


def test_empty_batcher() -> None:
    batcher: Batcher[str] = Batcher(max_size=4, max_delay=2.0)
    assert len(batcher) == 0
    assert not batcher.due(0.0)
    assert not batcher.due(1e9)
    assert batcher.wait_time(0.0) is None
    assert batcher.take() == []
    assert batcher.wait_time(0.0) is None


def test_full_batch_is_due_at_once() -> None:
    batcher: Batcher[str] = Batcher(max_size=3, max_delay=10.0)
    batcher.add("a", 0.0)
    batcher.add("b", 0.0)
    assert not batcher.due(0.0)
    batcher.add("c", 0.0)
    assert len(batcher) == 3
    assert batcher.due(0.0)


def test_partial_batch_is_due_when_its_oldest_item_has_waited_max_delay() -> None:
    batcher: Batcher[str] = Batcher(max_size=8, max_delay=2.0)
    batcher.add("a", 10.0)
    assert not batcher.due(10.0)
    assert not batcher.due(11.99)
    assert batcher.due(12.0)
    assert batcher.due(50.0)


def test_age_counts_from_the_oldest_item_not_the_newest() -> None:
    batcher: Batcher[str] = Batcher(max_size=8, max_delay=2.0)
    batcher.add("a", 0.0)
    batcher.add("b", 1.5)
    batcher.add("c", 1.9)
    assert batcher.due(2.0)
    assert batcher.wait_time(1.9) == pytest.approx(0.1)


def test_wait_time_counts_down_and_never_goes_negative() -> None:
    batcher: Batcher[int] = Batcher(max_size=8, max_delay=5.0)
    batcher.add(1, 2.0)
    assert batcher.wait_time(2.0) == pytest.approx(5.0)
    assert batcher.wait_time(3.0) == pytest.approx(4.0)
    assert batcher.wait_time(7.0) == 0.0
    assert batcher.wait_time(100.0) == 0.0


def test_wait_time_is_about_age_even_when_the_batch_is_full() -> None:
    batcher: Batcher[int] = Batcher(max_size=2, max_delay=5.0)
    batcher.add(1, 0.0)
    batcher.add(2, 0.0)
    assert batcher.due(0.0)
    assert batcher.wait_time(1.0) == pytest.approx(4.0)


def test_zero_delay_makes_any_item_due() -> None:
    batcher: Batcher[str] = Batcher(max_size=8, max_delay=0.0)
    batcher.add("a", 3.0)
    assert batcher.due(3.0)
    assert batcher.wait_time(3.0) == 0.0


def test_take_returns_the_oldest_first_and_at_most_max_size() -> None:
    batcher: Batcher[int] = Batcher(max_size=3, max_delay=1.0)
    for i in range(7):
        batcher.add(i, float(i))
    assert batcher.take() == [0, 1, 2]
    assert len(batcher) == 4
    assert batcher.take() == [3, 4, 5]
    assert batcher.take() == [6]
    assert len(batcher) == 0
    assert batcher.take() == []


def test_take_returns_a_partial_batch_whole() -> None:
    batcher: Batcher[str] = Batcher(max_size=5, max_delay=1.0)
    batcher.add("a", 0.0)
    batcher.add("b", 0.5)
    assert batcher.take() == ["a", "b"]
    assert len(batcher) == 0
    assert not batcher.due(100.0)
    assert batcher.wait_time(100.0) is None


def test_take_keeps_duplicates_and_arbitrary_items() -> None:
    batcher: Batcher[tuple[str, int]] = Batcher(max_size=4, max_delay=1.0)
    items = [("x", 1), ("x", 1), ("y", 2)]
    for item in items:
        batcher.add(item, 0.0)
    assert batcher.take() == items


def test_leftovers_keep_the_old_clock() -> None:
    """Leftovers arrived after the old oldest item, so keeping its time makes them due sooner:
    never later than max_delay after their own arrival, which is the latency promise."""
    batcher: Batcher[str] = Batcher(max_size=2, max_delay=10.0)
    batcher.add("a", 0.0)
    batcher.add("b", 1.0)
    batcher.add("c", 8.0)
    assert batcher.due(8.0)  # full
    assert batcher.take() == ["a", "b"]
    assert len(batcher) == 1
    # "c" alone is due when "a"'s clock runs out, not 10 s after its own arrival (18.0).
    assert not batcher.due(9.99)
    assert batcher.due(10.0)
    assert batcher.wait_time(8.0) == pytest.approx(2.0)


def test_leftovers_of_an_overdue_batch_are_due_at_once() -> None:
    batcher: Batcher[int] = Batcher(max_size=2, max_delay=1.0)
    for i in range(3):
        batcher.add(i, 0.0)
    assert batcher.take() == [0, 1]
    assert batcher.due(1.0)
    assert batcher.wait_time(1.0) == 0.0


def test_leftovers_still_full_stay_due() -> None:
    batcher: Batcher[int] = Batcher(max_size=2, max_delay=100.0)
    for i in range(5):
        batcher.add(i, 0.0)
    assert batcher.take() == [0, 1]
    assert batcher.due(0.0)
    assert batcher.take() == [2, 3]
    assert not batcher.due(0.0)
    assert batcher.take() == [4]


def test_items_added_after_leftovers_do_not_restart_the_clock() -> None:
    batcher: Batcher[str] = Batcher(max_size=2, max_delay=10.0)
    batcher.add("a", 0.0)
    batcher.add("b", 0.0)
    batcher.add("c", 5.0)
    batcher.take()
    batcher.add("d", 9.0)  # joins "c", whose batch clock started at 0.0
    assert batcher.due(9.0)  # full again
    assert batcher.wait_time(9.0) == pytest.approx(1.0)


def test_clock_restarts_after_everything_was_taken() -> None:
    batcher: Batcher[str] = Batcher(max_size=4, max_delay=10.0)
    batcher.add("a", 0.0)
    assert batcher.take() == ["a"]
    batcher.add("b", 50.0)
    assert batcher.wait_time(50.0) == pytest.approx(10.0)
    assert not batcher.due(59.99)
    assert batcher.due(60.0)
