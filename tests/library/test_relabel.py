"""relabel_in_flight: how the tracker tells relabel()'s own move from a user's, on real rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from inboxsort.db import (
    SOURCE_LABEL,
    SOURCE_MOVE,
    SOURCE_REVIEW,
    Correction,
    Database,
    Image,
    utcnow,
)
from inboxsort.library.relabel import RELABEL_WINDOW, relabel_in_flight
from tests.helpers.filedrows import file_image


def _committed(
    db: Database, image_id: int, new: Path, *, source: str, age: dt.timedelta | None = None
) -> None:
    """The row and correction relabel() commits before it moves the file."""
    with db.begin() as session:
        row = session.get(Image, image_id)
        assert row is not None
        old_path, row.path = row.path, str(new)
        session.add(
            Correction(
                image_id=image_id,
                old_label=row.label,
                new_label="dogs",
                source=source,
                old_path=old_path,
                new_path=str(new),
                created_at=utcnow() - age if age is not None else utcnow(),
            )
        )


def _in_flight(db: Database, image_id: int, text: Path, *, recent: bool = False) -> bool:
    with db.session() as session:
        row = session.get(Image, image_id)
        assert row is not None
        return relabel_in_flight(session, row, str(text), recent=recent)


def test_a_committed_relabel_not_yet_moved_is_in_flight(db: Database, tmp_path: Path) -> None:
    old, new = tmp_path / "cats" / "a.jpg", tmp_path / "dogs" / "a.jpg"
    image = file_image(db, old, "cats")
    assert _in_flight(db, image, old) is False  # no correction at all
    _committed(db, image, new, source=SOURCE_LABEL)
    assert _in_flight(db, image, old) is True
    assert _in_flight(db, image, old, recent=True) is True
    assert _in_flight(db, image, tmp_path / "cats" / "other.jpg") is False  # not from there
    new.parent.mkdir()
    old.rename(new)  # the move happened: nothing is in flight any more
    assert _in_flight(db, image, old) is False


def test_an_old_relabel_counts_at_start_up_only(db: Database, tmp_path: Path) -> None:
    old, new = tmp_path / "cats" / "a.jpg", tmp_path / "dogs" / "a.jpg"
    image = file_image(db, old, "cats")
    _committed(db, image, new, source=SOURCE_LABEL, age=RELABEL_WINDOW * 2)
    assert _in_flight(db, image, old) is True
    assert _in_flight(db, image, old, recent=True) is False


def test_a_users_move_is_never_a_relabel_in_flight(db: Database, tmp_path: Path) -> None:
    old, new = tmp_path / "cats" / "a.jpg", tmp_path / "dogs" / "a.jpg"
    image = file_image(db, old, "cats")
    _committed(db, image, new, source=SOURCE_MOVE)
    assert _in_flight(db, image, old) is False


def test_a_review_from_the_web_page_is_in_flight_one_out_of_review_is_not(
    db: Database, tmp_path: Path
) -> None:
    # relabel() on the web page records `review` for an image in a class folder: in flight
    # until moved, as `inboxsort label`'s would be.
    old, new = tmp_path / "cats" / "a.jpg", tmp_path / "dogs" / "a.jpg"
    page = file_image(db, old, "cats")
    _committed(db, page, new, source=SOURCE_REVIEW)
    assert _in_flight(db, page, old) is True
    # The library watcher records `review` for a file the user moved out of _review/: already
    # moved when recorded, so finding it back there is a move of the user's.
    was, now = tmp_path / "_review" / "b.jpg", tmp_path / "dogs" / "b.jpg"
    watched = file_image(db, was, "cats")
    _committed(db, watched, now, source=SOURCE_REVIEW)
    assert _in_flight(db, watched, was) is False
