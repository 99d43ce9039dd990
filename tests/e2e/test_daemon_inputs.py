"""Bad input through the running daemon: each lands in failed/ with its reason, nothing is lost.

Every kind is dropped into the inbox of one running daemon (real watchdog, real SQLite, the tiny
model); afterwards a good image must still be filed, so the daemon has survived them all.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inboxsort.db import STATUS_FAILED, STATUS_FILED
from tests.helpers.daemonkit import (
    READY_SECONDS,
    Site,
    make_site,
    running_daemon,
    sha256_of,
    wait_for,
)
from tests.helpers.imagegen import HTML_BYTES, TEXT_BYTES, png_declaring, random_bytes

# The start of an ISO-BMFF HEIC file (an iPhone photo): a real format Pillow cannot read.
HEIC_BYTES = (
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    + b"\x00\x00\x00\x2cmeta\x00\x00\x00\x00"
    + bytes(range(256)) * 8
)
NON_UTF8_NAME = b"caf\xe9.jpg"  # Latin-1 "café.jpg", as old cameras and SMB shares write it
NON_UTF8_SHOWN = "caf\\xe9.jpg"  # how the daemon names it in failed/ and in the database


@dataclass(frozen=True)
class Bad:
    """One bad input: its name in the inbox, how to make it, the reason its row must give."""

    name: str
    make: Callable[[Path], None]
    reason: str  # the error text, or its start when it ends with "…"
    hashed: bool = True  # read and hashed (False: never opened as an image)


def write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def reason_matches(error: str | None, reason: str) -> bool:
    if error is None:
        return False
    return error.startswith(reason[:-1]) if reason.endswith("…") else error == reason


def bad_inputs(good_jpeg: Path) -> list[Bad]:
    data = good_jpeg.read_bytes()
    return [
        Bad("empty.jpg", write(b""), "empty file (0 bytes)"),
        Bad(
            "truncated.jpg",
            write(data[: len(data) // 2]),
            "cannot decode: image file is truncated…",
        ),
        Bad("notes.jpg", write(TEXT_BYTES), "not an image: text"),
        Bad("download.jpg", write(b"\n  " + HTML_BYTES), "not an image: HTML"),
        Bad("iphone.heic", write(HEIC_BYTES), "not an image Pillow can read"),
        Bad("noise.jpg", write(random_bytes()), "not an image Pillow can read"),
        # Over Pillow's limit once (refused by inboxsort's check) and twice (by Pillow's own).
        Bad("bomb.png", write(png_declaring(10000, 10000)), "decompression bomb: 10000x10000…"),
        Bad("bomb2.png", write(png_declaring(20000, 20000)), "decompression bomb: Image size…"),
        # Cannot be read as an image file, for root too (chmod 000 does not stop root).
        Bad("pipe.jpg", lambda path: os.mkfifo(path), "not a regular file", hashed=False),
    ]


def make_non_utf8(inbox: Path, data: bytes) -> None:
    fd = os.open(os.fsencode(inbox) + b"/" + NON_UTF8_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def assert_failed(site: Site, name: str, reason: str, *, hashed: bool = True):
    row = site.row_by_name(name)
    assert row.status == STATUS_FAILED, row
    assert reason_matches(row.error, reason), (name, row.error)
    assert Path(row.path) == site.failed / name
    assert os.path.lexists(row.path)
    assert row.dest_path is None and row.filed_at is not None
    assert row.label is None and row.score is None and row.model_version is None
    assert (row.sha256 is not None) == hashed
    return row


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # bomb.png, refused
def test_every_kind_of_bad_input_fails_with_its_reason_and_the_daemon_goes_on(
    new_site, validation_jpegs, tmp_path
):
    # An empty or truncated file fails only once it has been still for writer_timeout_seconds
    # (its writer may be appending); a short wait keeps the test quick without changing that.
    site = new_site(watch={"writer_timeout_seconds": 3.0})
    good = validation_jpegs["cats"][20]
    kinds = bad_inputs(good)
    contents = {}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = Path(shutil.copyfile(validation_jpegs["dogs"][20], elsewhere / "target.jpg"))
    target_before = target.stat()
    with running_daemon(site) as daemon:
        wait_for(daemon.intake.idle, "the start-up scan to finish")
        for bad in kinds:
            bad.make(site.inbox / bad.name)
            if bad.hashed:
                contents[bad.name] = (site.inbox / bad.name).read_bytes()
        (site.inbox / "link.jpg").symlink_to(target)
        make_non_utf8(site.inbox, target.read_bytes())
        count = len(kinds) + 2
        wait_for(lambda: site.settled(count), "every bad input failed", describe=site.describe)
        # Still serving: a good image dropped afterwards is classified and filed.
        shutil.copyfile(good, site.inbox / "after.jpg")
        wait_for(lambda: site.settled(count + 1), "after.jpg filed", describe=site.describe)
        assert all(t.is_alive() for t in daemon._threads)

    for bad in kinds:
        row = assert_failed(site, bad.name, bad.reason, hashed=bad.hashed)
        if bad.hashed:  # the very bytes, under the same name
            assert Path(row.path).read_bytes() == contents[bad.name]
            assert row.sha256 == sha256_of(Path(row.path))
    assert stat.S_ISFIFO(os.lstat(site.failed / "pipe.jpg").st_mode)

    # The symlink is moved aside as a link; its target is neither moved, changed nor read.
    link = assert_failed(site, "link.jpg", "symbolic link (not followed)", hashed=False)
    assert Path(link.path).is_symlink() and Path(link.path).readlink() == target
    after = target.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        target_before.st_ino,
        target_before.st_size,
        target_before.st_mtime_ns,
    )
    assert sha256_of(target) == sha256_of(validation_jpegs["dogs"][20])

    # A name that is not UTF-8 is filed under its escaped form, its bytes intact.
    odd = assert_failed(site, NON_UTF8_SHOWN, "name is not valid UTF-8", hashed=False)
    assert Path(odd.path).read_bytes() == target.read_bytes()
    assert odd.source_path == str(site.inbox / NON_UTF8_SHOWN)

    row = site.row_by_name("after.jpg")
    assert row.status == STATUS_FILED and Path(row.path).parent == site.library / row.label
    # Nothing lost, nothing left: one entry per input, each where its row says.
    assert site.inbox_files() == []
    assert site.outputs() == sorted(Path(r.path) for r in site.rows())


NOBODY = 65534


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A fresh folder outside pytest's 0700 temp tree, so another user's daemon can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="inboxsort-unreadable-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_file_fails_with_the_permission_error(
    reachable_dir, tiny_model, config_writer, spawn, validation_jpegs
):
    """chmod 000 stops every user but root; run as root, the daemon runs as nobody instead."""
    site = make_site(reachable_dir / "site", tiny_model, config_writer)
    data = validation_jpegs["cats"][21].read_bytes()
    prefix: list[str] = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), (
            "running as root needs setpriv (util-linux) to drop to nobody"
        )
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        reachable_dir.chmod(0o755)
        for entry in [reachable_dir, *reachable_dir.rglob("*")]:
            os.lchown(entry, NOBODY, NOBODY)
    # Created by the test's user with mode 000 from the start: the daemon's user cannot open it
    # (as root, it is root's file and the daemon is nobody; otherwise mode 000 stops its owner).
    fd = os.open(site.inbox / "locked.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    daemon = spawn(site, "--once", prefix=prefix)
    assert daemon.wait(READY_SECONDS) == 0, daemon.log()
    row = assert_failed(site, "locked.jpg", "cannot read: Permission denied", hashed=False)
    assert site.inbox_files() == []
    assert Path(row.path).read_bytes() == data  # this test's user can still read it
