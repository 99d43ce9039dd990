"""Moving files without ever overwriting or losing one, on one filesystem or across two."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

TEMP_PREFIX = ".inboxsort-"
TEMP_SUFFIX = ".tmp"
MAX_SUFFIX = 10_000

log = logging.getLogger(__name__)


def candidate_names(name: str) -> Iterator[str]:
    """`cat.jpg`, then `cat (1).jpg`, `cat (2).jpg`, ... (the suffix goes before the extension)."""
    # A generator: the first name is almost always free, and building all MAX_SUFFIX names per
    # file cost a tenth of each batch's time in a flood.
    yield name
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for i in range(1, MAX_SUFFIX):
        yield f"{stem} ({i}){ext}"


def free_name(folder: Path, name: str) -> Path:
    """The first candidate name not taken in folder (a hint: the move itself re-checks)."""
    for candidate in candidate_names(name):
        if not os.path.lexists(folder / candidate):
            return folder / candidate
    raise FileExistsError(errno.EEXIST, f"no free name for {name} in {folder}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folders(folders: Iterable[Path]) -> None:
    """Make the names linked into these folders durable (each folder fsynced once).

    Best effort: the moves are done either way, and a folder that cannot be synced (removed
    meanwhile, a filesystem without directory fsync) must not turn them into failures.
    """
    for folder in sorted(set(folders)):
        try:
            _fsync_dir(folder)
        except OSError as exc:
            log.warning("cannot fsync folder %s: %s", folder, exc)


def _link_no_clobber(src: Path, dest: Path) -> bool:
    """Hard-link src to dest, failing if dest exists; False when links are not possible here."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError as exc:
        # EPERM: protected_hardlinks or a filesystem without links (FAT, some SMB mounts).
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            return False
        raise
    return True


def move_no_clobber(src: Path, dest: Path, *, sync: bool = True) -> None:
    """Move src to dest atomically, never replacing an existing dest (FileExistsError then).

    One filesystem: link(src, dest) then unlink(src). The link fails if dest exists, so nothing
    is overwritten, and a crash between the two steps leaves the same inode in both places,
    which recovery resolves by removing the inbox name. Across filesystems: copy under a temp
    name in dest's folder, fsync, link into place, then remove the source.
    With `sync` false the caller fsyncs dest's folder itself (sync_folders, once per batch),
    before it records the move as done.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        linked = _link_no_clobber(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(src, dest)
        return
    if not linked:
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
        src.rename(dest)
    else:
        src.unlink()
    if sync:
        _fsync_dir(dest.parent)


def _copy_across(src: Path, dest: Path) -> None:
    temp = dest.parent / f"{TEMP_PREFIX}{os.getpid()}-{dest.name}{TEMP_SUFFIX}"
    try:
        if src.is_symlink():
            temp.symlink_to(src.readlink())
        else:
            shutil.copy2(src, temp)  # copy2 keeps mtime
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        if not _link_no_clobber(temp, dest):
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
            temp.rename(dest)
        _fsync_dir(dest.parent)
    finally:
        if os.path.lexists(temp):
            temp.unlink()
    src.unlink()


def same_file(a: Path, b: Path) -> bool:
    """True when both names point at one inode (a move interrupted between link and unlink)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
