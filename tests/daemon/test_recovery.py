"""Recovery from each state kill -9 can leave a filing in, for plain and non-UTF-8 names.

The states are made by hand, step by step as move_no_clobber takes them (plan, link, unlink),
on real files and a real SQLite file; the kill -9 tests aim at the same windows at random.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from inboxsort.config import FilingConfig, PathsConfig
from inboxsort.daemon.filing import Filer
from inboxsort.daemon.ledger import Entry, Ledger, display_path
from inboxsort.daemon.records import Claim, Decoded
from inboxsort.db import STATUS_FILED, STATUS_PENDING, Database, Image, open_database, utcnow

NAMES = [b"cat.jpg", b"caf\xe9.jpg"]  # the second: Latin-1, as old cameras and SMB shares write


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'recovery.db'}")
    yield database
    database.close()


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    paths = PathsConfig(
        inbox=tmp_path / "inbox",
        library=tmp_path / "library",
        failed=tmp_path / "failed",
        models=tmp_path / "models",
        duplicates=tmp_path / "duplicates",
    )
    for folder in (paths.inbox, paths.library / "cats", paths.failed, paths.duplicates):
        folder.mkdir(parents=True)
    return paths


def in_inbox(paths: PathsConfig, name: bytes) -> Decoded:
    """A photo under the raw name `name`, claimed and labelled cats."""
    path = Path(os.fsdecode(os.fsencode(paths.inbox) + b"/" + name))
    path.write_bytes(b"photo " + name * 40)
    st = path.stat()
    claim = Claim(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, False, utcnow())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Decoded(claim, digest, np.zeros((2, 2, 3), np.uint8), None, "cats", 0.9, 1)


def planned(ledger: Ledger, paths: PathsConfig, item: Decoded) -> Path:
    """Step 1 of filing: the pending row naming the destination; returns the destination."""
    claim = item.claim
    dest = paths.library / "cats" / display_path(Path(claim.path.name))
    entry = Entry(
        source=claim.path,
        dest=dest,
        status=STATUS_FILED,
        sha256=item.sha256,
        size=claim.size,
        device=claim.device,
        inode=claim.inode,
        received_at=claim.received_at,
        label="cats",
        score=0.9,
        model_version=1,
    )
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
    item = in_inbox(paths, name)
    planned(ledger, paths, item)

    assert ledger.recover(paths)["requeued"] == 1
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
    item = in_inbox(paths, name)
    dest = planned(ledger, paths, item)
    os.link(item.claim.path, dest)
    if unlinked:
        item.claim.path.unlink()

    assert ledger.recover(paths)["completed"] == 1
    [row] = rows(db)
    assert (row.status, row.path, row.dest_path) == (STATUS_FILED, str(dest), None)
    assert everything_on_disk(paths) == [dest]
    assert list(paths.inbox.iterdir()) == []
