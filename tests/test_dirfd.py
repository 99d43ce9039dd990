"""Folders reached one component at a time from a root, never through a symbolic link; removals
and renames that never hit the wrong file. Real folders, real links.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inboxsort.dirfd import (
    PathChanged,
    folder_fd,
    identity,
    lexists_under,
    lstat_under,
    open_under,
    rename_no_replace,
    unlink_if,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "a" / "b").mkdir(parents=True)
    (tmp_path / "root" / "a" / "b" / "f.jpg").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f.jpg").write_bytes(b"outside")
    return tmp_path / "root"


def test_a_path_below_the_root_is_reached(root: Path) -> None:
    path = root / "a" / "b" / "f.jpg"
    assert identity(lstat_under(root, path)) == identity(os.lstat(path))
    fd = open_under(root, path, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"inside"
    finally:
        os.close(fd)


@pytest.mark.parametrize("link", ["a", "a/b"])
def test_a_folder_that_is_a_symbolic_link_is_never_followed(root: Path, link: str) -> None:
    real = root / link
    real.rename(real.with_name(real.name + ".old"))
    real.symlink_to(root.parent / "outside", target_is_directory=True)
    target = root / "a" / "b" / "f.jpg" if link == "a/b" else root / "a" / "f.jpg"
    assert target.read_bytes() == b"outside"  # what a plain path would reach
    with pytest.raises(PathChanged):
        lstat_under(root, target)
    with pytest.raises(PathChanged):
        open_under(root, target, os.O_RDONLY)
    assert not lexists_under(root, target)


def test_the_last_name_is_never_followed_either(root: Path) -> None:
    link = root / "a" / "link.jpg"
    link.symlink_to(root.parent / "outside" / "f.jpg")
    with pytest.raises(OSError, match="Too many levels"):
        open_under(root, link, os.O_RDONLY)


def test_paths_outside_the_root_are_refused(root: Path) -> None:
    with pytest.raises(PathChanged):
        lstat_under(root, root.parent / "outside" / "f.jpg")
    with pytest.raises(PathChanged):
        lstat_under(root, root / ".." / "outside" / "f.jpg")


def test_folders_are_made_on_the_way_only_when_asked(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        folder_fd(root, root / "new" / "deeper").__enter__()
    with folder_fd(root, root / "new" / "deeper", create=True) as fd:
        assert os.fstat(fd).st_ino == (root / "new" / "deeper").stat().st_ino


def test_unlink_if_leaves_a_name_that_names_another_file(root: Path) -> None:
    path = root / "a" / "b" / "f.jpg"
    before = identity(os.lstat(path))
    os.link(path, root / "kept.jpg")  # keeps the inode alive: a newcomer gets another one
    path.unlink()
    path.write_bytes(b"a newcomer")
    with folder_fd(root, path.parent) as fd:
        assert not unlink_if(fd, path.name, before)
        assert path.read_bytes() == b"a newcomer"
        assert unlink_if(fd, path.name, identity(os.lstat(path)))
    assert not path.exists()


def test_rename_no_replace_never_replaces(root: Path) -> None:
    folder = root / "a" / "b"
    (folder / "g.jpg").write_bytes(b"taken")
    with folder_fd(root, folder) as fd:
        with pytest.raises(FileExistsError):
            rename_no_replace(fd, "f.jpg", fd, "g.jpg")
        assert (folder / "g.jpg").read_bytes() == b"taken"
        rename_no_replace(fd, "f.jpg", fd, "h.jpg")
    assert (folder / "h.jpg").read_bytes() == b"inside" and not (folder / "f.jpg").exists()
