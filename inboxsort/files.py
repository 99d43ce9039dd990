"""Files: moves that never overwrite or lose one, fsync, free names, hashes, scans, and the
one rule for which errors are worth another try.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from inboxsort.dirfd import (
    NAME_MAX,
    PathChanged,
    ScanError,
    SourceChanged,
    copy_into,
    folder_fd,
    identity,
    name_max,
    open_folder,
    rename_no_replace,
    unlink_if,
    walk,
)

TEMP_PREFIX = ".inboxsort-"
TEMP_SUFFIX = ".tmp"
MAX_SUFFIX = 10_000
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# An escape display_path wrote (\\xNN), cut short at the end of a shortened name.
_HALF_ESCAPE = re.compile(r"\\(x[0-9a-f]?)?$")

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


# Characters a log line must not carry raw: control characters (newline, carriage return, ESC...)
# and line separators end or forge a line, or drive the terminal; the backslash is doubled so that
# an escape in the log always means an escape.
_LOG_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_LOG_ESCAPES.update(
    {
        ord("\\"): "\\\\",
        ord("\n"): "\\n",
        ord("\r"): "\\r",
        ord("\t"): "\\t",
        0x2028: "\\u2028",
        0x2029: "\\u2029",
    }
)


def loggable(path: Path | str) -> str:
    """A path or file name for a log message: display_path's text, one line, nothing hidden.

    A name with a newline in it cannot forge a log line: control characters and line separators
    become escapes (`\\n`, `\\x1b`) and the backslash is doubled. A path read from a row (already
    display text) and the same path on disk give the same text.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_LOG_ESCAPES)


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


def log_scan_error(path: Path, exc: OSError) -> None:
    """The default for scan(): one warning per unreadable folder per scan."""
    log.warning("cannot scan %s: %s; skipping that folder", path, exc.strerror or exc)


class ScanErrors:
    """A scan() error handler that logs each folder and reason once per process, then quietly.

    The daemon rescans its inbox every few minutes: a folder that cannot be read (too deep for
    a path, no permission) is worth one warning, not one per rescan.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[Path, int | None]] = set()
        self._lock = threading.Lock()

    def __call__(self, path: Path, exc: OSError) -> None:
        with self._lock:
            first = (path, exc.errno) not in self._seen
            self._seen.add((path, exc.errno))
        if first:
            log_scan_error(path, exc)
        else:
            log.debug("cannot scan %s: %s (again)", path, exc.strerror or exc)


def scan(
    root: Path, *, recursive: bool, ignore: Ignore, on_error: ScanError = log_scan_error
) -> Iterator[Path]:
    """Every non-ignored file (and symlink) under root; symlinked folders are not followed.

    Folders are opened one by one from `ignore.root` (the configured, trusted folder) and
    listed through their descriptors, never through a symbolic link and never by a full path,
    so depth is no limit (paths longer than PATH_MAX included). A folder that cannot be listed
    goes to `on_error` with the reason, and the scan goes on with the others.
    """
    if not root.is_relative_to(ignore.root) or (root != ignore.root and ignore(root)):
        return
    try:
        top = open_folder(ignore.root, root)
    except (FileNotFoundError, NotADirectoryError, PathChanged):
        return  # gone, a file, or a symbolic link: nothing to list
    except OSError as exc:
        on_error(root, exc)
        return
    yield from walk(top, root, recursive=recursive, skip=ignore, on_error=on_error)


def _fit(text: str, limit: int) -> str:
    """The longest start of `text` that takes at most `limit` bytes, cut between characters.

    An escape display_path wrote (\\xNN) is never cut in half.
    """
    used = 0
    for i, char in enumerate(text):
        used += len(os.fsencode(char))
        if used > limit:
            cut = text[:i]
            return _HALF_ESCAPE.sub("", cut)
    return text


def _fitted(stem: str, suffix: str, ext: str, limit: int) -> str:
    """stem + suffix + ext in at most `limit` bytes: the stem is shortened, never the rest."""
    room = limit - len(os.fsencode(suffix + ext))
    if room < 1:  # an extension too long to keep: shorten the name as a whole
        return _fit(stem + ext, limit - len(os.fsencode(suffix))) + suffix
    return _fit(stem, room) + suffix + ext


def candidate_names(name: str, *, limit: int = NAME_MAX) -> Iterator[str]:
    """`cat.jpg`, then `cat (1).jpg`, `cat (2).jpg`, ... (the suffix goes before the extension).

    Each fits in `limit` bytes: a long stem is shortened (at a character boundary), keeping
    the extension and the ` (n)` suffix, so a second `<251-byte stem>.jpg` can be filed.
    """
    # A generator: the first name is almost always free, and building all MAX_SUFFIX names for
    # every file showed up in the daemon's profile under a flood.
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    yield name if len(os.fsencode(name)) <= limit else _fitted(stem, "", ext, limit)
    for i in range(1, MAX_SUFFIX):
        yield _fitted(stem, f" ({i})", ext, limit)


def free_name(folder: Path, name: str, *, reserved: Iterable[Path] = ()) -> Path:
    """The first candidate name not on disk and not in `reserved` (a hint: moves re-check)."""
    taken = reserved if isinstance(reserved, (set, frozenset)) else set(reserved)
    for candidate in candidate_names(name, limit=name_max(folder)):
        path = folder / candidate
        if path not in taken and not os.path.lexists(path):
            return path
    raise FileExistsError(errno.EEXIST, f"no free name for {name} in {folder}")


def temp_name(dest_name: str, pid: int, *, limit: int = NAME_MAX) -> str:
    """The name a copy across filesystems is written under before it is linked to dest_name.

    `.inboxsort-<pid>-<dest_name>.tmp` in dest's folder, dest_name shortened to fit `limit`.
    Recovery recognizes the daemon's own leftovers by computing this for its pending rows.
    """
    head = f"{TEMP_PREFIX}{pid}-"
    return head + _fit(dest_name, limit - len(head) - len(TEMP_SUFFIX)) + TEMP_SUFFIX


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` durable; OSError when it cannot be opened or synced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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


def _link_no_clobber(src_fd: int, src_name: str, dst_fd: int, dst_name: str) -> bool:
    """Hard-link src to dest, failing if dest exists; False when links are not possible here."""
    try:
        os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        # EPERM: protected_hardlinks or a filesystem without links (FAT, some SMB mounts).
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            return False
        raise
    return True


@contextlib.contextmanager
def _source_folder(root: Path | None, src: Path) -> Iterator[int]:
    try:
        fd = open_folder(root or src.parent, src.parent)
    except PathChanged as exc:
        raise SourceChanged(exc.errno, exc.strerror, exc.filename) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _source_stat(fd: int, src: Path, expect: tuple[int, int] | None) -> os.stat_result:
    st = os.stat(src.name, dir_fd=fd, follow_symlinks=False)
    if expect is not None and identity(st) != expect:
        raise SourceChanged(errno.ESTALE, "another file has taken its name", str(src))
    return st


def move_no_clobber(
    src: Path,
    dest: Path,
    *,
    sync: bool = True,
    src_root: Path | None = None,
    dest_root: Path | None = None,
    expect: tuple[int, int] | None = None,
) -> None:
    """Move src to dest atomically, never replacing an existing dest (FileExistsError then).

    One filesystem: link(src, dest) then unlink(src). The link fails if dest exists, so nothing
    is overwritten, and a crash between the two steps leaves the same inode in both places,
    which recovery resolves by removing the inbox name. Across filesystems: copy under a temp
    name in dest's folder, fsync, link into place, then remove the source.
    With `sync` false the caller fsyncs dest's folder itself (sync_folders, once per batch),
    before it records the move as done.

    Given roots, each folder is reached from its root through descriptors, never through a
    symbolic link (PathChanged for dest's, SourceChanged for src's), and every step acts on
    the folders so opened; missing folders below dest_root are created. Given `expect`
    (device, inode), only that file is moved: SourceChanged when src names another.
    """
    if dest_root is None:
        dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        _source_folder(src_root, src) as src_fd,
        folder_fd(dest_root or dest.parent, dest.parent, create=True) as dst_fd,
    ):
        st = _source_stat(src_fd, src, expect)
        try:
            linked = _link_no_clobber(src_fd, src.name, dst_fd, dest.name)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(src_fd, src, dst_fd, dest, st)
            return
        if linked:
            _drop_source(src_fd, src, dst_fd, dest, identity(st))
        else:
            rename_no_replace(src_fd, src.name, dst_fd, dest.name)
        if sync:
            os.fsync(dst_fd)


def _drop_source(src_fd: int, src: Path, dst_fd: int, dest: Path, moved: tuple[int, int]) -> None:
    """After the link: check dest is the file meant, then remove src's name if it still is."""
    if identity(os.stat(dest.name, dir_fd=dst_fd, follow_symlinks=False)) != moved:
        # src was replaced between the check and the link: take back the link just made (the
        # file it names keeps its own name in the source folder) and report it.
        with contextlib.suppress(FileNotFoundError):
            there = os.stat(src.name, dir_fd=src_fd, follow_symlinks=False)
            unlink_if(dst_fd, dest.name, identity(there))
        raise SourceChanged(errno.ESTALE, "another file took its name while moving", str(src))
    if not unlink_if(src_fd, src.name, moved):
        log.warning("%s names another file since it was moved to %s: left in place", src, dest)


def _copy_across(src_fd: int, src: Path, dst_fd: int, dest: Path, st: os.stat_result) -> None:
    """Copy src (the file `st` describes) to dest under a temp name, fsync, link it into place
    (never replacing anything), then remove src's name if it still names that file.
    """
    temp = temp_name(dest.name, os.getpid(), limit=name_max(dst_fd))
    made = False
    try:
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src.name, dir_fd=src_fd), temp, dir_fd=dst_fd)
            made = True
        else:
            out = os.open(temp, _NEW_FILE, 0o600, dir_fd=dst_fd)
            made = True
            try:
                copy_into(src_fd, src, out, st)
            finally:
                os.close(out)
        if not _link_no_clobber(dst_fd, temp, dst_fd, dest.name):
            rename_no_replace(dst_fd, temp, dst_fd, dest.name)
        os.fsync(dst_fd)
    finally:
        if made:
            # Our own name (O_EXCL): a half copy, or a second name of dest's inode.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dst_fd)
    if not unlink_if(src_fd, src.name, identity(st)):
        log.warning("%s names another file since it was copied to %s: left in place", src, dest)


def same_file(a: Path, b: Path) -> bool:
    """True when both names point at one inode (a move interrupted between link and unlink)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
