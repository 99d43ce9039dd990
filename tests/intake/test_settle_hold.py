"""SettleTracker.hold: a file that did not decode waits, unchanged, unless it is written again."""

from __future__ import annotations

from pathlib import Path

from inboxsort.intake.settle import SettleTracker

SETTLE = 1.0


def held_file(tmp_path: Path, tracker: SettleTracker, *, until: float) -> Path:
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 the start of a jpeg")
    st = path.stat()
    tracker.hold(path, 0.0, until=until, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return path


def test_an_unchanged_held_file_is_ready_only_when_the_hold_ends(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=60.0)
    path = held_file(tmp_path, tracker, until=60.0)
    assert path in tracker and len(tracker) == 1
    for now in (0.0, SETTLE, 30.0, 59.9):
        assert tracker.poll(now) == []
    assert tracker.poll(60.0) == [path]
    assert path not in tracker


def test_a_held_file_that_grows_is_looked_at_again_once_settled(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=60.0)
    path = held_file(tmp_path, tracker, until=60.0)
    assert tracker.poll(1.0) == []
    with path.open("ab") as handle:  # no event: polling mode, or an event lost
        handle.write(b" and more")
    assert tracker.poll(2.0) == []  # changed: settling starts again
    assert tracker.poll(2.0 + SETTLE) == [path]


def test_a_close_event_ends_the_hold_at_once(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=60.0)
    path = held_file(tmp_path, tracker, until=60.0)
    with path.open("ab") as handle:
        handle.write(b" and more")
    tracker.note(path, 3.0, closed=True)
    assert tracker.poll(3.0) == [path]


def test_a_path_noted_since_its_claim_is_not_held(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=60.0)
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"x")
    tracker.note(path, 0.0, closed=True)  # written and closed again while it was decoded
    st = path.stat()
    tracker.hold(path, 0.0, until=60.0, size=st.st_size, mtime_ns=st.st_mtime_ns)
    assert tracker.poll(0.0) == [path]


def test_next_check_keeps_looking_at_a_held_file(tmp_path: Path) -> None:
    tracker = SettleTracker(SETTLE, writer_timeout=60.0)
    held_file(tmp_path, tracker, until=60.0)
    wait = tracker.next_check(0.0)
    assert wait is not None and 0 < wait <= SETTLE / 4  # a change is seen promptly
