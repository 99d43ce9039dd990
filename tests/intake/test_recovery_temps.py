"""Start-up recovery removes the daemon's own half-written copies, and no file of the user's.

A copy across filesystems is written as `.inboxsort-<pid>-<dest name>.tmp` in dest's folder
after its row was committed pending with that dest_path; a kill -9 mid-copy leaves it behind.
The crash states are made by hand, as tests/intake/test_recovery.py makes them, on real files
and a real SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from inboxsort.config import PathsConfig
from inboxsort.db import STATUS_PENDING, Database, Image
from inboxsort.files import temp_name
from inboxsort.intake.filing import entry_for
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.recovery import recover
from tests.helpers.filedrows import classified, write_file

DEAD_PID = 4_194_303  # the daemon that was killed: any pid counts


def pending_move(ledger: Ledger, paths: PathsConfig, name: str, folder: Path) -> Path:
    """A file in the inbox and its pending row naming folder/name: the state before the copy."""
    item = classified(paths.inbox, name)
    dest = folder / name
    ledger.plan([entry_for(item, dest, status="filed", duplicate_of=None)])
    return dest


def half_copy(dest: Path, pid: int = DEAD_PID) -> Path:
    """What a copy across filesystems killed mid-way leaves: its first bytes, as its temp name."""
    return write_file(dest.parent / temp_name(dest.name, pid), b"\xff\xd8\xff\xe0 half a JPEG")


def rows(db: Database) -> list[Image]:
    with db.session() as session:
        return list(session.scalars(select(Image)))


def test_a_half_copy_of_an_interrupted_move_is_removed(db, paths):
    ledger = Ledger(db)
    dest = pending_move(ledger, paths, "cat.jpg", paths.library / "cats")
    failed_dest = pending_move(ledger, paths, "broken.jpg", paths.failed)
    temps = [half_copy(dest), half_copy(failed_dest, pid=12)]

    report = recover(ledger, paths)

    assert report.temp_removed == 2 and report.requeued == 2
    assert not any(t.exists() for t in temps)
    assert sorted(p.name for p in paths.inbox.iterdir()) == ["broken.jpg", "cat.jpg"]
    assert [r.status for r in rows(db)] == [STATUS_PENDING] * 2


def test_a_users_file_named_like_a_temporary_copy_survives(db, paths):
    ledger = Ledger(db)
    dest = pending_move(ledger, paths, "cat.jpg", paths.library / "cats")
    mine = [
        write_file(paths.library / "cats" / ".inboxsort-note.tmp", b"my notes"),
        write_file(paths.failed / ".inboxsort-note.tmp", b"my notes"),
        write_file(paths.duplicates / "deep" / ".inboxsort-1-x.jpg.tmp", b"mine"),
        # Named as the daemon would name a copy, but for no move under way: not its own.
        write_file(paths.library / "cats" / temp_name("dog.jpg", 77), b"mine too"),
        write_file(paths.library / "dogs" / temp_name("cat.jpg", 77), b"mine too"),
    ]
    ours = half_copy(dest)

    report = recover(ledger, paths)

    assert report.temp_removed == 1 and not ours.exists()
    assert all(path.is_file() for path in mine)
    assert (paths.library / "cats" / ".inboxsort-note.tmp").read_bytes() == b"my notes"


def test_with_no_row_pending_nothing_is_removed(db, paths):
    user_file = write_file(paths.library / "cats" / temp_name("cat.jpg", 4242), b"mine")
    assert recover(Ledger(db), paths).temp_removed == 0
    assert user_file.read_bytes() == b"mine"
