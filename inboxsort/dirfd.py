"""Paths below a trusted root, reached one folder at a time and never through a symbolic link.

A path string is looked up afresh by every system call that takes it: swap one of its folders
for a symbolic link between two calls, and the second call acts somewhere else (O_NOFOLLOW and
follow_symlinks=False guard the last component only). Everything here opens the configured root
as configured (symbolic links in the configured path are the administrator's choice), then each
folder below it with O_NOFOLLOW | O_DIRECTORY, and acts on the last name relative to the
descriptor of its folder. A symbolic link, or something that is not a folder, where a folder
should be raises PathChanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The longest file name this package makes (bytes); folders whose filesystem allows fewer are
# asked (fpathconf) and get fewer.
NAME_MAX = 255
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


class PathChanged(OSError):
    """A path below its root does not lead, without symbolic links, to what it named."""


def _parts(root: Path, path: Path) -> tuple[str, ...]:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise PathChanged(errno.EINVAL, f"not inside {root}", str(path)) from None
    if ".." in parts:
        raise PathChanged(errno.EINVAL, f"'..' leads out of {root}", str(path))
    return parts


def _open_child(fd: int, name: str, path: Path, *, create: bool) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # Linux says ENOTDIR for a symbolic link opened with O_DIRECTORY | O_NOFOLLOW.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise PathChanged(
                exc.errno, f"{name!r} on the way is a symbolic link or not a folder", str(path)
            ) from None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=fd)
    return _open_child(fd, name, path, create=False)


def open_folder(root: Path, folder: Path, *, create: bool = False) -> int:
    """A descriptor of `folder`, reached from `root` one component at a time; the caller closes.

    `create` makes missing folders on the way (as mkdir -p would, but never through a link).
    """
    parts = _parts(root, folder)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            child = _open_child(fd, part, folder, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder_fd(root: Path, folder: Path, *, create: bool = False) -> Iterator[int]:
    """open_folder as a context manager that closes the descriptor."""
    fd = open_folder(root, folder, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_under(root: Path, path: Path) -> os.stat_result:
    """lstat() of `path` reached from `root` without following any symbolic link."""
    if path == root:
        return os.lstat(root)
    with folder_fd(root, path.parent) as fd:
        return os.stat(path.name, dir_fd=fd, follow_symlinks=False)


def lexists_under(root: Path, path: Path) -> bool:
    """os.path.lexists, reached from `root` without following any symbolic link."""
    try:
        lstat_under(root, path)
    except (OSError, ValueError):
        return False
    return True


def identity(st: os.stat_result) -> tuple[int, int]:
    """(device, inode): what a file is, whatever its name."""
    return st.st_dev, st.st_ino


def open_under(root: Path, path: Path, flags: int) -> int:
    """os.open of `path` below `root`, never through a symbolic link (the last name included)."""
    with folder_fd(root, path.parent) as fd:
        return os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)


def unlink_if(fd: int, name: str, expected: tuple[int, int]) -> bool:
    """Remove `name` from the folder `fd` only if it still names the file `expected` is.

    False when the name is gone or names another file now (that file is left alone).
    """
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if identity(st) != expected:
        return False
    os.unlink(name, dir_fd=fd)
    return True


def name_max(folder: int | Path) -> int:
    """The longest name (bytes) a folder (open descriptor or path) takes, at most NAME_MAX."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")  # takes a descriptor as well as a path
    except (OSError, ValueError):
        return NAME_MAX
    return min(limit, NAME_MAX) if limit > 0 else NAME_MAX


def _renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _renameat2()


def rename_no_replace(src_fd: int, src_name: str, dst_fd: int, dst_name: str) -> None:
    """Rename without ever replacing `dst_name` (FileExistsError then): renameat2 NOREPLACE.

    Where the kernel or the filesystem lacks it, the name is checked first and then renamed: a
    name created by another program between the two steps would be replaced (README, Safety).
    """
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(
            src_fd, os.fsencode(src_name), dst_fd, os.fsencode(dst_name), _RENAME_NOREPLACE
        )
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst_name)
    try:
        os.stat(dst_name, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, "destination exists", dst_name)


class SourceChanged(PathChanged):
    """The file to move is not the one expected at a symlink-free path below its root."""


def copy_into(src_fd: int, src: Path, out: int, st: os.stat_result) -> None:
    """Copy the file src names in folder `src_fd` (still `st`'s file) into `out`, as copy2 does:
    bytes, extended attributes, mode and times; then fsync `out`.
    """
    fd = os.open(
        src.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd
    )
    try:
        now = os.fstat(fd)
        if identity(now) != identity(st):
            raise SourceChanged(errno.ESTALE, "another file has taken its name", str(src))
        if not stat.S_ISREG(now.st_mode):
            raise shutil.SpecialFileError(f"`{src}` is not a regular file")
        while chunk := os.read(fd, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        _copy_xattrs(fd, out)
    finally:
        os.close(fd)
    os.fchmod(out, stat.S_IMODE(st.st_mode))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.fsync(out)


def _copy_xattrs(src: int, dst: int) -> None:
    """Extended attributes, best effort (copy2 too skips what cannot be copied)."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name))


ScanError = Callable[[Path, OSError], None]


def walk(
    top_fd: int,
    top: Path,
    *,
    recursive: bool,
    skip: Callable[[Path], bool],
    on_error: ScanError,
) -> Iterator[Path]:
    """Every entry that is not a folder below the open folder `top_fd` (named `top`), sorted.

    Takes over `top_fd` (closed at the end). Folders are listed through descriptors opened
    relative to their parent, never through a symbolic link and never by a full path; one that
    cannot be opened or listed goes to `on_error`, and the walk goes on with the others.
    Entries for which `skip` is true are neither yielded nor entered.
    """
    stack = [(top_fd, top, _entries(top_fd, top, on_error))]
    try:
        while stack:
            fd, folder, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                os.close(fd)
                continue
            name, is_dir = entry
            path = folder / name
            if skip(path):
                continue
            if not is_dir:
                yield path
            elif recursive:
                child = _open_subfolder(fd, name, path, on_error)
                if child is not None:
                    stack.append((child, path, _entries(child, path, on_error)))
    finally:
        for fd, _folder, _left in stack:
            os.close(fd)


def _entries(fd: int, folder: Path, on_error: ScanError) -> Iterator[tuple[str, bool]]:
    try:
        with os.scandir(fd) as listing:
            found = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in listing)
    except OSError as exc:
        on_error(folder, exc)
        found = []
    return iter(found)


def _open_subfolder(fd: int, name: str, path: Path, on_error: ScanError) -> int | None:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed, or swapped for a file or a symbolic link, since it was listed
    except OSError as exc:
        on_error(path, exc)
        return None
