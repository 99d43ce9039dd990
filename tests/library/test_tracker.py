"""The library tracker on real files and a real SQLite file, and once under a real observer."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from watchdog.observers import Observer

from inboxsort.db import (
    SOURCE_LABEL,
    SOURCE_MOVE,
    SOURCE_REVIEW,
    STATUS_DELETED,
    STATUS_FILED,
    STATUS_PENDING,
    Database,
    Image,
    utcnow,
)
from inboxsort.intake.ledger import Entry, Ledger
from inboxsort.library.watcher import (
    CLOSED,
    CREATED,
    DELETED,
    MOVED,
    LibraryEvent,
    LibraryHandler,
    LibraryTracker,
    LibraryWorker,
    ReconcileReport,
)
from tests.helpers.filedrows import corrections, file_image, get_image, serving, write_file

GRACE = 5.0


@pytest.fixture
def tracker(db: Database, library: Path) -> LibraryTracker:
    return LibraryTracker(db, library=library, model=serving(), grace_seconds=GRACE)


def mv(tracker: LibraryTracker, src: Path, dest: Path, now: float = 0.0) -> None:
    """Rename like `mv` on one filesystem, and feed the event inotify reports."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dest)
    tracker.handle(LibraryEvent(MOVED, dest, src=src, is_dir=dest.is_dir()), now)


def test_a_move_between_class_folders_is_one_correction_with_both_labels(db, library, tracker):
    cat = file_image(db, library / "cats" / "a.jpg", "cats", score=0.87, model_version=3)
    mv(tracker, library / "cats" / "a.jpg", library / "dogs" / "a.jpg")
    # The same news again (a rescan, a duplicate event) must not count twice.
    tracker.handle(LibraryEvent(CREATED, library / "dogs" / "a.jpg"), 0.1)
    tracker.handle(LibraryEvent(CLOSED, library / "dogs" / "a.jpg"), 0.2)
    tracker.flush(10.0)

    [c] = corrections(db)
    assert (c.image_id, c.old_label, c.new_label, c.source) == (cat, "cats", "dogs", SOURCE_MOVE)
    assert (c.old_path, c.new_path) == (
        str(library / "cats" / "a.jpg"),
        str(library / "dogs" / "a.jpg"),
    )
    assert c.used_in_version is None
    row = get_image(db, cat)
    assert (row.label, row.path, row.status) == ("dogs", str(library / "dogs" / "a.jpg"), "filed")
    # What the model said stays on the row: the correction is the user's part.
    assert (row.model_label, row.model_score, row.model_version) == ("cats", 0.87, 3)
    # And score is the probability of the label the row has now: with two classes, 1 - 0.87.
    assert row.score == pytest.approx(0.13)


def test_a_corrected_score_follows_the_label_back_and_is_unknown_with_more_classes(db, library):
    two = LibraryTracker(db, library=library, model=serving(), grace_seconds=GRACE)
    cat = file_image(db, library / "cats" / "a.jpg", "cats", score=0.75)
    mv(two, library / "cats" / "a.jpg", library / "dogs" / "a.jpg")
    assert get_image(db, cat).score == pytest.approx(0.25)
    mv(two, library / "dogs" / "a.jpg", library / "cats" / "a.jpg", 1.0)  # the user changes mind
    row = get_image(db, cat)
    assert (row.label, row.score, row.model_label, row.model_score) == ("cats", 0.75, "cats", 0.75)

    (library / "birds").mkdir()
    three = LibraryTracker(
        db, library=library, model=serving(("birds", "cats", "dogs")), grace_seconds=GRACE
    )
    mv(three, library / "cats" / "a.jpg", library / "birds" / "a.jpg", 2.0)
    row = get_image(db, cat)
    # The model's probability of birds is not on record: unknown, not the cats figure.
    assert (row.label, row.score, row.model_label, row.model_score) == ("birds", None, "cats", 0.75)
    assert len(corrections(db)) == 3


def test_the_models_word_is_what_the_daemon_planned_last_and_survives_a_move(
    db, library, tracker, tmp_path
):
    inbox = write_file(tmp_path / "inbox" / "a.jpg")
    dest = library / "cats" / "a.jpg"
    st = inbox.stat()

    def entry(label: str, score: float) -> Entry:
        return Entry(
            source=inbox,
            dest=dest,
            status=STATUS_FILED,
            sha256=None,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
            received_at=utcnow(),
            label=label,
            score=score,
            model_version=1,
        )

    ledger = Ledger(db)
    ledger.plan([entry("dogs", 0.6)])  # a crash left this row pending...
    [planned] = ledger.plan([entry("cats", 0.8)])  # ... and the restart classified it again
    inbox.rename(dest)
    ledger.finish([(planned, None)])
    row = get_image(db, planned.row_id)
    assert (row.label, row.score, row.model_label, row.model_score) == ("cats", 0.8, "cats", 0.8)
    mv(tracker, dest, library / "dogs" / "a.jpg")
    row = get_image(db, planned.row_id)
    assert (row.label, row.model_label, row.model_score) == ("dogs", "cats", 0.8)
    assert row.score == pytest.approx(0.2)


def test_a_rename_within_a_folder_updates_the_path_only(db, library, tracker):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    mv(tracker, library / "cats" / "a.jpg", library / "cats" / "tabby.jpg")
    mv(tracker, library / "cats" / "tabby.jpg", library / "cats" / "2024" / "tabby.jpg")
    tracker.flush(10.0)
    assert corrections(db) == []
    row = get_image(db, cat)
    assert (row.label, row.path) == ("cats", str(library / "cats" / "2024" / "tabby.jpg"))


def test_out_of_review_is_a_review_correction(db, library, tracker):
    unsure = file_image(db, library / "_review" / "u.jpg", "cats", score=0.51)
    agreed = file_image(db, library / "_review" / "v.jpg", "dogs", score=0.55)
    mv(tracker, library / "_review" / "u.jpg", library / "dogs" / "u.jpg")
    # Confirming the model's unsure guess is a verdict too: recorded, old == new label.
    mv(tracker, library / "_review" / "v.jpg", library / "dogs" / "v.jpg")
    first, second = corrections(db)
    assert (first.image_id, first.old_label, first.new_label, first.source) == (
        unsure,
        "cats",
        "dogs",
        SOURCE_REVIEW,
    )
    assert (second.image_id, second.old_label, second.new_label, second.source) == (
        agreed,
        "dogs",
        "dogs",
        SOURCE_REVIEW,
    )
    assert get_image(db, unsure).label == "dogs"


def test_into_review_or_a_folder_that_is_no_class_is_reported_not_learned(
    db, library, tracker, caplog
):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    dog = file_image(db, library / "dogs" / "b.jpg", "dogs")
    with caplog.at_level(logging.INFO, logger="inboxsort.library.tracker"):
        mv(tracker, library / "cats" / "a.jpg", library / "holiday" / "a.jpg")
        mv(tracker, library / "dogs" / "b.jpg", library / "_review" / "b.jpg")
    assert corrections(db) == []
    assert get_image(db, cat).path == str(library / "holiday" / "a.jpg")
    assert get_image(db, cat).label == "cats"
    assert get_image(db, dog).path == str(library / "_review" / "b.jpg")
    reported = [r.getMessage() for r in caplog.records if "not learned" in r.getMessage()]
    assert len(reported) == 2
    assert str(library / "holiday" / "a.jpg") in reported[0]


def test_a_deletion_is_marked_after_the_grace_period_and_is_no_correction(db, library, tracker):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    keep = file_image(db, library / "cats" / "b.jpg", "cats")
    (library / "cats" / "a.jpg").unlink()
    tracker.handle(LibraryEvent(DELETED, library / "cats" / "a.jpg"), 100.0)
    tracker.flush(100.0 + GRACE - 0.5)
    assert get_image(db, cat).status == STATUS_FILED  # a move may still show up
    tracker.flush(100.0 + GRACE + 0.1)
    assert get_image(db, cat).status == STATUS_DELETED
    assert get_image(db, keep).status == STATUS_FILED
    assert corrections(db) == []
    assert (library / "cats" / "b.jpg").exists()


def test_a_folder_moved_out_of_the_library_marks_its_images_deleted(db, library, tracker, tmp_path):
    first = file_image(db, library / "cats" / "trip" / "1.jpg", "cats")
    second = file_image(db, library / "cats" / "trip" / "2.jpg", "cats")
    (library / "cats" / "trip").rename(tmp_path / "elsewhere")
    # Moved out of the watched tree, inotify reports the folder only.
    tracker.handle(LibraryEvent(DELETED, library / "cats" / "trip", is_dir=True), 0.0)
    tracker.flush(GRACE + 1)
    assert {get_image(db, i).status for i in (first, second)} == {STATUS_DELETED}
    assert corrections(db) == []


@pytest.mark.parametrize("copy_first", [True, False], ids=["copy-delete", "delete-copy"])
def test_a_copy_and_a_deletion_are_recognized_as_a_move_by_content(
    db, library, tracker, copy_first
):
    old, new = library / "cats" / "a.jpg", library / "dogs" / "a.jpg"
    cat = file_image(db, old, "cats")
    data = old.read_bytes()

    def copy(now: float) -> None:  # rsync, or a file manager across mounts: a new inode
        write_file(new, data)
        tracker.handle(LibraryEvent(CREATED, new), now)
        tracker.handle(LibraryEvent(CLOSED, new), now)

    def delete(now: float) -> None:
        old.unlink()
        tracker.handle(LibraryEvent(DELETED, old), now)

    first, second = (copy, delete) if copy_first else (delete, copy)
    first(1.0)
    second(2.0)
    tracker.flush(20.0)

    [c] = corrections(db)
    assert (c.image_id, c.old_label, c.new_label, c.source) == (cat, "cats", "dogs", SOURCE_MOVE)
    row = get_image(db, cat)
    assert (row.path, row.status, row.label) == (str(new), STATUS_FILED, "dogs")
    assert row.inode == new.stat().st_ino  # the copy's inode, for the next move


def test_the_daemons_own_filing_is_ignored(db, library, tracker, tmp_path):
    inbox = tmp_path / "inbox"
    arriving = write_file(inbox / "new.jpg")
    dest = library / "dogs" / "new.jpg"
    st = arriving.stat()
    with db.begin() as session:  # the daemon's plan: a pending row naming dest_path
        row = Image(
            original_name="new.jpg",
            source_path=str(arriving),
            path=str(arriving),
            dest_path=str(dest),
            label="dogs",
            status=STATUS_PENDING,
            size=st.st_size,
            device=st.st_dev,
            inode=st.st_ino,
        )
        session.add(row)
        session.flush()
        image_id = row.id
    os.link(arriving, dest)  # move_no_clobber: link, then unlink
    tracker.handle(LibraryEvent(CREATED, dest), 0.0)
    arriving.unlink()
    with db.begin() as session:  # the daemon's finish
        row = session.get(Image, image_id)
        row.status, row.path, row.dest_path = STATUS_FILED, str(dest), None
    tracker.handle(LibraryEvent(CLOSED, dest), 0.1)
    # Across filesystems the copy has a new inode: the pending row's dest_path says whose it is.
    other = write_file(inbox / "other.jpg")
    with db.begin() as session:
        session.add(
            Image(
                original_name="other.jpg",
                source_path=str(other),
                path=str(other),
                dest_path=str(library / "cats" / "other.jpg"),
                label="cats",
                status=STATUS_PENDING,
            )
        )
    shutil.copyfile(other, library / "cats" / "other.jpg")
    tracker.handle(LibraryEvent(CREATED, library / "cats" / "other.jpg"), 0.2)
    tracker.flush(30.0)

    assert corrections(db) == []
    row = get_image(db, image_id)
    assert (row.status, row.path, row.label) == (STATUS_FILED, str(dest), "dogs")


def test_a_folder_moved_between_classes_corrects_each_image_once(db, library, tracker):
    ids = [file_image(db, library / "cats" / "trip" / f"{i}.jpg", "cats") for i in range(3)]
    mv(tracker, library / "cats" / "trip", library / "dogs" / "trip")
    for i in range(3):  # inotify follows a folder move with one move per file inside
        src, dest = library / "cats" / "trip" / f"{i}.jpg", library / "dogs" / "trip" / f"{i}.jpg"
        tracker.handle(LibraryEvent(MOVED, dest, src=src), 0.1)
    assert sorted((c.image_id, c.new_label) for c in corrections(db)) == [(i, "dogs") for i in ids]


def test_moving_over_another_filed_image_marks_that_one_deleted(db, library, tracker):
    cat = file_image(db, library / "cats" / "x.jpg", "cats")
    dog = file_image(db, library / "dogs" / "x.jpg", "dogs", data=b"another picture" * 40)
    mv(tracker, library / "cats" / "x.jpg", library / "dogs" / "x.jpg")  # mv -f
    assert get_image(db, dog).status == STATUS_DELETED
    assert get_image(db, cat).path == str(library / "dogs" / "x.jpg")
    assert [(c.image_id, c.new_label) for c in corrections(db)] == [(cat, "dogs")]


def test_a_file_restored_to_its_place_is_filed_again(db, library, tracker, tmp_path):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    (library / "cats" / "a.jpg").rename(tmp_path / "trash.jpg")
    tracker.handle(LibraryEvent(DELETED, library / "cats" / "a.jpg"), 0.0)
    tracker.flush(GRACE + 1)
    assert get_image(db, cat).status == STATUS_DELETED
    (tmp_path / "trash.jpg").rename(library / "cats" / "a.jpg")
    tracker.handle(LibraryEvent(CREATED, library / "cats" / "a.jpg"), GRACE + 2)
    assert get_image(db, cat).status == STATUS_FILED
    assert corrections(db) == []


def test_reconcile_finds_moves_made_while_stopped_and_marks_the_rest_deleted(db, library, tracker):
    renamed = file_image(db, library / "cats" / "a.jpg", "cats")
    copied = file_image(db, library / "dogs" / "b.jpg", "dogs")
    gone = file_image(db, library / "dogs" / "c.jpg", "dogs")
    still = file_image(db, library / "dogs" / "d.jpg", "dogs")
    write_file(library / "cats" / "unrelated.jpg")  # a file the user added: no row, left alone
    (library / "cats" / "a.jpg").rename(library / "dogs" / "a.jpg")
    shutil.copyfile(library / "dogs" / "b.jpg", library / "cats" / "b.jpg")
    (library / "dogs" / "b.jpg").unlink()
    (library / "dogs" / "c.jpg").unlink()

    report = tracker.reconcile()

    assert report == ReconcileReport(checked=4, missing=3, moved=2, corrected=2, deleted=1)
    assert sorted((c.image_id, c.old_label, c.new_label) for c in corrections(db)) == [
        (renamed, "cats", "dogs"),
        (copied, "dogs", "cats"),
    ]
    assert get_image(db, renamed).path == str(library / "dogs" / "a.jpg")
    assert get_image(db, copied).path == str(library / "cats" / "b.jpg")
    for row in (get_image(db, renamed), get_image(db, copied)):
        # Scores of the corrected labels: the model's 0.9 was for the other class.
        assert row.score == pytest.approx(0.1) and row.model_score == 0.9
    assert get_image(db, gone).status == STATUS_DELETED
    assert get_image(db, still).status == STATUS_FILED
    assert tracker.reconcile() == ReconcileReport(checked=3)  # nothing left to do


def test_reconcile_keeps_the_label_of_an_interrupted_relabel(db, library, tracker):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    # relabel() wrote row and correction, then was killed before it moved the file.
    relabel_committed(db, cat, library / "cats" / "a.jpg", library / "dogs" / "a.jpg", "dogs")
    tracker.reconcile()
    assert [c.source for c in corrections(db)] == [SOURCE_LABEL]  # no move back recorded
    row = get_image(db, cat)
    assert (row.label, row.path) == ("dogs", str(library / "cats" / "a.jpg"))


def relabel_committed(db: Database, image_id: int, old: Path, new: Path, label: str) -> None:
    """What relabel() commits before it moves the file: the new path and label, a correction."""
    from inboxsort.db import Correction

    with db.begin() as session:
        row = session.get(Image, image_id)
        old_label, row.path, row.label = row.label, str(new), label
        session.add(
            Correction(
                image_id=image_id,
                old_label=old_label,
                new_label=label,
                source=SOURCE_LABEL,
                old_path=str(old),
                new_path=str(new),
            )
        )


def test_an_old_event_seen_while_relabel_moves_the_file_changes_nothing(db, library, tracker):
    old, new = library / "cats" / "a.jpg", library / "dogs" / "a.jpg"
    cat = file_image(db, old, "cats")
    relabel_committed(db, cat, old, new, "dogs")
    tracker.handle(LibraryEvent(CLOSED, old), 0.0)  # queued before the relabel, handled now
    mv(tracker, old, new, 0.1)  # relabel's move
    tracker.flush(30.0)
    assert [c.source for c in corrections(db)] == [SOURCE_LABEL]
    row = get_image(db, cat)
    assert (row.label, row.path, row.status) == ("dogs", str(new), STATUS_FILED)


def test_moving_a_relabelled_image_straight_back_is_a_correction(db, library, tracker):
    old, new = library / "cats" / "a.jpg", library / "dogs" / "a.jpg"
    cat = file_image(db, old, "cats")
    relabel_committed(db, cat, old, new, "dogs")
    mv(tracker, old, new, 0.0)  # relabel's move
    mv(tracker, new, old, 1.0)  # the user disagrees at once
    tracker.flush(30.0)
    assert [(c.source, c.new_label) for c in corrections(db)] == [
        (SOURCE_LABEL, "dogs"),
        (SOURCE_MOVE, "cats"),
    ]
    row = get_image(db, cat)
    assert (row.label, row.path, row.status) == ("cats", str(old), STATUS_FILED)


# ---- a real observer and the worker thread ----------------------------------------------


def wait_for(predicate, *, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_mv_under_a_real_observer_is_recorded_exactly_once(db, library):
    cat = file_image(db, library / "cats" / "a.jpg", "cats")
    events: queue.SimpleQueue[LibraryEvent] = queue.SimpleQueue()
    tracker = LibraryTracker(db, library=library, model=serving(), grace_seconds=GRACE)
    observer = Observer()
    observer.schedule(LibraryHandler(events), str(library), recursive=True)
    worker = LibraryWorker(tracker, events, tick=0.1)
    observer.start()
    worker.start()
    try:
        subprocess.run(
            ["mv", str(library / "cats" / "a.jpg"), str(library / "dogs" / "a.jpg")], check=True
        )
        assert wait_for(lambda: len(corrections(db)) >= 1), "no correction within 15 s"
        time.sleep(0.5)  # any late duplicate event would have been handled by now
    finally:
        observer.stop()
        observer.join(timeout=10)
        assert worker.stop(timeout=10)
    assert not observer.is_alive()
    [c] = corrections(db)
    assert (c.image_id, c.old_label, c.new_label, c.source) == (cat, "cats", "dogs", SOURCE_MOVE)
    assert get_image(db, cat).path == str(library / "dogs" / "a.jpg")
