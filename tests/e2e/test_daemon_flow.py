"""The daemon end to end in this process: floods, slow writers, duplicates, names, watchers, swaps.

Each test builds a site under tmp_path with the tiny model active, runs the real Daemon (real
watchdog observer, real SQLite file, real Keras model) and waits, with a deadline, for what it
expects on disk and in the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from watchdog.observers.polling import PollingObserver

from inboxsort.db import STATUS_DUPLICATE, STATUS_FILED
from inboxsort.intake.filing import REVIEW_FOLDER
from inboxsort.model.artifact import BUILTIN
from tests.helpers.daemonkit import running_daemon, sha256_of, wait_for
from tests.helpers.imagegen import TEXT_BYTES, noise, save

LABELS = ("cats", "dogs")
FLOOD_PER_CLASS = 245
FLOOD_GENERATED = 10
BATCH_LINE = re.compile(r"^batch of (\d+) in ")


def drop(source: Path, dest: Path) -> Path:
    """Copy a file into the inbox the way a user's file manager does (write, then close)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, dest))


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_sizes(caplog: pytest.LogCaptureFixture) -> list[int]:
    sizes = []
    for record in caplog.records:
        if record.name == "inboxsort.intake.inference":
            match = BATCH_LINE.match(record.getMessage())
            if match:
                sizes.append(int(match.group(1)))
    return sizes


def assert_filed(row, site, sha256: str) -> Path:
    """A row of a classified image in library/<label>/, whose file holds the given content."""
    path = Path(row.path)
    assert row.status == STATUS_FILED, row
    assert row.error is None and row.dest_path is None
    assert row.label in LABELS
    assert path.parent == site.library / row.label
    assert path.is_file()
    assert row.sha256 == sha256 == sha256_of(path)
    assert row.size == path.stat().st_size
    assert row.score is not None and 0.5 <= row.score <= 1.0
    assert row.received_at <= row.classified_at <= row.filed_at
    return path


# ---------------------------------------------------------------------------------------------
# A flood
# ---------------------------------------------------------------------------------------------


def test_a_flood_of_500_images_is_filed_once_each_in_real_batches(
    new_site, validation_jpegs, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="inboxsort")
    # queue_size below the flood: intake must wait for free slots instead of reading ahead.
    site = new_site(batch={"max_size": 32, "queue_size": 64})
    generated = [
        save(noise((96, 64), seed=i), tmp_path / "generated" / f"generated_{i:02d}{suffix}")
        for i, suffix in enumerate([".png", ".jpg"] * (FLOOD_GENERATED // 2))
    ]
    # Half of the photos are written into the inbox, half renamed in from a folder on the same
    # disk (as uploaders and browsers deliver), with the dataset's mtimes, which filing keeps.
    copied = [*validation_jpegs["cats"][:FLOOD_PER_CLASS], *generated]
    staging = tmp_path / "staging"
    staging.mkdir()
    dogs = validation_jpegs["dogs"][:FLOOD_PER_CLASS]
    renamed = [Path(shutil.copy2(p, staging / p.name)) for p in dogs]
    mtimes = {p.name: p.stat().st_mtime_ns for p in dogs}
    expected = {p.name: sha256_of(p) for p in [*copied, *renamed]}
    assert len(expected) == 500

    with running_daemon(site) as daemon:
        for one, other in zip(copied, renamed, strict=False):
            drop(one, site.inbox / one.name)
            other.rename(site.inbox / other.name)
        for one in copied[len(renamed) :]:
            drop(one, site.inbox / one.name)
        wait_for(lambda: site.settled(500), "all 500 images filed", describe=site.describe)
        assert (daemon.inference.processed, daemon.inference.failed) == (500, 0)

    rows = site.rows()
    assert sorted(r.original_name for r in rows) == sorted(expected)
    paths = [assert_filed(row, site, expected[row.original_name]) for row in rows]
    for row, path in zip(rows, paths, strict=True):
        assert path.name == row.original_name
        assert row.source_path == str(site.inbox / row.original_name)
        assert row.model_version == 1
        assert row.duplicate_of is None
        if row.original_name in mtimes:
            assert path.stat().st_mtime_ns == mtimes[row.original_name]
    # Nothing else anywhere: one file per row, the inbox empty, failed/ and duplicates/ empty.
    assert site.outputs() == sorted(paths)
    assert site.inbox_files() == []
    assert {p.parent.name for p in paths} == set(LABELS)

    sizes = batch_sizes(caplog)
    assert sum(sizes) == 500, sizes  # each image in exactly one batch
    assert max(sizes) > 1 and len(sizes) <= 500 // 4, f"not really batched: {sizes}"
    beat = site.heartbeat()
    assert beat is not None and beat.state == "stopped"
    assert (beat.processed, beat.failed) == (500, 0)


# ---------------------------------------------------------------------------------------------
# Settling
# ---------------------------------------------------------------------------------------------


def test_a_slow_writer_is_classified_once_after_its_last_chunk(new_site, validation_jpegs):
    # Pauses between chunks (0.15 s) are well under settle_seconds, as the setting requires.
    site = new_site(watch={"settle_seconds": 1.5})
    data = validation_jpegs["dogs"][0].read_bytes()
    pieces = 20
    step = -(-len(data) // pieces)
    target = site.inbox / "slow.jpg"
    with running_daemon(site):
        with open(target, "wb") as handle:
            for start in range(0, len(data), step):
                handle.write(data[start : start + step])
                handle.flush()
                os.fsync(handle.fileno())
                # While the writer is at it, the daemon has neither recorded nor moved it.
                assert target.exists() and site.rows() == []
                time.sleep(0.15)
        wait_for(lambda: site.settled(1), "the slow file filed", describe=site.describe)
    (row,) = site.rows()
    path = assert_filed(row, site, sha256_of_bytes(data))
    assert path.read_bytes() == data


def test_a_writer_that_pauses_past_settle_seconds_is_waited_for_until_it_closes(
    new_site, validation_jpegs
):
    # A stalled copy from a share: the file stays open and unchanged for 4 x settle_seconds.
    site = new_site(watch={"settle_seconds": 0.5})
    data = validation_jpegs["cats"][2].read_bytes()
    target = site.inbox / "stalled.jpg"
    with running_daemon(site):
        with open(target, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(2.0)
            assert target.exists() and site.rows() == [], "read while its writer was paused"
            handle.write(data[len(data) // 2 :])
        wait_for(lambda: site.settled(1), "the stalled file filed", describe=site.describe)
    (row,) = site.rows()
    path = assert_filed(row, site, sha256_of_bytes(data))
    assert path.read_bytes() == data


def test_a_part_file_renamed_when_complete_is_filed_once(new_site, validation_jpegs):
    site = new_site()
    data = validation_jpegs["cats"][1].read_bytes()
    part = site.inbox / "download.jpg.part"
    with running_daemon(site):
        with open(part, "wb") as handle:
            for start in range(0, len(data), 4096):
                handle.write(data[start : start + 4096])
                handle.flush()
                time.sleep(0.01)
        part.rename(site.inbox / "download.jpg")
        wait_for(lambda: site.settled(1), "the renamed download filed", describe=site.describe)
    (row,) = site.rows()
    assert row.original_name == "download.jpg"
    assert_filed(row, site, sha256_of_bytes(data))


# ---------------------------------------------------------------------------------------------
# Duplicates and names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keep", "move"])
def test_the_same_content_under_two_names(new_site, validation_jpegs, mode):
    site = new_site(filing={"duplicates": mode})
    one, two = validation_jpegs["cats"][2], validation_jpegs["dogs"][2]
    with running_daemon(site):
        drop(one, site.inbox / "first.jpg")
        wait_for(lambda: site.settled(1), "first.jpg filed", describe=site.describe)
        drop(one, site.inbox / "second.jpg")
        wait_for(lambda: site.settled(2), "second.jpg filed", describe=site.describe)
        # Two copies arriving together (likely in one batch): one of them is the original.
        drop(two, site.inbox / "pair_a.jpg")
        drop(two, site.inbox / "pair_b.jpg")
        wait_for(lambda: site.settled(4), "the pair filed", describe=site.describe)

    first, second = site.row_by_name("first.jpg"), site.row_by_name("second.jpg")
    assert_filed(first, site, sha256_of(one))
    assert first.duplicate_of is None
    assert second.duplicate_of == first.id
    assert second.sha256 == first.sha256
    pair = [site.row_by_name("pair_a.jpg"), site.row_by_name("pair_b.jpg")]
    originals = [r for r in pair if r.duplicate_of is None]
    copies = [r for r in pair if r.duplicate_of is not None]
    assert len(originals) == len(copies) == 1, pair
    assert copies[0].duplicate_of == originals[0].id
    assert_filed(originals[0], site, sha256_of(two))
    for copy, source in ((second, one), (copies[0], two)):
        if mode == "keep":
            assert_filed(copy, site, sha256_of(source))
        else:
            assert copy.status == STATUS_DUPLICATE
            assert Path(copy.path) == site.duplicates / copy.original_name
            assert sha256_of(Path(copy.path)) == sha256_of(source)
            assert copy.label in LABELS and copy.filed_at is not None
    assert site.outputs() == sorted(Path(r.path) for r in site.rows())
    moved = {"second.jpg", copies[0].original_name} if mode == "move" else set()
    assert {p.name for p in site.outputs() if p.is_relative_to(site.duplicates)} == moved


def test_unsure_images_go_to_review_with_their_label_on_record(
    new_site, validation_jpegs, tmp_path
):
    threshold = 0.7  # the tiny model is unsure of many images (and of noise): both sides occur
    site = new_site(filing={"review_below": threshold})
    sources = [*validation_jpegs["cats"][40:50], *validation_jpegs["dogs"][40:50]]
    sources += [save(noise((64, 64), seed=100 + i), tmp_path / f"noise_{i}.png") for i in range(4)]
    with running_daemon(site):
        for source in sources:
            drop(source, site.inbox / source.name)
        wait_for(lambda: site.settled(len(sources)), "all filed", describe=site.describe)
    rows = site.rows()
    for row in rows:
        assert row.status == STATUS_FILED and row.label in LABELS
        unsure = row.score < threshold
        folder = site.library / (REVIEW_FOLDER if unsure else row.label)
        assert Path(row.path) == folder / row.original_name, (row.score, row.path)
    scores = sorted(r.score for r in rows)
    assert scores[0] < threshold <= scores[-1], f"one-sided scores, nothing to tell: {scores}"


def test_a_taken_name_gets_a_number_and_nothing_is_overwritten(new_site, validation_jpegs):
    site = new_site()
    unrelated = b"the user's own file, not a photo\n"
    # The label is the model's choice, so the name is taken in every folder it could go to.
    taken = [site.library / label / "x.jpg" for label in LABELS] + [site.failed / "y.jpg"]
    for path in taken:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(unrelated)
    before = {path: path.stat() for path in taken}
    source = validation_jpegs["cats"][3]
    with running_daemon(site):
        drop(source, site.inbox / "x.jpg")
        wait_for(lambda: site.settled(1), "x.jpg filed", describe=site.describe)
        # Two bad files of the same name from two subfolders, both bound for failed/.
        (site.inbox / "a").mkdir()
        (site.inbox / "b").mkdir()
        (site.inbox / "a" / "y.jpg").write_bytes(TEXT_BYTES)
        (site.inbox / "b" / "y.jpg").write_bytes(TEXT_BYTES + b"another list\n")
        wait_for(lambda: site.settled(3), "both y.jpg failed", describe=site.describe)

    x = site.row_by_name("x.jpg")
    assert Path(x.path).name == "x (1).jpg"
    assert_filed(x, site, sha256_of(source))
    for path, st in before.items():
        assert path.read_bytes() == unrelated
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    ys = sorted((r for r in site.rows() if r.original_name == "y.jpg"), key=lambda r: r.id)
    assert len(ys) == 2
    assert sorted(Path(r.path).name for r in ys) == ["y (1).jpg", "y (2).jpg"]
    assert {Path(r.path).read_bytes() for r in ys} == {TEXT_BYTES, TEXT_BYTES + b"another list\n"}
    assert all(r.error == "not an image: text" for r in ys)


# ---------------------------------------------------------------------------------------------
# Watchers, scans and rescans
# ---------------------------------------------------------------------------------------------


def test_polling_mode_files_a_dropped_and_a_renamed_image(new_site, validation_jpegs, tmp_path):
    site = new_site(watch={"polling": True, "poll_interval_seconds": 0.2, "rescan_seconds": 0})
    staged = drop(validation_jpegs["dogs"][4], tmp_path / "staging" / "renamed.jpg")
    with running_daemon(site) as daemon:
        assert isinstance(daemon._observer, PollingObserver)
        # Past the start-up scan, only the polling observer can find what arrives (no rescans).
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        drop(validation_jpegs["cats"][4], site.inbox / "polled.jpg")
        wait_for(lambda: site.settled(1), "polled.jpg filed", describe=site.describe)
        staged.rename(site.inbox / "renamed.jpg")
        wait_for(lambda: site.settled(2), "renamed.jpg filed", describe=site.describe)
    for name, source in (("polled.jpg", "cats"), ("renamed.jpg", "dogs")):
        assert_filed(site.row_by_name(name), site, sha256_of(validation_jpegs[source][4]))


def test_files_already_in_the_inbox_are_filed_by_the_start_up_scan(new_site, validation_jpegs):
    site = new_site()  # no periodic rescans: only the scan at start can find these
    sources = {
        "early.jpg": validation_jpegs["cats"][5],
        "sub/dir/early2.jpg": validation_jpegs["dogs"][5],
    }
    for name, source in sources.items():
        drop(source, site.inbox / name)
    with running_daemon(site):
        wait_for(lambda: site.settled(2), "the early files filed", describe=site.describe)
    for name, source in sources.items():
        row = site.row_by_name(Path(name).name)
        assert row.source_path == str(site.inbox / name)
        assert_filed(row, site, sha256_of(source))


def test_the_periodic_rescan_files_what_a_dead_watcher_missed(new_site, validation_jpegs):
    site = new_site(watch={"rescan_seconds": 1})
    source = validation_jpegs["cats"][6]
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        # The watcher dies: from here on no event reaches the daemon.
        daemon._observer.stop()
        daemon._observer.join(10)
        assert not daemon._observer.is_alive()
        drop(source, site.inbox / "missed.jpg")
        wait_for(lambda: site.settled(1), "missed.jpg filed by a rescan", describe=site.describe)
    assert_filed(site.row_by_name("missed.jpg"), site, sha256_of(source))


def test_a_folder_moved_into_the_inbox_is_consumed(new_site, validation_jpegs, tmp_path):
    site = new_site()
    album = tmp_path / "album"
    sources = {
        "a.jpg": drop(validation_jpegs["cats"][7], album / "a.jpg"),
        "deeper/b.jpg": drop(validation_jpegs["dogs"][7], album / "deeper" / "b.jpg"),
        "deeper/c.png": save(noise((64, 64), seed=7), album / "deeper" / "c.png"),
    }
    expected = {name: sha256_of(path) for name, path in sources.items()}
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        album.rename(site.inbox / "album")  # one event for the folder, none for its files
        wait_for(lambda: site.settled(3), "the album filed", describe=site.describe)
    for name, sha256 in expected.items():
        row = site.row_by_name(Path(name).name)
        assert row.source_path == str(site.inbox / "album" / name)
        assert_filed(row, site, sha256)


IGNORED = ("photo.jpg.part", ".hidden.jpg", "edited.jpg~", ".cache/inner.jpg", "Thumbs.db")


def test_ignored_names_are_left_alone(new_site, validation_jpegs):
    # Three ways to find a file: the start-up scan, the watcher, a periodic rescan. Each of them
    # is shown to have run past the ignored files by a good file it found and filed meanwhile.
    site = new_site(watch={"rescan_seconds": 0.5})
    data = validation_jpegs["cats"][8].read_bytes()
    for name in IGNORED:
        (site.inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (site.inbox / name).write_bytes(data)
    drop(validation_jpegs["dogs"][8], site.inbox / "before.jpg")
    with running_daemon(site) as daemon:
        wait_for(lambda: site.rows(), "before.jpg filed", describe=site.describe)
        for name in IGNORED:  # the same names again, now written under the watcher's eyes
            live = site.inbox / "live" / name
            live.parent.mkdir(parents=True, exist_ok=True)
            live.write_bytes(data)
        # Written after the ignored ones: once it is filed, their events have been handled.
        drop(validation_jpegs["dogs"][9], site.inbox / "after.jpg")
        wait_for(lambda: len(site.rows()) == 2, "after.jpg filed", describe=site.describe)
        # No more events: what arrives now only a rescan finds, with the ignored files beside.
        daemon._observer.stop()
        daemon._observer.join(10)
        drop(validation_jpegs["dogs"][10], site.inbox / "rescanned.jpg")
        wait_for(lambda: len(site.rows()) == 3, "rescanned.jpg filed", describe=site.describe)
        # Anything that scan claimed alongside it has been filed too once intake is idle.
        wait_for(daemon.intake.idle, "the daemon to be idle")
    names = sorted(r.original_name for r in site.rows())
    assert names == ["after.jpg", "before.jpg", "rescanned.jpg"]
    left = sorted(p.relative_to(site.inbox).as_posix() for p in site.inbox_files())
    assert left == sorted([*IGNORED, *(f"live/{n}" for n in IGNORED)])
    assert all(p.read_bytes() == data for p in site.inbox_files())


# ---------------------------------------------------------------------------------------------
# Model swaps
# ---------------------------------------------------------------------------------------------


def test_an_activated_version_is_served_within_seconds_and_a_corrupt_one_is_refused(
    new_site, tiny_model, validation_jpegs, caplog
):
    caplog.set_level(logging.INFO, logger="inboxsort")
    site = new_site()
    good, corrupt = site.register(tiny_model), site.register(tiny_model, corrupt=True)
    images = validation_jpegs["cats"][10:13]
    with running_daemon(site) as daemon:
        drop(images[0], site.inbox / "before.jpg")
        wait_for(lambda: site.settled(1), "before.jpg filed", describe=site.describe)
        site.activate(good)
        # The daemon looks for activations every 3 s, then loads and warms the model up.
        wait_for(lambda: daemon.model.version() == good, "the swap", timeout=30)
        drop(images[1], site.inbox / "after.jpg")
        wait_for(lambda: site.settled(2), "after.jpg filed", describe=site.describe)

        site.activate(corrupt)
        refused = f"cannot load model version {corrupt}, still serving {good}"
        wait_for(lambda: refused in caplog.text, "the corrupt version refused", timeout=30)
        drop(images[2], site.inbox / "still.jpg")
        wait_for(lambda: site.settled(3), "still.jpg filed", describe=site.describe)
        assert daemon.model.version() == good
    versions = {r.original_name: r.model_version for r in site.rows()}
    assert versions == {"before.jpg": 1, "after.jpg": good, "still.jpg": good}
    assert f"now serving model version {good} (was 1)" in caplog.text


def test_a_swap_to_a_model_of_another_input_size_mid_stream_files_each_image_once(
    new_site, validation_jpegs
):
    """Images keep arriving while the shipped 224 px model replaces the 160 px one.

    Some are decoded at 160 px and reach the batcher after the swap: they must be decoded again,
    not lost, not filed twice, not fed to the model at the wrong size.
    """
    site = new_site()
    sources = iter(validation_jpegs["dogs"][200:500])
    expected: dict[str, str] = {}

    def drop_next() -> None:
        source = next(sources)
        expected[source.name] = sha256_of(source)
        drop(source, site.inbox / source.name)

    with running_daemon(site) as daemon:
        for _ in range(10):
            drop_next()
        site.activate(BUILTIN)

        def swapped() -> bool:
            drop_next()  # a steady stream (one image per look) until the new model serves
            return daemon.model.version() == BUILTIN

        wait_for(swapped, "the shipped model to serve", timeout=60, interval=0.1)
        for _ in range(10):
            drop_next()
        count = len(expected)
        wait_for(lambda: site.settled(count), "the stream filed", describe=site.describe)

    rows = site.rows()
    assert sorted(r.original_name for r in rows) == sorted(expected)
    for row in rows:
        assert_filed(row, site, expected[row.original_name])
    versions = [r.model_version for r in sorted(rows, key=lambda r: r.id)]
    assert set(versions) == {1, BUILTIN}, versions
    assert versions[-10:] == [BUILTIN] * 10  # dropped after the swap


def test_a_locked_database_holds_images_in_the_inbox_until_it_is_free(new_site, validation_jpegs):
    """Another writer (a sqlite3 shell, the CLI) holds the lock: the row comes before the move,
    so while the daemon cannot write it, the image stays where it is; then it is filed."""
    site = new_site()
    source = validation_jpegs["cats"][14]
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        with closing(sqlite3.connect(site.database_file, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # the write lock, held
            drop(source, site.inbox / "waiting.jpg")
            # Claimed, decoded and out of the batcher: the inference thread is filing it.
            wait_for(
                lambda: daemon.intake.in_flight() == 1 and daemon.inference.queued() == 0,
                "the daemon to reach the locked database",
            )
            held_until = time.monotonic() + 1.0
            while time.monotonic() < held_until:
                assert (site.inbox / "waiting.jpg").is_file()
                assert site.rows() == [] and site.outputs() == []
                time.sleep(0.05)
            other.execute("ROLLBACK")
        wait_for(lambda: site.settled(1), "waiting.jpg filed", describe=site.describe)
    assert_filed(site.row_by_name("waiting.jpg"), site, sha256_of(source))
