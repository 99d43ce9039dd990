"""Names near NAME_MAX (255 bytes): every name the daemon makes fits, so none is retried forever.

A second `<251-byte stem>.jpg` needs `… (1).jpg`; a copy across filesystems needs a temporary
`.inboxsort-PID-<name>.tmp`; a name that is not UTF-8 is shown with \\xNN escapes, four bytes
for one. Real files on a real filesystem (and /dev/shm for the copy across filesystems).
"""

from __future__ import annotations

import errno
import os
import re
from itertools import islice
from pathlib import Path

import pytest
from sqlalchemy import select

from inboxsort.config import FilingConfig
from inboxsort.db import STATUS_FILED, Image
from inboxsort.files import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    candidate_names,
    free_name,
    is_transient,
    move_no_clobber,
    temp_name,
)
from inboxsort.intake.filing import Filer
from inboxsort.intake.ledger import Ledger
from tests.helpers.filedrows import classified

NAME_MAX = 255
PID_MAX = 4_194_304  # /proc/sys/kernel/pid_max can go no higher on Linux
LONG = "x" * 251 + ".jpg"  # 255 bytes: the longest name a file can have


def size(name: str) -> int:
    return len(os.fsencode(name))


@pytest.mark.parametrize(
    "name",
    [LONG, "é" * 125 + "e.jpg", "猫" * 83 + ".jpeg", "x" * 255, "a." + "b" * 253],
    ids=["ascii", "two-byte", "three-byte", "no-extension", "long-extension"],
)
def test_every_candidate_name_fits_and_keeps_the_extension_and_the_number(name: str) -> None:
    names = list(islice(candidate_names(name), 12_000))
    assert names[0] == name
    assert all(size(n) <= NAME_MAX for n in names)
    assert len(set(names)) == len(names)
    ext = name[name.rfind(".") :] if "." in name[1:] and size(name) - name.rfind(".") < 200 else ""
    for i, candidate in enumerate(names[1:], start=1):
        assert candidate.endswith(f" ({i}){ext}"), candidate
        candidate.encode("utf-8")  # cut between characters, never inside one
        assert name.startswith(candidate.removesuffix(f" ({i}){ext}"))


def test_a_name_longer_than_name_max_is_shortened_from_the_first_candidate() -> None:
    shown = "caf\\xe9" * 60 + ".jpg"  # how display_path shows 60 Latin-1 bytes, 4 chars each
    first = next(candidate_names(shown))
    assert size(first) <= NAME_MAX and first.endswith(".jpg")
    assert not re.search(r"\\x?[0-9a-f]?\.jpg$", first)  # no escape cut in half


@pytest.mark.parametrize("dest", [LONG, "é" * 127 + ".j", "short.jpg"])
def test_the_temporary_name_of_any_destination_fits(dest: str) -> None:
    for pid in (1, 4242, PID_MAX):
        temp = temp_name(dest, pid)
        assert size(temp) <= NAME_MAX
        assert temp.startswith(f"{TEMP_PREFIX}{pid}-") and temp.endswith(TEMP_SUFFIX)
        temp.encode("utf-8")
    assert temp_name("short.jpg", 7) == f"{TEMP_PREFIX}7-short.jpg{TEMP_SUFFIX}"


def test_a_second_file_with_a_255_byte_name_gets_a_shortened_free_name(tmp_path: Path) -> None:
    (tmp_path / LONG).write_bytes(b"first")
    second = free_name(tmp_path, LONG)
    assert second.name == "x" * 247 + " (1).jpg" and size(second.name) == NAME_MAX
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / LONG
    src.write_bytes(b"second")
    move_no_clobber(src, second)
    assert second.read_bytes() == b"second" and (tmp_path / LONG).read_bytes() == b"first"


def test_a_255_byte_name_moves_across_filesystems(tmp_path: Path, other_fs: Path) -> None:
    src = tmp_path / LONG
    src.write_bytes(b"across")
    dest = other_fs / "library" / LONG
    move_no_clobber(src, dest)
    assert dest.read_bytes() == b"across" and not src.exists()
    assert [p.name for p in dest.parent.iterdir()] == [LONG]  # no temporary copy left


def test_the_filer_files_two_255_byte_names_at_once(db, paths) -> None:
    """Before: the second was retried forever (ENAMETOOLONG, taken for a passing error)."""
    for folder in ("a", "b"):
        (paths.inbox / folder).mkdir()
    items = [classified(paths.inbox / f, LONG, data=f.encode() * 99) for f in ("a", "b")]
    outcome = Filer(paths, FilingConfig(), Ledger(db)).file_batch(items)
    assert (outcome.filed, outcome.retry) == (2, [])
    with db.session() as session:
        rows = list(session.scalars(select(Image).order_by(Image.id)))
    assert [r.status for r in rows] == [STATUS_FILED] * 2
    assert [Path(r.path).name for r in rows] == [LONG, "x" * 247 + " (1).jpg"]


def test_the_filer_files_a_long_name_that_is_not_utf8(db, paths) -> None:
    """60 Latin-1 bytes and more become 4 characters each in the shown name: it is cut to fit."""
    item = classified(paths.inbox, b"\xe9" * 200 + b".jpg")
    outcome = Filer(paths, FilingConfig(), Ledger(db)).file_batch([item])
    assert (outcome.filed, outcome.retry) == (1, [])
    [filed] = list((paths.library / "cats").iterdir())
    assert size(filed.name) <= NAME_MAX and filed.name.endswith(".jpg")


def test_a_name_too_long_is_never_a_passing_error() -> None:
    assert not is_transient(OSError(errno.ENAMETOOLONG, "File name too long"))
