"""No-clobber moves on real files: one filesystem, across two (tmp vs /dev/shm), and symlinks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from inboxsort import files as moves
from inboxsort.dirfd import folder_fd
from inboxsort.files import (
    MAX_SUFFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    _copy_across,
    candidate_names,
    free_name,
    move_no_clobber,
    same_file,
)

OLD_MTIME_NS = 1_500_000_000_123_456_789


def make_file(path: Path, data: bytes = b"jpeg bytes", mtime_ns: int = OLD_MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def copy_across(src: Path, dest: Path) -> None:
    """move_no_clobber's copy path, run on one filesystem: _copy_across on the open folders."""
    with folder_fd(src.parent, src.parent) as src_fd, folder_fd(dest.parent, dest.parent) as fd:
        st = os.stat(src.name, dir_fd=src_fd, follow_symlinks=False)
        _copy_across(src_fd, src, fd, dest, st)


def temp_leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))


# --------------------------------------------------------------------------------------------
# candidate_names and free_name
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("cat.jpg", "cat (1).jpg", "cat (2).jpg"),
        (".hidden", ".hidden (1)", ".hidden (2)"),
        ("README", "README (1)", "README (2)"),
        ("cat.1.jpg", "cat.1 (1).jpg", "cat.1 (2).jpg"),
        ("archive.tar.gz", "archive.tar (1).gz", "archive.tar (2).gz"),
        (".hidden.jpg", ".hidden (1).jpg", ".hidden (2).jpg"),
        ("with space.png", "with space (1).png", "with space (2).png"),
    ],
)
def test_candidate_names(name: str, first: str, second: str) -> None:
    names = candidate_names(name)
    assert [next(names), next(names), next(names)] == [name, first, second]


def test_candidate_names_are_unique_and_bounded() -> None:
    names = list(candidate_names("cat.jpg"))
    assert len(names) == MAX_SUFFIX
    assert len(set(names)) == MAX_SUFFIX
    assert names[-1] == f"cat ({MAX_SUFFIX - 1}).jpg"


def test_free_name_is_the_name_itself_when_free(tmp_path: Path) -> None:
    assert free_name(tmp_path, "cat.jpg") == tmp_path / "cat.jpg"
    # A folder that does not exist yet has every name free.
    assert free_name(tmp_path / "new", "cat.jpg") == tmp_path / "new" / "cat.jpg"


def test_free_name_skips_taken_names(tmp_path: Path) -> None:
    make_file(tmp_path / "cat.jpg")
    assert free_name(tmp_path, "cat.jpg") == tmp_path / "cat (1).jpg"
    make_file(tmp_path / "cat (1).jpg")
    assert free_name(tmp_path, "cat.jpg") == tmp_path / "cat (2).jpg"


def test_free_name_takes_the_first_gap(tmp_path: Path) -> None:
    make_file(tmp_path / "cat.jpg")
    make_file(tmp_path / "cat (2).jpg")
    assert free_name(tmp_path, "cat.jpg") == tmp_path / "cat (1).jpg"


def test_free_name_counts_folders_and_dangling_symlinks_as_taken(tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").mkdir()
    (tmp_path / "cat (1).jpg").symlink_to(tmp_path / "nowhere")
    assert free_name(tmp_path, "cat.jpg") == tmp_path / "cat (2).jpg"


def test_free_name_gives_up_when_every_candidate_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moves, "MAX_SUFFIX", 3)
    for name in ("cat.jpg", "cat (1).jpg", "cat (2).jpg"):
        make_file(tmp_path / name)
    with pytest.raises(FileExistsError) as info:
        free_name(tmp_path, "cat.jpg")
    assert info.value.errno == errno.EEXIST


# --------------------------------------------------------------------------------------------
# move_no_clobber on one filesystem
# --------------------------------------------------------------------------------------------


def test_move_moves_and_keeps_inode_and_mtime(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"meow")
    before = os.lstat(src)
    dest = tmp_path / "library" / "cats" / "cat.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.read_bytes() == b"meow"
    after = os.lstat(dest)
    assert after.st_mtime_ns == OLD_MTIME_NS
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert after.st_nlink == 1  # the inbox name is gone, not a second link
    assert temp_leftovers(dest.parent) == []


def test_move_creates_nested_destination_folders(tmp_path: Path) -> None:
    src = make_file(tmp_path / "cat.jpg")
    dest = tmp_path / "a" / "b" / "c" / "cat.jpg"
    move_no_clobber(src, dest)
    assert dest.is_file()
    assert not src.exists()


def test_move_into_an_existing_folder(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg")
    (tmp_path / "library").mkdir()
    make_file(tmp_path / "library" / "other.jpg", b"other")
    move_no_clobber(src, tmp_path / "library" / "cat.jpg")
    assert sorted(p.name for p in (tmp_path / "library").iterdir()) == ["cat.jpg", "other.jpg"]


def test_move_never_overwrites(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"new")
    dest = make_file(tmp_path / "library" / "cat.jpg", b"old", mtime_ns=10**18)
    with pytest.raises(FileExistsError) as info:
        move_no_clobber(src, dest)
    assert info.value.errno == errno.EEXIST
    assert src.read_bytes() == b"new"
    assert dest.read_bytes() == b"old"
    assert os.lstat(dest).st_mtime_ns == 10**18
    assert not same_file(src, dest)


def test_move_never_replaces_a_dangling_symlink(tmp_path: Path) -> None:
    src = make_file(tmp_path / "cat.jpg", b"new")
    dest = tmp_path / "library" / "cat.jpg"
    dest.parent.mkdir()
    dest.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(FileExistsError):
        move_no_clobber(src, dest)
    assert src.read_bytes() == b"new"
    assert dest.is_symlink()
    assert dest.readlink() == tmp_path / "nowhere.jpg"


def test_move_of_a_missing_source_fails_and_creates_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "library" / "cat.jpg"
    with pytest.raises(FileNotFoundError):
        move_no_clobber(tmp_path / "gone.jpg", dest)
    assert not os.path.lexists(dest)


def test_move_a_symlink_itself_not_its_target(tmp_path: Path) -> None:
    target = make_file(tmp_path / "elsewhere" / "real.jpg", b"real")
    src = tmp_path / "inbox" / "link.jpg"
    src.parent.mkdir()
    src.symlink_to(target)
    dest = tmp_path / "library" / "link.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.is_symlink()
    assert dest.readlink() == target
    assert target.read_bytes() == b"real"
    assert os.lstat(target).st_nlink == 1  # the target was not linked
    assert os.lstat(target).st_mtime_ns == OLD_MTIME_NS


def test_move_a_dangling_symlink(tmp_path: Path) -> None:
    src = tmp_path / "link.jpg"
    src.symlink_to("does-not-exist.jpg")
    dest = tmp_path / "library" / "link.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.readlink() == Path("does-not-exist.jpg")


def test_move_into_a_free_name(tmp_path: Path) -> None:
    make_file(tmp_path / "library" / "cat.jpg", b"first")
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"second")
    dest = free_name(tmp_path / "library", src.name)
    move_no_clobber(src, dest)
    assert (tmp_path / "library" / "cat.jpg").read_bytes() == b"first"
    assert (tmp_path / "library" / "cat (1).jpg").read_bytes() == b"second"


# --------------------------------------------------------------------------------------------
# Across filesystems, for real: tmp_path and /dev/shm
# --------------------------------------------------------------------------------------------


def test_move_across_filesystems(tmp_path: Path, other_fs: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"x" * 100_000)
    dest = other_fs / "library" / "cats" / "cat.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.read_bytes() == b"x" * 100_000
    st = os.lstat(dest)
    assert st.st_dev == other_fs.stat().st_dev != tmp_path.stat().st_dev
    assert st.st_mtime_ns == OLD_MTIME_NS  # copy2 keeps mtime
    assert st.st_nlink == 1  # the temp name was removed
    assert temp_leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cat.jpg"]


def test_move_across_filesystems_back(tmp_path: Path, other_fs: Path) -> None:
    src = make_file(other_fs / "cat.jpg", b"back")
    dest = tmp_path / "library" / "cat.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.read_bytes() == b"back"
    assert temp_leftovers(dest.parent) == []


def test_move_across_filesystems_never_overwrites(tmp_path: Path, other_fs: Path) -> None:
    src = make_file(tmp_path / "cat.jpg", b"new")
    dest = make_file(other_fs / "cat.jpg", b"old")
    with pytest.raises(FileExistsError):
        move_no_clobber(src, dest)
    assert src.read_bytes() == b"new"
    assert dest.read_bytes() == b"old"
    assert temp_leftovers(other_fs) == []


def test_move_a_symlink_across_filesystems(tmp_path: Path, other_fs: Path) -> None:
    target = make_file(tmp_path / "real.jpg", b"real")
    src = tmp_path / "link.jpg"
    src.symlink_to(target)
    dest = other_fs / "link.jpg"
    move_no_clobber(src, dest)
    assert not os.path.lexists(src)
    assert dest.is_symlink()
    assert dest.readlink() == target
    assert target.read_bytes() == b"real"
    assert temp_leftovers(other_fs) == []


# --------------------------------------------------------------------------------------------
# The copy path itself (runs on any machine, one filesystem or not)
# --------------------------------------------------------------------------------------------


def test_copy_across_copies_then_removes_the_source(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"copied")
    dest = tmp_path / "library" / "cat.jpg"
    dest.parent.mkdir()
    copy_across(src, dest)
    assert not os.path.lexists(src)
    assert dest.read_bytes() == b"copied"
    assert os.lstat(dest).st_mtime_ns == OLD_MTIME_NS
    assert os.lstat(dest).st_nlink == 1
    assert temp_leftovers(dest.parent) == []


def test_copy_across_never_overwrites_and_cleans_up(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg", b"new")
    dest = make_file(tmp_path / "library" / "cat.jpg", b"old")
    with pytest.raises(FileExistsError):
        copy_across(src, dest)
    assert src.read_bytes() == b"new"
    assert dest.read_bytes() == b"old"
    assert temp_leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cat.jpg"]


def test_copy_across_copies_a_symlink_as_a_symlink(tmp_path: Path) -> None:
    target = make_file(tmp_path / "real.jpg", b"real")
    src = tmp_path / "inbox" / "link.jpg"
    src.parent.mkdir()
    src.symlink_to(target)
    dest = tmp_path / "library" / "link.jpg"
    dest.parent.mkdir()
    copy_across(src, dest)
    assert not os.path.lexists(src)
    assert dest.readlink() == target
    assert target.read_bytes() == b"real"
    assert temp_leftovers(dest.parent) == []


def test_copy_across_of_a_missing_source_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "library" / "cat.jpg"
    dest.parent.mkdir()
    with pytest.raises(FileNotFoundError):
        copy_across(tmp_path / "gone.jpg", dest)
    assert list(dest.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------
# same_file
# --------------------------------------------------------------------------------------------


def test_same_file_for_an_interrupted_move(tmp_path: Path) -> None:
    src = make_file(tmp_path / "inbox" / "cat.jpg")
    dest = tmp_path / "library" / "cat.jpg"
    dest.parent.mkdir()
    os.link(src, dest)  # a crash between link and unlink leaves this
    assert same_file(src, dest)
    assert same_file(dest, src)


def test_same_file_is_false_for_equal_copies(tmp_path: Path) -> None:
    a = make_file(tmp_path / "a.jpg", b"same")
    b = make_file(tmp_path / "b.jpg", b"same")
    assert not same_file(a, b)


def test_same_file_does_not_follow_symlinks(tmp_path: Path) -> None:
    target = make_file(tmp_path / "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    assert not same_file(link, target)
    assert same_file(link, link)


def test_same_file_is_false_when_either_is_missing(tmp_path: Path) -> None:
    a = make_file(tmp_path / "a.jpg")
    assert not same_file(a, tmp_path / "missing.jpg")
    assert not same_file(tmp_path / "missing.jpg", a)
    assert not same_file(tmp_path / "missing.jpg", tmp_path / "missing.jpg")
