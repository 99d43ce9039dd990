"""A folder tree deeper than PATH_MAX in the inbox, and folders that cannot be read: the scan goes
on past them, tells each one once, and files what it can reach.

The deep tree is built the only way it can be, one folder at a time relative to the last one's
descriptor (its full path is longer than PATH_MAX, 4096 bytes). Real folders; the unreadable
one is read by an unprivileged process (nobody, when the tests run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxsort.config import DEFAULT_IGNORE
from inboxsort.files import Ignore, scan

DEPTH = 20
COMPONENT = 250  # 20 x 251 bytes: more than PATH_MAX (4096)
NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]


def make_deep_tree(root: Path, data: bytes, name: str = "deep.jpg") -> Path:
    """root/<20 folders of 250 bytes>/name holding `data`; returns the file's (too long) path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = []
    try:
        for level in range(DEPTH):
            part = f"{level:02d}-".ljust(COMPONENT, "d")
            os.mkdir(part, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            parts.append(part)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        try:
            os.write(out, data)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    path = root.joinpath(*parts, name)
    assert len(os.fsencode(path)) > os.pathconf(root, "PC_PATH_MAX")
    return path


def read_deep(path: Path, root: Path) -> bytes:
    """The bytes of a file below root whose full path is too long to open by name."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in path.relative_to(root).parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open(path.name, os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(out, 1 << 20)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def remove_deep(root: Path) -> None:
    """rmtree works relative to descriptors (shutil's fd-based rmtree): depth is no limit."""
    shutil.rmtree(root, ignore_errors=True)


def test_a_tree_deeper_than_path_max_is_scanned_to_its_bottom(tmp_path: Path) -> None:
    """Before: os.scandir raised ENAMETOOLONG out of the scan, killing the intake thread."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "top.jpg").write_bytes(b"top")
    deep = make_deep_tree(inbox, b"deep")

    found = list(scan(inbox, recursive=True, ignore=Ignore(inbox, DEFAULT_IGNORE)))

    assert found == [deep, inbox / "top.jpg"]  # sorted by name: "00-ddd..." < "top.jpg"
    assert read_deep(found[0], inbox) == b"deep"
    remove_deep(inbox)


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A folder outside pytest's 0700 temp tree, so an unprivileged process can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="inboxsort-unreadable-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


SCAN_TWICE = """
import logging, sys
from pathlib import Path
from inboxsort.files import Ignore, ScanErrors, scan
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
root = Path(sys.argv[1])
errors = ScanErrors()
for _ in range(2):  # a rescan: the same folder is not reported again
    found = list(scan(root, recursive=True, ignore=Ignore(root, []), on_error=errors))
    print("found", *[p.relative_to(root).as_posix() for p in found])
"""


def test_an_unreadable_folder_is_reported_once_and_the_scan_goes_on(reachable_dir: Path) -> None:
    inbox = reachable_dir / "inbox"
    for rel in ("a.jpg", "locked/secret.jpg", "z/b.jpg"):
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(b"x")
    (inbox / "locked").chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads every folder: scan as nobody instead
        assert shutil.which("setpriv"), "running as root needs setpriv (util-linux)"
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        for entry in (inbox, inbox / "a.jpg", inbox / "z", inbox / "z" / "b.jpg"):
            entry.chmod(0o755)
    result = subprocess.run(
        [*prefix, sys.executable, "-c", SCAN_TWICE, str(inbox)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    (inbox / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["found a.jpg z/b.jpg"] * 2
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    locked = inbox / "locked"
    assert warnings == [f"WARNING cannot scan {locked}: Permission denied; skipping that folder"]
