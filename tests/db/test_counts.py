"""inboxsort.db.counts: what `inboxsort stats` counts, on the eight rows of querysite."""

from __future__ import annotations

from inboxsort.db import Database
from inboxsort.db.counts import count_by_label, count_by_status, count_corrections, received_since
from tests.helpers.querysite import AGE, NOW, ROWS, populate


def test_counts_of_an_empty_database(db: Database) -> None:
    with db.session() as session:
        assert count_by_status(session) == {}
        assert count_by_label(session) == {}
        assert count_corrections(session) == 0
        assert received_since(session, NOW - AGE(days=365)) == []


def test_counts_by_status_and_label(db: Database) -> None:
    populate(db, NOW)
    with db.session() as session:
        assert count_by_status(session) == {"duplicate": 1, "failed": 1, "filed": 5, "pending": 1}
        # Images without a label (failed, pending) are not counted under any label.
        assert count_by_label(session) == {"cats": 3, "dogs": 3}
        assert count_corrections(session) == 2  # used for training or not


def test_received_since_is_inclusive(db: Database) -> None:
    populate(db, NOW)
    with db.session() as session:
        assert sorted(received_since(session, NOW - AGE(hours=3))) == [
            NOW - ROWS[2][5],
            NOW - ROWS[1][5],
            NOW - ROWS[6][5],
        ]
        assert sorted(received_since(session, NOW - AGE(hours=1))) == [
            NOW - AGE(minutes=10),
            NOW - AGE(minutes=1),
        ]
        assert all(t.tzinfo is not None for t in received_since(session, NOW - AGE(days=50)))
        assert len(received_since(session, NOW - AGE(days=50))) == len(ROWS)
        assert received_since(session, NOW) == []
