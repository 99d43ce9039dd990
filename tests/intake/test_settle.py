"""SettleTracker on real files with an injected clock: no sleeps, no threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inboxsort.intake.settle import SettleTracker

SETTLE = 1.0


def make_file(folder: Path, name: str = "cat.jpg", data: bytes = b"jpeg") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def append(path: Path, data: bytes = b"more") -> None:
    with path.open("ab") as handle:
        handle.write(data)


@pytest.fixture
def tracker() -> SettleTracker:
    return SettleTracker(SETTLE)


# --------------------------------------------------------------------------------------------
# Baseline and settling
# --------------------------------------------------------------------------------------------


def test_first_look_sets_a_baseline_and_is_not_ready(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    # Long after the event: the note time does not count, only what a look has seen.
    assert tracker.poll(50.0) == []
    assert path in tracker
    assert len(tracker) == 1
    assert tracker.poll(50.0 + SETTLE - 0.01) == []
    assert tracker.poll(50.0 + SETTLE) == [path]


def test_stable_file_is_ready_exactly_once(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    assert tracker.poll(SETTLE) == [path]
    # A ready path is handed over: no longer tracked, never returned again.
    assert path not in tracker
    assert len(tracker) == 0
    assert tracker.poll(SETTLE + 10) == []
    assert tracker.next_check(SETTLE + 10) is None


def test_repeated_notes_of_one_path_track_it_once(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    for t in (0.0, 0.1, 0.2):
        tracker.note(path, t)
    assert len(tracker) == 1
    assert tracker.poll(0.3) == []
    assert tracker.poll(0.3 + SETTLE) == [path]


def test_growing_file_is_rechecked_and_never_dropped(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    t = 0.0
    for _ in range(10):
        append(path)
        t += 2 * SETTLE  # well past the settle time, but the file changed since the last look
        assert tracker.poll(t) == []
        assert path in tracker
    # The writer stopped: ready once the size has held for the settle time.
    assert tracker.poll(t + SETTLE / 2) == []
    assert tracker.poll(t + SETTLE) == [path]


def test_new_mtime_with_the_same_size_counts_as_a_change(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = make_file(tmp_path, data=b"aaaa")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    path.write_bytes(b"bbbb")  # same size, rewritten
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert tracker.poll(SETTLE) == []
    assert tracker.poll(2 * SETTLE - 0.01) == []
    assert tracker.poll(2 * SETTLE) == [path]


def test_files_settle_independently(tmp_path: Path, tracker: SettleTracker) -> None:
    still = make_file(tmp_path, "still.jpg")
    growing = make_file(tmp_path, "growing.jpg")
    tracker.note(still, 0.0)
    tracker.note(growing, 0.0)
    assert tracker.poll(0.0) == []
    append(growing)
    assert tracker.poll(SETTLE) == [still]
    assert growing in tracker
    assert still not in tracker
    assert tracker.poll(2 * SETTLE) == [growing]


def test_zero_settle_time_is_ready_at_the_first_look(tmp_path: Path) -> None:
    tracker = SettleTracker(0.0)
    path = make_file(tmp_path)
    tracker.note(path, 5.0)
    assert tracker.poll(5.0) == [path]


def test_ready_path_noted_again_starts_from_scratch(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    tracker.poll(0.0)
    assert tracker.poll(SETTLE) == [path]
    tracker.note(path, 10.0)
    assert tracker.poll(10.0) == []  # a fresh baseline, not the old one
    assert tracker.poll(10.0 + SETTLE) == [path]


# --------------------------------------------------------------------------------------------
# Close events
# --------------------------------------------------------------------------------------------


def test_closed_file_is_ready_at_the_next_look(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    tracker.note(path, 0.1, closed=True)
    assert tracker.poll(0.1) == [path]
    assert path not in tracker


def test_close_alone_is_enough(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 3.0, closed=True)
    assert tracker.poll(3.0) == [path]


def test_close_after_a_baseline_is_not_taken_for_a_change(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    append(path)  # the rest of the data, then the writer closes
    tracker.note(path, 0.2, closed=True)
    assert tracker.poll(0.2) == [path]


def test_writes_after_the_close_reset_it(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True)
    append(path)  # the writer came back
    tracker.note(path, 0.1)  # its modified event
    assert tracker.poll(0.2) == []
    assert path in tracker
    # Now it has to settle like any other file.
    assert tracker.poll(0.2 + SETTLE - 0.01) == []
    assert tracker.poll(0.2 + SETTLE) == [path]


def test_a_new_close_after_the_reset_counts_again(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True)
    append(path)
    tracker.note(path, 0.1)
    assert tracker.poll(0.1) == []
    tracker.note(path, 0.2, closed=True)
    assert tracker.poll(0.2) == [path]


# --------------------------------------------------------------------------------------------
# Vanished and unreadable files
# --------------------------------------------------------------------------------------------


def test_vanished_file_is_forgotten_quietly(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    path.unlink()
    assert tracker.poll(0.5) == []
    assert path not in tracker
    assert len(tracker) == 0
    assert tracker.next_check(0.5) is None


def test_file_gone_before_the_first_look_is_forgotten(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = tmp_path / "never-there.jpg"
    tracker.note(path, 0.0, closed=True)
    assert tracker.poll(0.0) == []
    assert len(tracker) == 0


def test_other_stat_errors_hand_the_path_over(tmp_path: Path) -> None:
    bad = make_file(tmp_path, "bad.jpg")
    good = make_file(tmp_path, "good.jpg")

    def stat(path: Path) -> os.stat_result:
        if path == bad:
            raise PermissionError(13, "Permission denied", str(path))
        return os.lstat(path)

    tracker = SettleTracker(SETTLE, stat=stat)
    tracker.note(bad, 0.0)
    tracker.note(good, 0.0)
    # The claimer records why it cannot be read; the tracker does not keep it forever.
    assert tracker.poll(0.0) == [bad]
    assert bad not in tracker
    assert good in tracker


def test_symlink_is_statted_not_followed(tmp_path: Path, tracker: SettleTracker) -> None:
    target = make_file(tmp_path, "target.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    tracker.note(link, 0.0)
    assert tracker.poll(0.0) == []
    append(target)  # changes the target, not the link
    assert tracker.poll(SETTLE) == [link]


def test_dangling_symlink_is_not_taken_for_a_vanished_file(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    tracker.note(link, 0.0)
    assert tracker.poll(0.0) == []
    assert tracker.poll(SETTLE) == [link]


# --------------------------------------------------------------------------------------------
# Delays and forgetting
# --------------------------------------------------------------------------------------------


def test_delay_holds_a_closed_file_back(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True, delay=5.0)
    assert tracker.poll(4.99) == []
    assert path in tracker
    assert tracker.poll(5.0) == [path]


def test_delay_postpones_even_the_first_look(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, delay=5.0)
    assert tracker.poll(4.0) == []
    # Had poll(4.0) looked, the file would be ready at 5.0; it is only the baseline.
    assert tracker.poll(5.0) == []
    assert tracker.poll(5.0 + SETTLE) == [path]


def test_a_later_event_cannot_shorten_a_delay(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, delay=5.0)
    tracker.note(path, 1.0, closed=True)
    assert tracker.poll(1.0) == []
    assert tracker.poll(4.99) == []
    assert tracker.poll(5.0) == [path]


def test_a_later_delay_extends_it(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True, delay=1.0)
    tracker.note(path, 0.5, closed=True, delay=3.0)
    assert tracker.poll(3.49) == []
    assert tracker.poll(3.5) == [path]


def test_forget_stops_tracking(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True)
    tracker.forget(path)
    assert path not in tracker
    assert len(tracker) == 0
    assert tracker.poll(10.0) == []
    tracker.forget(path)  # forgetting an unknown path is fine
    tracker.forget(tmp_path / "unknown.jpg")


def test_contains_only_paths(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert path in tracker
    assert str(path) not in tracker
    assert tmp_path / "other.jpg" not in tracker


# --------------------------------------------------------------------------------------------
# next_check
# --------------------------------------------------------------------------------------------


def test_next_check_is_none_when_nothing_is_tracked(tracker: SettleTracker) -> None:
    assert tracker.next_check(0.0) is None


def test_next_check_rechecks_a_waiting_file_every_quarter_settle(
    tmp_path: Path, tracker: SettleTracker
) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.next_check(0.0) == pytest.approx(SETTLE / 4)
    tracker.poll(0.0)
    assert tracker.next_check(0.0) == pytest.approx(SETTLE / 4)
    # Close to the settle deadline: exactly the time left.
    assert tracker.next_check(0.9) == pytest.approx(0.1)
    # Past it (poll not run yet): now, never negative.
    assert tracker.next_check(3.0) == 0.0


def test_next_check_cap_follows_the_settle_time(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    slow = SettleTracker(20.0)
    slow.note(path, 0.0)
    assert slow.next_check(0.0) == pytest.approx(5.0)
    fast = SettleTracker(0.1)
    fast.note(path, 0.0)
    assert fast.next_check(0.0) == pytest.approx(0.05)  # floor of 50 ms
    instant = SettleTracker(0.0)
    instant.note(path, 0.0)
    assert instant.next_check(0.0) == 0.0


def test_next_check_for_a_closed_file_is_now(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True)
    assert tracker.next_check(0.0) == 0.0


def test_next_check_respects_a_delay(tmp_path: Path, tracker: SettleTracker) -> None:
    path = make_file(tmp_path)
    tracker.note(path, 0.0, closed=True, delay=0.1)
    assert tracker.next_check(0.0) == pytest.approx(0.1)
    assert tracker.next_check(0.1) == 0.0
    tracker.note(path, 0.1, closed=True, delay=30.0)
    # A long delay is still re-checked at the usual pace (never later than settle/4).
    assert tracker.next_check(0.1) == pytest.approx(SETTLE / 4)
    assert tracker.poll(0.1 + SETTLE / 4) == []


def test_next_check_is_the_soonest_of_all_files(tmp_path: Path, tracker: SettleTracker) -> None:
    waiting = make_file(tmp_path, "waiting.jpg")
    closed = make_file(tmp_path, "closed.jpg")
    tracker.note(waiting, 0.0)
    tracker.poll(0.0)
    assert tracker.next_check(0.5) == pytest.approx(SETTLE / 4)
    tracker.note(closed, 0.5, closed=True)
    assert tracker.next_check(0.5) == 0.0
    assert tracker.poll(0.5) == [closed]
    assert tracker.next_check(0.8) == pytest.approx(0.2)


# --------------------------------------------------------------------------------------------
# A writer that inotify saw and that has not closed the file yet
# --------------------------------------------------------------------------------------------


def test_a_paused_writer_is_waited_for_until_its_close(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=30.0)
    path = make_file(tmp_path)
    tracker.note(path, 0.0, writing=True)
    assert tracker.poll(0.0) == []
    # Quiet for ten times the settle time, but the writer still has it open: not yet.
    assert tracker.poll(10 * SETTLE) == []
    assert tracker.next_check(10 * SETTLE) == pytest.approx(SETTLE / 4)
    append(path)
    tracker.note(path, 10.5, closed=True)
    assert tracker.poll(10.5) == [path]


def test_a_writer_that_never_closes_is_read_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=30.0)
    path = make_file(tmp_path)
    tracker.note(path, 0.0, writing=True)
    assert tracker.poll(0.0) == []
    assert tracker.poll(29.9) == []
    assert tracker.poll(30.0) == [path]
    assert "still not closed" in caplog.text


def test_written_again_after_its_close_the_file_waits_for_the_next_close(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=30.0)
    path = make_file(tmp_path)
    tracker.note(path, 0.0, writing=True)
    tracker.note(path, 0.1, closed=True)
    tracker.note(path, 0.2, writing=True)  # reopened before anyone looked
    assert tracker.poll(0.3) == []
    assert tracker.poll(0.3 + 2 * SETTLE) == []
    tracker.note(path, 5.0, closed=True)
    assert tracker.poll(5.0) == [path]


def test_links_and_pipes_noted_as_written_need_only_settle(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=30.0)
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "elsewhere.jpg")
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    for path in (link, pipe):
        tracker.note(path, 0.0, writing=True)  # inotify: created, and never closed
    assert tracker.poll(0.0) == []
    assert sorted(tracker.poll(SETTLE)) == sorted([link, pipe])


def test_without_a_write_event_quiet_time_is_enough(tmp_path: Path) -> None:
    # Scans, rescans and the polling observer report no writes and no closes.
    tracker = SettleTracker(SETTLE, writer_timeout=30.0)
    path = make_file(tmp_path)
    tracker.note(path, 0.0)
    assert tracker.poll(0.0) == []
    assert tracker.poll(SETTLE) == [path]
