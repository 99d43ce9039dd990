"""Recovery after kill -9: finish or undo what the ledger's pending rows say was under way."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inboxsort.config import PathsConfig
from inboxsort.db import (
    STATUS_DELETED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    Image,
    utcnow,
)
from inboxsort.db.claims import pending_of, release_all, release_node, take_over_stale
from inboxsort.db.heartbeat import HEARTBEAT_STALE_SECONDS
from inboxsort.db.queries import pending_images
from inboxsort.db.schema import ORIGIN_INBOX
from inboxsort.dirfd import (
    PathChanged,
    folder_fd,
    identity,
    lstat_under,
    name_max,
    open_under,
    unlink_if,
)
from inboxsort.files import TEMP_PREFIX, TEMP_SUFFIX, temp_name
from inboxsort.intake.ledger import Ledger, complete

log = logging.getLogger(__name__)

# display_path's backslashreplace escapes only bytes that are not UTF-8: 0x80 to 0xff.
_ESCAPE = re.compile(rb"\\x([89a-f][0-9a-f])")
# files.temp_name: `.inboxsort-<pid>-<dest name>.tmp`.
_TEMP = re.compile(rf"{re.escape(TEMP_PREFIX)}([0-9]+)-.*{re.escape(TEMP_SUFFIX)}", re.DOTALL)


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery did: rows completed, requeued, found missing, and temp copies removed,
    and the dead nodes of a fleet whose claims and rows it took over."""

    completed: int = 0
    requeued: int = 0
    missing: int = 0
    temp_removed: int = 0
    taken_over: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any((self.completed, self.requeued, self.missing, self.temp_removed))


def recover(
    ledger: Ledger,
    paths: PathsConfig,
    *,
    origin: str = ORIGIN_INBOX,
    sole: bool = True,
    own: bool = True,
    stale_seconds: float = HEARTBEAT_STALE_SECONDS,
) -> RecoveryReport:
    """Reconcile rows a crash left pending with the disk, and remove the daemon's half copies.

    Only rows of `origin` are looked at: a backfill's rows (`inboxsort backfill --file`) are
    recovered by the backfill, one archive folder (`paths.inbox`) at a time; it never touches
    the daemons' inbox claims.

    `sole`: this is the only daemon on the database (SQLite: its lock file says so), so every
    pending row and claim is its own to recover. In a fleet (`sole` False) only the rows and
    claims of this node (with `own`; at start) and of nodes whose heartbeat went stale (taken
    over) are: another live node's pending rows are moves it is making right now.
    """
    counts = {"completed": 0, "requeued": 0, "missing": 0}
    temps = 0
    taken: list[str] = []

    def fix() -> None:
        nonlocal temps, taken
        for key in counts:
            counts[key] = 0  # a retry after a locked database starts over
        now = utcnow()
        with ledger.db.begin() as session:
            if sole:
                rows = pending_images(session)
                if origin == ORIGIN_INBOX:
                    release_all(session)
            else:
                taken = take_over_stale(
                    session, node=ledger.node, stale_seconds=stale_seconds, now=now
                )
                if own:
                    release_node(session, ledger.node)
                nodes = [*taken, *([ledger.node] if own else [])]
                rows = pending_of(session, nodes, unowned=own) if nodes else []
            rows = [r for r in rows if _recovers(r, paths, origin)]
            # Before the rows: _recover_row clears the dest_path that names each temp file.
            temps += _remove_own_temps([Path(r.dest_path) for r in rows if r.dest_path], paths)
            for row in rows:
                counts[_recover_row(row, paths, now)] += 1

    ledger.run("recovery", fix)
    report = RecoveryReport(**counts, temp_removed=temps, taken_over=tuple(taken))
    _log_report(report, stale_seconds)
    return report


def _log_report(report: RecoveryReport, stale_seconds: float) -> None:
    for name in report.taken_over:
        log.warning(
            "node %s stopped beating for over %.0f s: its claims on the inbox are free again",
            name,
            stale_seconds,
        )
    if report:
        log.info(
            "recovery after an unclean stop: %d completed, %d requeued, %d missing, "
            "%d temporary copies removed",
            report.completed,
            report.requeued,
            report.missing,
            report.temp_removed,
        )


def _recovers(row: Image, paths: PathsConfig, origin: str) -> bool:
    if row.origin != origin:
        return False
    return origin == ORIGIN_INBOX or Path(row.source_path).is_relative_to(paths.inbox)


def _root_of(path: Path, paths: PathsConfig) -> Path | None:
    """The configured folder that files are filed to and `path` lies in, if any."""
    for root in (paths.library, paths.failed, paths.duplicates):
        if path.is_relative_to(root):
            return root
    return None


def _status_for(dest: Path, paths: PathsConfig) -> str:
    if dest.is_relative_to(paths.failed):
        return STATUS_FAILED
    if dest.is_relative_to(paths.duplicates):
        return STATUS_DUPLICATE
    return STATUS_FILED


def _lstat(root: Path | None, path: Path) -> os.stat_result | None:
    """lstat below `root`, through no symbolic link; None when not there (or not so reached)."""
    if root is None:
        return None
    try:
        return lstat_under(root, path)
    except OSError:
        return None


def _sha256(root: Path, path: Path) -> str | None:
    try:
        fd = open_under(root, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            return None


def _same_content(row: Image, root: Path | None, path: Path) -> bool:
    st = _lstat(root, path)
    if root is None or st is None:
        return False
    if stat.S_ISLNK(st.st_mode):
        return True  # a symlink is moved, never read; its name is all there is to compare
    return row.sha256 is not None and _sha256(root, path) == row.sha256


def _inbox_path(row: Image, inbox: Path) -> Path:
    """The inbox path of a row; a name stored with escapes is turned back into its bytes.

    The unescaped path is used only if the file there is the row's own (device and inode), so
    an escape-like sequence typed into a real name can never point recovery at another file.
    """
    path = Path(row.source_path)
    if "\\x" not in row.source_path or _lstat(inbox, path) is not None:
        return path
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), row.source_path.encode())
    candidate = Path(os.fsdecode(raw))
    st = _lstat(inbox, candidate)
    return candidate if st is not None and identity(st) == (row.device, row.inode) else path


def _is_rows_file(row: Image, inbox: Path, path: Path) -> bool:
    """Whether the file at path is the one the row was made for: its content, else its inode.

    Content first: once a file is unlinked its inode number can be reused by a newcomer.
    """
    st = _lstat(inbox, path)
    if st is None:
        return False
    if row.sha256 is not None or stat.S_ISLNK(st.st_mode):
        return _same_content(row, inbox, path)
    return (st.st_dev, st.st_ino, st.st_size) == (row.device, row.inode, row.size)


def _recover_row(row: Image, paths: PathsConfig, now: datetime) -> str:
    # A name that is not UTF-8 is stored escaped: without turning it back into its bytes, the
    # inbox file would be filed again under a second row, or left beside its filed twin.
    # Every look goes through the configured folders, never through a symbolic link.
    inbox = paths.inbox
    source = _inbox_path(row, inbox)
    dest = Path(row.dest_path) if row.dest_path else None
    src_st = _lstat(inbox, source)
    root = _root_of(dest, paths) if dest is not None else None
    dest_st = _lstat(root, dest) if dest is not None else None
    if dest is not None and dest_st is not None:
        if src_st is None:
            complete(row, dest, _status_for(dest, paths), now)
            return "completed"
        linked = identity(src_st) == identity(dest_st)
        if linked or _same_content(row, root, dest):
            # Crashed after the link (or the cross-filesystem copy) but before the inbox name
            # was removed: the file is safe at dest, so the inbox name is the extra one,
            # unless a new file has taken that name since (the scan gives it a row of its own).
            if linked or _is_rows_file(row, inbox, source):
                _drop_inbox_name(inbox, source, identity(src_st))
            complete(row, dest, _status_for(dest, paths), now)
            return "completed"
    if src_st is not None:
        # Still in the inbox: the start-up scan processes it again and reuses this row.
        row.dest_path = None
        return "requeued"
    row.status, row.dest_path = STATUS_DELETED, None
    row.error = "missing after an unclean stop: neither in the inbox nor at its destination"
    return "missing"


def _drop_inbox_name(inbox: Path, source: Path, seen: tuple[int, int]) -> None:
    """Remove the inbox name of a file already at its destination, if it still names that."""
    try:
        with folder_fd(inbox, source.parent) as fd:
            unlink_if(fd, source.name, seen)
    except (FileNotFoundError, PathChanged):
        pass  # gone, or no longer reached without a symbolic link: nothing of ours to remove


def _remove_own_temps(dests: list[Path], paths: PathsConfig) -> int:
    """Remove the half-written copies of moves a crash interrupted, and nothing else.

    A copy across filesystems is written under files.temp_name(dest name, pid) in dest's
    folder, after its row was committed pending with that dest_path. So a file named so for a
    pending row's destination, by any pid, is the daemon's own; any other file is left alone,
    whatever its name (a user's `.inboxsort-note.tmp` included).
    """
    wanted: dict[Path, set[str]] = {}
    for dest in dests:
        wanted.setdefault(dest.parent, set()).add(dest.name)
    removed = 0
    for folder, names in wanted.items():
        root = _root_of(folder, paths)
        if root is None:
            continue
        try:
            with folder_fd(root, folder) as fd:
                limit = name_max(fd)
                for entry in os.listdir(fd):  # noqa: PTH208 (by descriptor, no path)
                    match = _TEMP.fullmatch(entry)
                    pid = int(match[1]) if match else -1
                    if any(temp_name(name, pid, limit=limit) == entry for name in names):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry, dir_fd=fd)
                            removed += 1
        except OSError as exc:
            if not isinstance(exc, (FileNotFoundError, PathChanged)):
                log.warning("cannot look for temporary copies in %s: %s", folder, exc)
    return removed
