"""Ignore patterns, the scan, and InboxHandler under real inotify and polling observers."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from inboxsort.config import DEFAULT_IGNORE, WatchConfig
from inboxsort.files import Ignore, scan
from inboxsort.intake.records import Arrival
from inboxsort.intake.watch import InboxHandler, make_observer

EVENT_TIMEOUT = 5.0
POLL_INTERVAL = 0.2

Arrivals = queue.SimpleQueue[Arrival]


def touch(path: Path, data: bytes = b"jpeg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# Ignore
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        ".hidden.jpg",
        ".DS_Store",
        "._cat.jpg",
        "cat.jpg.part",
        "cat.jpg.crdownload",
        "cat.tmp",
        "cat.jpg~",
        "Thumbs.db",
        "desktop.ini",
        "@eaDir",
        "@eaDir/cat.jpg",
        "trip/@eaDir/cat.jpg/SYNOFILE_THUMB_M.jpg",
        "#recycle/cat.jpg",
        ".git/objects/ab",
        "trip/.cache/cat.jpg",
        "trip/day1/cat.jpg.part",
    ],
)
def test_default_patterns_ignore(tmp_path: Path, relative: str) -> None:
    ignore = Ignore(tmp_path, DEFAULT_IGNORE)
    assert ignore(tmp_path / relative)


@pytest.mark.parametrize(
    "relative",
    [
        "cat.jpg",
        "trip/day1/cat.jpg",
        "cat.part.jpg",
        "tmp/cat.jpg",
        "my.tmp.photos/cat.jpg",
        "cat~1.jpg",
        "Thumbs.db.jpg",
        "eaDir/cat.jpg",
        "cat.JPG",
    ],
)
def test_default_patterns_keep(tmp_path: Path, relative: str) -> None:
    ignore = Ignore(tmp_path, DEFAULT_IGNORE)
    assert not ignore(tmp_path / relative)


def test_only_components_below_the_root_count(tmp_path: Path) -> None:
    root = tmp_path / ".config" / "inbox.tmp"  # ignorable names above the root do not matter
    ignore = Ignore(root, DEFAULT_IGNORE)
    assert not ignore(root / "cat.jpg")
    assert not ignore(root)
    assert ignore(root / ".cat.jpg")


def test_paths_outside_the_root_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    ignore = Ignore(root, DEFAULT_IGNORE)
    assert ignore(tmp_path / "cat.jpg")
    assert ignore(tmp_path / "inbox2" / "cat.jpg")  # a name prefix is not containment
    assert ignore(Path("/elsewhere/cat.jpg"))
    assert ignore(Path("inbox/cat.jpg"))  # relative paths are not below an absolute root


def test_patterns_are_case_sensitive_and_custom(tmp_path: Path) -> None:
    ignore = Ignore(tmp_path, ["*.raw", "drafts"])
    assert ignore.patterns == ("*.raw", "drafts")
    assert ignore(tmp_path / "a.raw")
    assert ignore(tmp_path / "drafts" / "a.jpg")
    assert not ignore(tmp_path / "a.RAW")
    assert not ignore(tmp_path / ".hidden.jpg")  # only the given patterns apply


def test_no_patterns_ignore_nothing_below_the_root(tmp_path: Path) -> None:
    ignore = Ignore(tmp_path, [])
    assert not ignore(tmp_path / ".hidden" / "x.part")
    assert ignore(tmp_path.parent / "x.jpg")


# --------------------------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    for relative in [
        "b.jpg",
        "a.jpg",
        "c/z.jpg",
        "c/a.jpg",
        "c/deeper/x.jpg",
        "d.png",
        ".hidden.jpg",
        "dl.jpg.part",
        "@eaDir/thumb.jpg",
        ".trash/old.jpg",
    ]:
        touch(root / relative)
    (root / "empty").mkdir()
    return root


def names(root: Path, paths: Iterator[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_scan_is_recursive_sorted_and_skips_ignored(tree: Path) -> None:
    found = names(tree, scan(tree, recursive=True, ignore=Ignore(tree, DEFAULT_IGNORE)))
    assert found == ["a.jpg", "b.jpg", "c/a.jpg", "c/deeper/x.jpg", "c/z.jpg", "d.png"]


def test_scan_without_recursion_stays_at_the_top(tree: Path) -> None:
    found = names(tree, scan(tree, recursive=False, ignore=Ignore(tree, DEFAULT_IGNORE)))
    assert found == ["a.jpg", "b.jpg", "d.png"]


def test_scan_with_no_patterns_sees_everything(tree: Path) -> None:
    found = names(tree, scan(tree, recursive=True, ignore=Ignore(tree, [])))
    assert found == [
        ".hidden.jpg",
        ".trash/old.jpg",
        "@eaDir/thumb.jpg",
        "a.jpg",
        "b.jpg",
        "c/a.jpg",
        "c/deeper/x.jpg",
        "c/z.jpg",
        "d.png",
        "dl.jpg.part",
    ]


def test_scan_of_a_subfolder_uses_the_root_for_ignoring(tree: Path) -> None:
    ignore = Ignore(tree, DEFAULT_IGNORE)
    assert names(tree, scan(tree / "c", recursive=True, ignore=ignore)) == [
        "c/a.jpg",
        "c/deeper/x.jpg",
        "c/z.jpg",
    ]
    assert list(scan(tree / "@eaDir", recursive=True, ignore=ignore)) == []


def test_scan_yields_symlinks_but_does_not_follow_folder_links(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    outside = tmp_path / "outside"
    touch(outside / "secret.jpg")
    touch(root / "real.jpg")
    (root / "file-link.jpg").symlink_to(root / "real.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "folder-link").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    found = list(scan(root, recursive=True, ignore=Ignore(root, DEFAULT_IGNORE)))
    assert names(root, iter(found)) == [
        "dangling.jpg",
        "file-link.jpg",
        "folder-link",
        "loop",
        "real.jpg",
    ]
    assert all(p.parent == root for p in found)  # nothing from inside the linked folders


def test_scan_of_a_missing_root_yields_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert list(scan(missing, recursive=True, ignore=Ignore(missing, DEFAULT_IGNORE))) == []


def test_scan_of_a_file_yields_nothing(tmp_path: Path) -> None:
    file = touch(tmp_path / "cat.jpg")
    assert list(scan(file, recursive=True, ignore=Ignore(tmp_path, DEFAULT_IGNORE))) == []


def test_scan_of_an_empty_root_yields_nothing(tmp_path: Path) -> None:
    assert list(scan(tmp_path, recursive=True, ignore=Ignore(tmp_path, DEFAULT_IGNORE))) == []


# --------------------------------------------------------------------------------------------
# InboxHandler, event by event
# --------------------------------------------------------------------------------------------


def dispatched(event: FileSystemEvent) -> list[Arrival]:
    arrivals: Arrivals = queue.SimpleQueue()
    InboxHandler(arrivals).dispatch(event)
    out = []
    while not arrivals.empty():
        out.append(arrivals.get_nowait())
    return out


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # A creation alone is no sign of a writer (hard links, files of a folder moved in); a
        # write is, and inotify reports its close when the writer is done.
        (FileCreatedEvent("/in/a.jpg"), [Arrival(Path("/in/a.jpg"))]),
        (FileModifiedEvent("/in/a.jpg"), [Arrival(Path("/in/a.jpg"), writing=True)]),
        (FileClosedEvent("/in/a.jpg"), [Arrival(Path("/in/a.jpg"), closed=True)]),
        # A rename is atomic: what it brings in is complete.
        (FileMovedEvent("/in/a.jpg", "/in/b.jpg"), [Arrival(Path("/in/b.jpg"), closed=True)]),
        (DirCreatedEvent("/in/trip"), [Arrival(Path("/in/trip"), is_dir=True)]),
        (DirMovedEvent("/in/trip", "/in/trip2"), [Arrival(Path("/in/trip2"), is_dir=True)]),
        (FileCreatedEvent(b"/in/caf\xc3\xa9.jpg"), [Arrival(Path("/in/café.jpg"))]),
        (FileDeletedEvent("/in/a.jpg"), []),
        (DirDeletedEvent("/in/trip"), []),
        (DirModifiedEvent("/in"), []),
        (FileOpenedEvent("/in/a.jpg"), []),
        (FileClosedNoWriteEvent("/in/a.jpg"), []),
        (FileAttribEvent("/in/a.jpg"), []),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, FileSystemEvent) else "",
)
def test_handler_maps_events_to_arrivals(event: FileSystemEvent, expected: list[Arrival]) -> None:
    assert dispatched(event) == expected


def test_with_polling_a_write_is_a_plain_arrival() -> None:
    # The polling observer reports no closes: a write cannot wait for one.
    arrivals: Arrivals = queue.SimpleQueue()
    InboxHandler(arrivals, writes_end_with_close=False).dispatch(FileModifiedEvent("/in/a.jpg"))
    assert arrivals.get_nowait() == Arrival(Path("/in/a.jpg"))


def test_make_observer_picks_the_kind() -> None:
    polling = make_observer(WatchConfig(polling=True, poll_interval_seconds=POLL_INTERVAL))
    assert isinstance(polling, PollingObserver)
    assert polling.timeout == POLL_INTERVAL
    native = make_observer(WatchConfig())
    try:
        assert isinstance(native, InotifyObserver)
        assert not isinstance(native, PollingObserver)
    finally:
        native.stop()  # watchdog's inotify observer runs a reader thread from construction


# --------------------------------------------------------------------------------------------
# InboxHandler under real observers
# --------------------------------------------------------------------------------------------

CONFIGS = {
    "native": WatchConfig(),
    "polling": WatchConfig(polling=True, poll_interval_seconds=POLL_INTERVAL),
}

Start = Callable[[Path], Arrivals]


@pytest.fixture(params=sorted(CONFIGS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def observing(config: WatchConfig) -> Iterator[Start]:
    """start(root) -> arrivals: started observers, always stopped and joined at the end."""
    observers: list[Any] = []

    def start(root: Path) -> Arrivals:
        arrivals: Arrivals = queue.SimpleQueue()
        observer = make_observer(config)
        # As the daemon wires it: only inotify reports closes, so only there a write waits for one.
        handler = InboxHandler(arrivals, writes_end_with_close=not config.polling)
        observer.schedule(handler, str(root), recursive=True)
        observers.append(observer)
        observer.start()
        return arrivals

    try:
        yield start
    finally:
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=EVENT_TIMEOUT)
            assert not observer.is_alive()


@pytest.fixture
def observe(kind: str) -> Iterator[Start]:
    """An observer of each kind in turn (inotify, then polling)."""
    yield from observing(CONFIGS[kind])


@pytest.fixture
def observe_native() -> Iterator[Start]:
    """An inotify observer: close events and exact deletions exist only there."""
    yield from observing(CONFIGS["native"])


def wait_for(arrivals: Arrivals, wanted: Arrival, timeout: float = EVENT_TIMEOUT) -> list[Arrival]:
    """Arrivals up to and including `wanted`; fails if it does not come within timeout."""
    deadline = time.monotonic() + timeout
    seen: list[Arrival] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {wanted} within {timeout} s; saw {seen}")
        try:
            arrival = arrivals.get(timeout=remaining)
        except queue.Empty:
            continue
        seen.append(arrival)
        if arrival == wanted:
            return seen


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


def test_new_file_arrives(observe: Start, inbox: Path) -> None:
    arrivals = observe(inbox)
    path = touch(inbox / "cat.jpg")
    seen = wait_for(arrivals, Arrival(path))
    assert all(a.path == path and not a.is_dir for a in seen)


def test_file_in_a_new_subfolder_arrives(observe: Start, inbox: Path) -> None:
    arrivals = observe(inbox)
    folder = inbox / "trip"
    folder.mkdir()
    wait_for(arrivals, Arrival(folder, is_dir=True))
    path = touch(folder / "cat.jpg")
    wait_for(arrivals, Arrival(path))


def test_closed_write_arrives_as_closed(observe_native: Start, inbox: Path) -> None:
    arrivals = observe_native(inbox)
    path = inbox / "cat.jpg"
    with path.open("wb") as handle:
        handle.write(b"first")
        handle.flush()
        handle.write(b"second")
    seen = wait_for(arrivals, Arrival(path, closed=True))
    # The creation came first, as a plain arrival; the writes said a close was to come.
    assert seen[0] == Arrival(path)
    assert Arrival(path, writing=True) in seen
    assert all(a.path == path for a in seen)


def test_file_moved_in_from_outside_arrives_under_its_new_name(
    observe: Start, kind: str, inbox: Path, tmp_path: Path
) -> None:
    outside = touch(tmp_path / "outside" / "cat.jpg")
    arrivals = observe(inbox)
    dest = inbox / "moved.jpg"
    outside.rename(dest)
    # inotify (full events) reports the rename, complete at once; polling only sees a new file.
    seen = wait_for(arrivals, Arrival(dest, closed=kind == "native"))
    assert all(a.path == dest for a in seen)


def test_moving_files_and_folders_out_brings_no_arrival(
    observe_native: Start, inbox: Path, tmp_path: Path
) -> None:
    gone = touch(inbox / "gone.jpg")
    trip = inbox / "trip"
    touch(trip / "cat.jpg")
    arrivals = observe_native(inbox)
    (tmp_path / "elsewhere").mkdir()
    gone.rename(tmp_path / "elsewhere" / "gone.jpg")
    trip.rename(tmp_path / "elsewhere" / "trip")
    marker = touch(inbox / "marker.jpg")
    seen = wait_for(arrivals, Arrival(marker))
    assert seen == [Arrival(marker)], seen


def test_file_renamed_inside_arrives_under_its_new_name(observe: Start, inbox: Path) -> None:
    src = touch(inbox / "cat.jpg")
    arrivals = observe(inbox)
    dest = inbox / "renamed.jpg"
    src.rename(dest)
    seen = wait_for(arrivals, Arrival(dest, closed=True))
    assert src not in {a.path for a in seen}


def test_partial_download_renamed_to_its_final_name_arrives_closed(
    observe: Start, inbox: Path
) -> None:
    part = touch(inbox / "cat.jpg.part")
    arrivals = observe(inbox)
    final = inbox / "cat.jpg"
    part.rename(final)
    wait_for(arrivals, Arrival(final, closed=True))


def test_new_folder_arrives_as_a_folder(observe: Start, inbox: Path) -> None:
    arrivals = observe(inbox)
    folder = inbox / "trip"
    folder.mkdir()
    seen = wait_for(arrivals, Arrival(folder, is_dir=True))
    assert Arrival(folder) not in seen


def test_folder_moved_in_arrives_as_a_folder(observe: Start, inbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "trip"
    touch(outside / "cat.jpg")
    touch(outside / "dog.jpg")
    arrivals = observe(inbox)
    dest = inbox / "trip"
    outside.rename(dest)
    wait_for(arrivals, Arrival(dest, is_dir=True))
    # Its files are found by scanning the arrival, the job of the intake.
    assert names(dest, scan(dest, recursive=True, ignore=Ignore(inbox, DEFAULT_IGNORE))) == [
        "cat.jpg",
        "dog.jpg",
    ]


def test_folder_renamed_inside_arrives_under_its_new_name(observe: Start, inbox: Path) -> None:
    src = inbox / "trip"
    touch(src / "cat.jpg")
    arrivals = observe(inbox)
    dest = inbox / "trip-renamed"
    src.rename(dest)
    wait_for(arrivals, Arrival(dest, is_dir=True))


def test_deleting_a_file_brings_no_arrival(observe_native: Start, inbox: Path) -> None:
    # Native only: a polling snapshot takes a new file that reuses the inode for a move.
    doomed = touch(inbox / "doomed.jpg")
    arrivals = observe_native(inbox)
    doomed.unlink()
    # A later, unrelated file is the marker that the deletion has been seen and dropped.
    marker = touch(inbox / "marker.jpg")
    seen = wait_for(arrivals, Arrival(marker))
    assert doomed not in {a.path for a in seen}


def drain(arrivals: Arrivals, settle: float = 0.5) -> list[Arrival]:
    """Everything that arrives until nothing more has come for `settle` seconds."""
    seen = []
    while True:
        try:
            seen.append(arrivals.get(timeout=settle))
        except queue.Empty:
            return seen


def test_a_folder_moved_in_and_a_hard_link_are_not_writes_waiting_for_a_close(
    observe_native: Start, inbox: Path, tmp_path: Path
) -> None:
    # Neither raises a close event; taken as writes they would wait writer_timeout_seconds.
    outside = tmp_path / "outside"
    touch(outside / "trip" / "cat.jpg")
    original = touch(outside / "dog.jpg")
    arrivals = observe_native(inbox)
    (outside / "trip").rename(inbox / "trip")
    (inbox / "dog.jpg").hardlink_to(original)
    seen = drain(arrivals)
    assert Arrival(inbox / "trip", is_dir=True) in seen
    assert Arrival(inbox / "dog.jpg") in seen
    assert [a for a in seen if a.writing] == []


def test_an_event_racing_the_observers_stop_logs_no_error(tmp_path, caplog) -> None:
    """watchdog logs an ERROR when an event arrives while its inotify emitter stops."""
    native = make_observer(WatchConfig())  # installs the filter, as the daemon's observer does
    try:
        emitter_log = logging.getLogger("watchdog.observers.inotify")
        caplog.set_level(logging.INFO, logger="watchdog.observers.inotify")
        emitter_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        emitter_log.error("another error")
        assert [r.getMessage() for r in caplog.records] == ["another error"]
    finally:
        native.stop()  # watchdog's inotify observer runs a reader thread from construction
