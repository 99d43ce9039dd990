"""Filing one batch on real files and a real SQLite file: rows, moves, duplicates, round trips."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, select

from inboxsort.config import FilingConfig
from inboxsort.db import (
    STATUS_DUPLICATE,
    STATUS_FILED,
    STATUS_PENDING,
    Database,
    Image,
    utcnow,
)
from inboxsort.intake.filing import Filer
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Decoded
from inboxsort.own_filings import OwnFilings
from tests.helpers.filedrows import classified


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine sends inside the block (an executemany counts once)."""
    seen: list[str] = []

    def note(_conn, _cursor, sql, *_rest) -> None:
        seen.append(sql)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def rows(db: Database) -> list[Image]:
    with db.session() as session:
        return list(session.scalars(select(Image).order_by(Image.id)))


def test_a_batch_costs_the_same_statements_whatever_its_size(db, paths):
    filer = Filer(paths, FilingConfig(), Ledger(db))
    counts = []
    for size in (2, 24):
        batch = [classified(paths.inbox, f"cat.{size}.{i}.jpg") for i in range(size)]
        with statements(db) as seen:
            outcome = filer.file_batch(batch)
        assert outcome.filed == size
        inserts = [sql for sql in seen if sql.startswith("INSERT")]
        assert len(inserts) == size  # SQLite's RETURNING order is not guaranteed: one each
        counts.append(len(seen) - len(inserts))
    # Every lookup and update is one statement per batch: on two cores, per-image round
    # trips take CPU time from the model.
    assert counts[0] == counts[1], counts
    filed = rows(db)
    assert len(filed) == 26
    assert all(r.status == STATUS_FILED and Path(r.path).is_file() for r in filed)
    assert [Path(r.path).parent.name for r in filed] == ["cats"] * 26
    assert not list(paths.inbox.iterdir())


def test_content_filed_before_is_marked_a_duplicate_of_the_first(db, paths):
    filer = Filer(paths, FilingConfig(duplicates="move"), Ledger(db))
    same = b"the same photo" * 100
    filer.file_batch(
        [classified(paths.inbox, "first.jpg", data=same), classified(paths.inbox, "other.jpg")]
    )
    filer.file_batch(
        [
            classified(paths.inbox, "again.jpg", data=same),
            classified(paths.inbox, "again2.jpg", data=same),
        ]
    )
    outcome = filer.file_batch([classified(paths.inbox, "again3.jpg", data=same)])

    by_name = {r.original_name: r for r in rows(db)}
    first = by_name["first.jpg"]
    assert first.status == STATUS_FILED and first.duplicate_of is None
    for name in ("again.jpg", "again3.jpg"):
        row = by_name[name]
        assert (row.status, row.duplicate_of) == (STATUS_DUPLICATE, first.id)
        assert Path(row.path).parent == paths.duplicates and Path(row.path).is_file()
    # The second copy in one batch waits for the next, when the first is on record.
    assert "again2.jpg" not in by_name
    assert outcome.duplicates == 1
    assert (paths.inbox / "again2.jpg").is_file()


def test_a_pending_row_a_crash_left_is_reused_not_doubled(db, paths):
    item = classified(paths.inbox, "cat.jpg")
    ledger = Ledger(db)
    with db.begin() as session:
        session.add(
            Image(
                source_path=str(item.claim.path),
                original_name="cat.jpg",
                path=str(item.claim.path),
                status=STATUS_PENDING,
                received_at=utcnow(),
            )
        )
    Filer(paths, FilingConfig(), ledger).file_batch(
        [item, classified(paths.inbox, "dog.jpg", label="dogs")]
    )

    [cat, dog] = rows(db)
    assert (cat.original_name, cat.status, cat.path) == (
        "cat.jpg",
        STATUS_FILED,
        str(paths.library / "cats" / "cat.jpg"),
    )
    assert (dog.original_name, dog.status) == ("dog.jpg", STATUS_FILED)


def test_each_move_into_the_library_is_noted_for_the_library_watcher(db, paths):
    own = OwnFilings()
    items = [classified(paths.inbox, "cat.jpg"), classified(paths.inbox, "dog.jpg", label="dogs")]
    broken = classified(paths.inbox, "broken.jpg")
    broken = Decoded(broken.claim, broken.sha256, None, "cannot decode: truncated")
    Filer(paths, FilingConfig(), Ledger(db), own=own).file_batch([*items, broken])

    assert (paths.failed / "broken.jpg").is_file()  # not in the library: nothing to note

    for item, dest in zip(items, ("cats/cat.jpg", "dogs/dog.jpg"), strict=True):
        st = (paths.library / dest).stat()
        assert (st.st_dev, st.st_ino) == (item.claim.device, item.claim.inode)
        assert own.take(paths.library / dest) == (st.st_dev, st.st_ino)
    assert len(own) == 0


def test_a_move_that_did_not_happen_leaves_no_note(db, paths):
    own = OwnFilings()
    item = classified(paths.inbox, "cat.jpg")
    item.claim.path.unlink()  # gone before it could be filed
    outcome = Filer(paths, FilingConfig(), Ledger(db), own=own).file_batch([item])

    assert outcome.vanished == 1
    assert len(own) == 0


def test_a_kept_duplicate_counts_as_a_duplicate_not_as_filed(db, paths):
    filer = Filer(paths, FilingConfig(duplicates="keep"), Ledger(db))
    same = b"the same photo" * 100
    first = filer.file_batch([classified(paths.inbox, "first.jpg", data=same)])
    again = filer.file_batch(
        [classified(paths.inbox, "again.jpg", data=same), classified(paths.inbox, "new.jpg")]
    )

    assert (first.filed, first.duplicates) == (1, 0)
    # Filed into the library like any image, with duplicate_of set: the log counts it so.
    assert (again.filed, again.failed, again.duplicates) == (1, 0, 1)
    by_name = {r.original_name: r for r in rows(db)}
    kept = by_name["again.jpg"]
    assert (kept.status, kept.duplicate_of) == (STATUS_FILED, by_name["first.jpg"].id)
    assert Path(kept.path).parent == paths.library / "cats"
