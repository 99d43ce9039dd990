"""Recovery from each state kill -9 can leave a filing in, for plain and non-UTF-8 names.

The states are made by hand, step by step as move_no_clobber takes them (plan, link, unlink),
on real files and a real SQLite file; the kill -9 tests aim at the same windows at random.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxsort.config import FilingConfig, PathsConfig
from inboxsort.db import STATUS_FILED, STATUS_PENDING, Database, Image
from inboxsort.intake.filing import Filer, entry_for
from inboxsort.intake.ledger import Ledger, display_path
from inboxsort.intake.records import Decoded
from inboxsort.intake.recovery import recover
from tests.helpers.filedrows import classified

NAMES = [b"cat.jpg", b"caf\xe9.jpg"]  # the second: Latin-1, as old cameras and SMB shares write


def planned(ledger: Ledger, paths: PathsConfig, item: Decoded) -> Path:
    """Step 1 of filing: the pending row naming the destination; returns the destination."""
    dest = paths.library / "cats" / display_path(Path(item.claim.path.name))
    entry = entry_for(item, dest, status=STATUS_FILED, duplicate_of=None)
    ledger.plan([entry])
    return dest


def rows(db: Database) -> list[Image]:
    with db.session() as session:
        return list(session.scalars(select(Image)))


def everything_on_disk(paths: PathsConfig) -> list[Path]:
    """Every file in the inbox and in the folders images are filed to."""
    folders = (paths.inbox, paths.library, paths.failed, paths.duplicates)
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", NAMES, ids=["plain", "not-utf8"])
def test_killed_after_the_plan_the_file_is_filed_again_under_the_same_row(db, paths, name):
    ledger = Ledger(db)
    item = classified(paths.inbox, name)
    planned(ledger, paths, item)

    assert recover(ledger, paths).requeued == 1
    [row] = rows(db)
    assert (row.status, row.dest_path) == (STATUS_PENDING, None)
    assert item.claim.path.exists()

    # The start-up scan finds the file again; filing it reuses the row.
    Filer(paths, FilingConfig(), ledger).file_batch([item])
    [row] = rows(db)
    assert row.status == STATUS_FILED
    assert everything_on_disk(paths) == [Path(row.path)]


@pytest.mark.parametrize("name", NAMES, ids=["plain", "not-utf8"])
@pytest.mark.parametrize("unlinked", [False, True], ids=["linked", "moved"])
def test_killed_mid_move_the_file_ends_in_one_place_with_one_row(db, paths, name, unlinked):
    ledger = Ledger(db)
    item = classified(paths.inbox, name)
    dest = planned(ledger, paths, item)
    os.link(item.claim.path, dest)
    if unlinked:
        item.claim.path.unlink()

    assert recover(ledger, paths).completed == 1
    [row] = rows(db)
    assert (row.status, row.path, row.dest_path) == (STATUS_FILED, str(dest), None)
    assert everything_on_disk(paths) == [dest]
    assert list(paths.inbox.iterdir()) == []


def test_an_escape_typed_into_a_real_name_never_points_recovery_at_another_file(db, paths):
    ledger = Ledger(db)
    item = classified(paths.inbox, "a\\xe9.jpg")  # valid UTF-8, with a real backslash
    dest = planned(ledger, paths, item)
    os.link(item.claim.path, dest)
    item.claim.path.unlink()
    other = classified(paths.inbox, b"a\xe9.jpg", data=b"another photo" * 50)  # Latin-1

    assert recover(ledger, paths).completed == 1
    assert other.claim.path.read_bytes() == b"another photo" * 50
    [row] = rows(db)
    assert (row.status, row.path) == (STATUS_FILED, str(dest))


def test_a_new_file_that_took_the_inbox_name_after_the_move_is_left_for_the_scan(db, paths):
    ledger = Ledger(db)
    item = classified(paths.inbox, "cat.jpg")
    dest = planned(ledger, paths, item)
    os.link(item.claim.path, dest)
    item.claim.path.unlink()
    newcomer = classified(paths.inbox, "cat.jpg", data=b"a different photo" * 50)

    assert recover(ledger, paths).completed == 1
    assert newcomer.claim.path.read_bytes() == b"a different photo" * 50
    [row] = rows(db)
    assert (row.status, row.path) == (STATUS_FILED, str(dest))
