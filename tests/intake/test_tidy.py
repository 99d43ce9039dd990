"""Inbox subfolders the daemon emptied are removed once still; nothing else ever is."""

from __future__ import annotations

import time
from pathlib import Path

from inboxsort.intake.tidy import EmptiedFolders

QUIET = 5.0


def emptied(inbox: Path, *, age: float = QUIET) -> tuple[EmptiedFolders, list[float]]:
    """An EmptiedFolders whose clock reads `age` seconds after now (changeable via the list)."""
    offset = [age]
    return EmptiedFolders(inbox, quiet_seconds=QUIET, clock=lambda: time.time() + offset[0]), offset


def test_an_emptied_folder_goes_once_quiet_then_its_emptied_parent(tmp_path: Path):
    inbox = tmp_path / "inbox"
    day = inbox / "trip" / "day1"
    day.mkdir(parents=True)
    tidy, offset = emptied(inbox, age=0.0)
    tidy.note(day)

    assert tidy.sweep() == []  # just emptied: a copy may still be writing into it
    assert day.is_dir() and tidy.pending() == {day}

    offset[0] = QUIET + 1
    assert tidy.sweep() == [day]
    assert not day.exists()
    assert tidy.sweep() == [inbox / "trip"]  # its parent, emptied by that removal
    assert list(inbox.iterdir()) == []  # the inbox itself stays, always
    assert inbox.is_dir() and tidy.pending() == set()


def test_a_folder_that_holds_anything_stays(tmp_path: Path):
    inbox = tmp_path / "inbox"
    kept = inbox / "kept"
    kept.mkdir(parents=True)
    (kept / ".DS_Store").write_bytes(b"ignored by the watcher, but something")
    busy = inbox / "busy"
    (busy / "sub").mkdir(parents=True)
    tidy, _ = emptied(inbox, age=QUIET + 1)
    tidy.note(kept)
    tidy.note(busy)

    assert tidy.sweep() == []
    assert (kept / ".DS_Store").is_file() and (busy / "sub").is_dir()
    assert tidy.pending() == set()  # filing the rest out of them notes them again


def test_only_noted_folders_below_the_inbox_are_candidates(tmp_path: Path):
    inbox = tmp_path / "inbox"
    (inbox / "made by the user").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    tidy, _ = emptied(inbox, age=QUIET + 1)
    tidy.note(inbox)
    tidy.note(outside)

    assert tidy.pending() == set()
    assert tidy.sweep() == []
    assert (inbox / "made by the user").is_dir() and outside.is_dir()


def test_a_folder_swapped_for_a_symbolic_link_is_not_followed(tmp_path: Path):
    inbox = tmp_path / "inbox"
    (inbox / "trip").mkdir(parents=True)
    target = tmp_path / "target"
    (target / "day1").mkdir(parents=True)
    (inbox / "trip").rmdir()
    (inbox / "trip").symlink_to(target)
    tidy, _ = emptied(inbox, age=QUIET + 1)
    tidy.note(inbox / "trip" / "day1")

    assert tidy.sweep() == []
    assert (target / "day1").is_dir()
