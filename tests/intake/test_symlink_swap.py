"""A folder swapped for a symbolic link while a file is on its way: nothing outside the configured
folders is read, moved or removed, and the claimed file is still accounted for.

Each race is made deterministic by doing the attacker's step by hand between two of the
daemon's: claim (and read), then `mv inbox/sub inbox/sub.old; ln -s OUTSIDE inbox/sub`, then
the daemon's next step. Real files, real SQLite.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from inboxsort.config import FilingConfig, PathsConfig
from inboxsort.db import SOURCE_LABEL, STATUS_DELETED, STATUS_FILED, Database, Image, utcnow
from inboxsort.errors import InboxsortError
from inboxsort.files import Ignore, scan
from inboxsort.intake.filing import Filer, entry_for
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Claim, Decoded
from inboxsort.intake.recovery import recover
from inboxsort.library.relabel import relabel
from tests.helpers.filedrows import CLASSES, classified, file_image

SECRET = b"a file the daemon must never touch" * 20


def claimed(path: Path) -> Decoded:
    """The file at path as the scan finds it again: claimed, hashed, classified as a cat."""
    claim = Claim.from_stat(path, os.lstat(path), received_at=utcnow())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pixels = np.zeros((2, 2, 3), np.uint8)
    return Decoded(claim, digest, pixels, None, label="cats", score=0.9, model_version=1)


def rows(db: Database) -> list[Image]:
    with db.session() as session:
        return list(session.scalars(select(Image).order_by(Image.id)))


def outside_file(tmp_path: Path, name: str, data: bytes = SECRET) -> Path:
    """A file in a folder outside every configured one, as an attacker would aim at."""
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def swap_for_link(folder: Path, target: Path) -> Path:
    """`mv folder folder.old; ln -s target folder`: returns where the folder's files are now."""
    moved = folder.with_name(folder.name + ".old")
    folder.rename(moved)
    folder.symlink_to(target, target_is_directory=True)
    return moved


def untouched(path: Path, before: os.stat_result, data: bytes = SECRET) -> bool:
    after = os.lstat(path)
    same = (after.st_ino, after.st_nlink, after.st_mtime_ns) == (
        before.st_ino,
        before.st_nlink,
        before.st_mtime_ns,
    )
    return same and path.read_bytes() == data


def library_files(paths: PathsConfig) -> list[Path]:
    return sorted(p for p in paths.library.rglob("*") if not p.is_dir())


def test_a_folder_swapped_after_the_claim_redirects_no_move(db, paths, tmp_path):
    """The issue's recipe: the daemon must not file OUTSIDE/victim.jpg into the library."""
    sub = paths.inbox / "sub"
    sub.mkdir()
    item = classified(sub, "victim.jpg")  # claimed, read, hashed and classified
    data = item.claim.path.read_bytes()
    secret = outside_file(tmp_path, "victim.jpg")
    before = os.lstat(secret)
    moved = swap_for_link(sub, secret.parent)

    outcome = Filer(paths, FilingConfig(), Ledger(db)).file_batch([item])

    assert untouched(secret, before)
    assert library_files(paths) == []
    # Accounted for: the row says why nothing was filed, and the file is where its folder went,
    # in the inbox, where the next scan finds it (the symbolic link is a file of its own).
    assert (outcome.filed, outcome.vanished, outcome.retry) == (0, 1, [])
    [row] = rows(db)
    assert row.status == STATUS_DELETED and row.dest_path is None
    assert "no longer at its inbox path" in row.error and "symbolic link" in row.error
    assert (moved / "victim.jpg").read_bytes() == data
    found = list(scan(paths.inbox, recursive=True, ignore=Ignore(paths.inbox, [])))
    assert found == [sub, moved / "victim.jpg"]
    # ...and files it, under a row of its own.
    Filer(paths, FilingConfig(), Ledger(db)).file_batch([claimed(moved / "victim.jpg")])
    assert [r.status for r in rows(db)] == [STATUS_DELETED, STATUS_FILED]
    assert (paths.library / "cats" / "victim.jpg").read_bytes() == data


def test_another_file_put_at_the_claimed_name_is_not_filed_in_its_place(db, paths):
    """Only the claimed inode moves: a file renamed over its name waits for its own claim."""
    item = classified(paths.inbox, "cat.jpg")
    newcomer = paths.inbox / "new.jpg"
    newcomer.write_bytes(b"another photo" * 40)
    newcomer.rename(item.claim.path)

    outcome = Filer(paths, FilingConfig(), Ledger(db)).file_batch([item])

    assert outcome.filed == 0 and library_files(paths) == []
    assert item.claim.path.read_bytes() == b"another photo" * 40
    [row] = rows(db)
    assert row.status == STATUS_DELETED and "another file has taken its name" in row.error


def test_reading_through_a_swapped_folder_reads_nothing_outside(paths, tmp_path):
    """Decoding opens the claimed file through the inbox's folders, never through a link."""
    from inboxsort.intake.decode import read_and_decode

    sub = paths.inbox / "sub"
    sub.mkdir()
    claimed = sub / "victim.jpg"
    claimed.write_bytes(b"x" * len(SECRET))
    claim = Claim.from_stat(claimed, os.lstat(claimed), received_at=utcnow())
    # Same size and mtime as the claimed file: only its folder tells them apart.
    secret = outside_file(tmp_path, "victim.jpg")
    os.utime(secret, ns=(claim.mtime_ns, claim.mtime_ns))
    swap_for_link(sub, secret.parent)

    assert read_and_decode(claim, 32, root=paths.inbox) is None  # gone from that path


def test_a_class_folder_that_is_a_symlink_out_of_the_library_gets_nothing(db, paths, tmp_path):
    """The destination is reached through the library's folders too: the image waits."""
    cats = paths.library / "cats"
    cats.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    cats.symlink_to(outside, target_is_directory=True)
    item = classified(paths.inbox, "cat.jpg")

    outcome = Filer(paths, FilingConfig(), Ledger(db)).file_batch([item])

    assert list(outside.iterdir()) == []
    assert outcome.retry == [item] and item.claim.path.is_file()


def test_recovery_never_removes_a_file_outside_the_inbox(db, paths, tmp_path):
    """Killed between link and unlink, then the folder swapped for a link to a same-content file:
    recovery removes the extra inbox name only through the inbox's own folders.
    """
    sub = paths.inbox / "sub"
    sub.mkdir()
    item = classified(sub, "victim.jpg", data=SECRET)
    ledger = Ledger(db)
    dest = paths.library / "cats" / "victim.jpg"
    ledger.plan([entry_for(item, dest, status=STATUS_FILED, duplicate_of=None)])
    os.link(item.claim.path, dest)  # the crash: linked, not yet unlinked
    secret = outside_file(tmp_path, "victim.jpg")  # same bytes: the attacker planted both
    before = os.lstat(secret)
    swap_for_link(sub, secret.parent)

    assert recover(ledger, paths).completed == 1

    assert untouched(secret, before)
    [row] = rows(db)
    assert (row.status, row.path) == (STATUS_FILED, str(dest))
    assert dest.read_bytes() == SECRET


def test_relabel_never_moves_a_file_out_of_the_library(db, library, tmp_path):
    image = file_image(db, library / "cats" / "a.jpg", "cats")
    dogs = library / "dogs"
    dogs.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    dogs.symlink_to(outside, target_is_directory=True)

    with pytest.raises(InboxsortError, match="cannot move"):
        relabel(
            db,
            image_path=library / "cats" / "a.jpg",
            new_label="dogs",
            source=SOURCE_LABEL,
            library=library,
            classes=CLASSES,
        )

    assert list(outside.iterdir()) == []
    assert (library / "cats" / "a.jpg").is_file()
    with db.session() as session:
        row = session.get(Image, image)
        assert row is not None and (row.label, row.path) == (
            "cats",
            str(library / "cats" / "a.jpg"),
        )
