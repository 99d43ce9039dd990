"""The note of the daemon's own filings, and the library tracker that skips them with it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from inboxsort.db import SOURCE_MOVE, Database
from inboxsort.library.watcher import CREATED, MOVED, LibraryEvent, LibraryTracker
from inboxsort.own_filings import OwnFilings
from tests.helpers.filedrows import corrections, file_image, get_image, serving


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_taken_once_and_expires():
    clock = Clock()
    own = OwnFilings(ttl=10, clock=clock)
    own.add(Path("/lib/cats/a.jpg"), device=1, inode=7)
    own.add(Path("/lib/cats/b.jpg"), device=1, inode=8)
    assert own.take(Path("/lib/cats/a.jpg")) == (1, 7)
    assert own.take(Path("/lib/cats/a.jpg")) is None
    clock.now += 10.5
    assert own.take(Path("/lib/cats/b.jpg")) is None
    assert len(own) == 0


def test_the_oldest_entries_go_first_past_the_limit():
    own = OwnFilings(limit=3)
    for inode in range(5):
        own.add(Path(f"/lib/{inode}.jpg"), device=1, inode=inode)
    own.add(Path("/lib/2.jpg"), device=1, inode=20)  # noted again: now the newest
    own.add(Path("/lib/5.jpg"), device=1, inode=5)
    assert len(own) == 3
    assert [own.take(Path(f"/lib/{i}.jpg")) for i in range(6)] == [
        None,
        None,
        (1, 20),
        None,
        (1, 4),
        (1, 5),
    ]


def test_a_new_note_for_the_same_file_replaces_the_old_one_and_discard_forgets():
    own = OwnFilings()
    own.add(Path("/lib/cats/a.jpg"), device=1, inode=7)
    own.add(Path("/lib/cats/a (1).jpg"), device=1, inode=7)  # the first name was taken
    own.add(Path("/lib/cats/b.jpg"), device=1, inode=8)
    own.discard(Path("/lib/cats/b.jpg"))  # its move failed
    assert own.take(Path("/lib/cats/a.jpg")) is None
    assert own.take(Path("/lib/cats/b.jpg")) is None
    assert own.take(Path("/lib/cats/a (1).jpg")) == (1, 7)


def sql_count(db: Database) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _k, sql, *_: seen.append(sql))
    return seen


def filed_and_noted(db: Database, own: OwnFilings, path: Path, label: str) -> int:
    """A filed row at path, and the filer's note for it, as the daemon leaves both."""
    image = file_image(db, path, label)
    st = path.stat()
    own.add(path, device=st.st_dev, inode=st.st_ino)
    return image


def test_the_daemons_own_filing_is_skipped_without_asking_the_database(db, library):
    own = OwnFilings()
    tracker = LibraryTracker(db, library=library, model=serving(), own=own)
    path = library / "cats" / "a.jpg"
    image = filed_and_noted(db, own, path, "cats")

    seen = sql_count(db)
    tracker.handle(LibraryEvent(CREATED, path), 0.0)
    assert seen == []
    # Without the note, the same event costs a lookup (and changes nothing either).
    tracker.handle(LibraryEvent(CREATED, path), 0.1)
    assert seen
    assert get_image(db, image).path == str(path)
    assert corrections(db) == []


def test_a_user_moving_the_file_back_later_is_still_a_correction(db, library):
    own = OwnFilings()
    tracker = LibraryTracker(db, library=library, model=serving(), own=own)
    cats, dogs = library / "cats" / "a.jpg", library / "dogs" / "a.jpg"
    image = filed_and_noted(db, own, cats, "cats")
    tracker.handle(LibraryEvent(CREATED, cats), 0.0)  # the daemon's own move: taken here

    cats.rename(dogs)
    tracker.handle(LibraryEvent(MOVED, dogs, src=cats), 1.0)
    dogs.rename(cats)
    tracker.handle(LibraryEvent(MOVED, cats, src=dogs), 2.0)

    assert [(c.old_label, c.new_label, c.source) for c in corrections(db)] == [
        ("cats", "dogs", SOURCE_MOVE),
        ("dogs", "cats", SOURCE_MOVE),
    ]
    assert get_image(db, image).path == str(cats)


def test_a_note_whose_event_was_lost_does_not_hide_a_later_move(db, library):
    clock = Clock()
    own = OwnFilings(ttl=30, clock=clock)
    tracker = LibraryTracker(db, library=library, model=serving(), own=own)
    cats, dogs = library / "cats" / "b.jpg", library / "dogs" / "b.jpg"
    file_image(db, dogs, "dogs")
    st = dogs.stat()
    own.add(cats, device=st.st_dev, inode=st.st_ino)  # its event never came (a queue overflow)

    clock.now += 31
    dogs.rename(cats)
    tracker.handle(LibraryEvent(MOVED, cats, src=dogs), 1.0)

    assert [(c.old_label, c.new_label) for c in corrections(db)] == [("dogs", "cats")]


def test_another_file_at_the_noted_name_is_looked_up(db, library):
    own = OwnFilings()
    tracker = LibraryTracker(db, library=library, model=serving(), own=own)
    mine, theirs = library / "cats" / "c.jpg", library / "dogs" / "c.jpg"
    image = file_image(db, theirs, "dogs")
    own.add(mine, device=0, inode=0)  # a note whose move failed: the name went to a user's file

    theirs.rename(mine)
    tracker.handle(LibraryEvent(MOVED, mine, src=theirs), 0.0)

    assert [(c.image_id, c.new_label) for c in corrections(db)] == [(image, "cats")]


def test_a_file_moved_on_before_its_event_was_read_drops_its_note(db, library):
    # Polling can miss both halves of a quick move: the daemon's filing at cats/ and the
    # user's move to dogs/ arrive as one creation in dogs/.
    own = OwnFilings()
    tracker = LibraryTracker(db, library=library, model=serving(), own=own)
    cats, dogs = library / "cats" / "d.jpg", library / "dogs" / "d.jpg"
    image = filed_and_noted(db, own, cats, "cats")
    cats.rename(dogs)
    tracker.handle(LibraryEvent(CREATED, dogs), 0.0)
    dogs.rename(cats)  # and back, within the note's lifetime
    tracker.handle(LibraryEvent(CREATED, cats), 1.0)

    assert [(c.old_label, c.new_label) for c in corrections(db)] == [
        ("cats", "dogs"),
        ("dogs", "cats"),
    ]
    assert get_image(db, image).path == str(cats)
