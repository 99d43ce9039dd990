"""Files: moves that never overwrite or lose one, fsync, free names, hashes, scans, and the
one rule for which errors are worth another try.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

TEMP_PREFIX = ".inboxsort-"
TEMP_SUFFIX = ".tmp"
MAX_SUFFIX = 10_000

log = logging.getLogger(__name__)

# Errors that say "try again later" (a file still locked or busy, a full disk, an NFS hiccup)
# rather than "this file is bad": callers retry these instead of giving up on the file.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETXTBSY,
        errno.EINTR,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ESTALE,
        errno.EIO,
    }
)
_CHUNK = 1 << 20


def is_transient(exc: OSError) -> bool:
    """Whether an OSError is worth another try later rather than a verdict on the file."""
    return exc.errno in TRANSIENT_ERRNOS


def display_path(path: Path) -> str:
    """A path as text for the database; bytes that are not UTF-8 are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes; OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_or_none(path: Path) -> str | None:
    """file_sha256, or None for a file that is gone or unreadable (callers treat it as unknown)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


class Ignore:
    """Shell patterns matched against every path component below a watched root."""

    def __init__(self, root: Path, patterns: Sequence[str]) -> None:
        self.root = root
        self.patterns = tuple(patterns)

    def __call__(self, path: Path) -> bool:
        """True when path (or a folder it sits in) matches an ignore pattern."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return True
        return any(fnmatch.fnmatchcase(part, pat) for part in parts for pat in self.patterns)


def scan(root: Path, *, recursive: bool, ignore: Ignore) -> Iterator[Path]:
    """Every non-ignored file (and symlink) under root; symlinked folders are not followed."""
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in sorted(entries, key=lambda e: e.name):
        path = Path(entry.path)
        if ignore(path):
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from scan(path, recursive=True, ignore=ignore)
        else:
            yield path


def candidate_names(name: str) -> Iterator[str]:
    """`cat.jpg`, then `cat (1).jpg`, `cat (2).jpg`, ... (the suffix goes before the extension)."""
    # A generator: the first name is almost always free, and building all MAX_SUFFIX names for
    # every file showed up in the daemon's profile under a flood.
    yield name
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for i in range(1, MAX_SUFFIX):
        yield f"{stem} ({i}){ext}"


def free_name(folder: Path, name: str, *, reserved: Iterable[Path] = ()) -> Path:
    """The first candidate name not on disk and not in `reserved` (a hint: moves re-check)."""
    taken = reserved if isinstance(reserved, (set, frozenset)) else set(reserved)
    for candidate in candidate_names(name):
        path = folder / candidate
        if path not in taken and not os.path.lexists(path):
            return path
    raise FileExistsError(errno.EEXIST, f"no free name for {name} in {folder}")


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` durable; OSError when it cannot be opened or synced."""
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
            fsync_dir(folder)
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
        fsync_dir(dest.parent)


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
        fsync_dir(dest.parent)
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
