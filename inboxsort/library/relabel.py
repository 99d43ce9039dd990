"""Relabelling a filed image: the one place where a correction is recorded together with a move.

Used by `inboxsort label` and `inboxsort reclassify --apply`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from inboxsort.db import (
    SOURCE_MOVE,
    SOURCE_REVIEW,
    STATUS_FILED,
    Correction,
    Database,
    Image,
    utcnow,
)
from inboxsort.db.queries import delete_correction, find_filed, latest_correction
from inboxsort.dirfd import identity, lstat_under
from inboxsort.errors import InboxsortError
from inboxsort.files import display_path, free_name, loggable, move_no_clobber
from inboxsort.layout import REVIEW_FOLDER, check_class, placement

log = logging.getLogger(__name__)

# A name taken between free_name() and the link (another program writing into the folder) is
# retried with the next free name this many times.
_MOVE_ATTEMPTS = 3
# Live, how long after relabel's commit its move may still be under way (relabel_in_flight).
RELABEL_WINDOW = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class Relabeled:
    """The outcome of relabel(): the row, both labels and paths, and the correction's id."""

    image_id: int
    old_label: str | None
    new_label: str
    old_path: Path
    new_path: Path
    correction_id: int | None  # None: the image already had this label in this folder


@dataclass(frozen=True)
class _Before:
    label: str | None
    path: str
    dest_path: str | None
    score: float | None
    model_version: int | None
    model_label: str | None
    model_score: float | None


def relabel(
    db: Database,
    *,
    image_path: Path,
    new_label: str,
    source: str,
    library: Path,
    classes: Sequence[str],
    review_folder: str = REVIEW_FOLDER,
    score: float | None = None,
    model_version: int | None = None,
    node: str | None = None,
) -> Relabeled:
    """Record one correction (made on `node`) for a filed image; move it to library/<label>/."""
    check_class(new_label, classes)
    src, image_id, before, moving = _filed_row(db, image_path, library=library)
    here = placement(src, library=library, classes=classes, review_folder=review_folder)
    if here.label == new_label and before.label == new_label:
        if before.path != display_path(src):
            # A move nobody recorded.
            _write(db, image_id, before, path=src, label=new_label, class_count=len(classes))
        return Relabeled(image_id, before.label, new_label, src, src, None)
    for attempt in range(_MOVE_ATTEMPTS):
        # Already in the right folder (moved there by hand with no daemon running): no move.
        target = src if here.label == new_label else free_name(library / new_label, src.name)
        # Row and correction first: a running daemon then sees a file arrive at the row's
        # path and records nothing of its own, so the user's one action is one correction.
        correction_id = _write(
            db,
            image_id,
            before,
            path=target,
            label=new_label,
            class_count=len(classes),
            correction=source,
            score=score,
            model_version=model_version,
            node=node,
        )
        if target != src:
            try:
                # Through the library's folders, never a symbolic link: the file found above.
                move_no_clobber(src, target, src_root=library, dest_root=library, expect=moving)
            except OSError as exc:
                if _moved_anyway(src, target, library):
                    names = (loggable(src), loggable(target))
                    log.warning("moved %s to %s but could not remove the old name", *names)
                else:
                    _revert(db, image_id, before, correction_id)
                    if isinstance(exc, FileExistsError) and attempt + 1 < _MOVE_ATTEMPTS:
                        continue
                    raise InboxsortError(
                        f"cannot move {src} to {target}: {exc.strerror or exc}"
                    ) from None
            _refresh_location(db, image_id, target)
        shown = (loggable(src.name), new_label, before.label, loggable(target))
        log.info("labelled %s as %s (was %s): %s", *shown)
        return Relabeled(image_id, before.label, new_label, src, target, correction_id)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _filed_row(
    db: Database, image_path: Path, *, library: Path
) -> tuple[Path, int, _Before, tuple[int, int]]:
    """The file's path in the library, the id and values of its filed row, and what it is.

    A path given by another way in (a link to the library) is taken as the row's own path in
    the library when that names the same file: moves happen only inside the library.
    """
    # abspath, not resolve(): rows keep the library path as configured, symlinks included.
    src = Path(os.path.abspath(image_path))  # noqa: PTH100
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise InboxsortError(f"{image_path}: no such file") from None
    except OSError as exc:
        raise InboxsortError(f"{image_path}: {exc.strerror or exc}") from None
    with db.session() as session:
        row = (
            None
            if stat.S_ISDIR(st.st_mode)
            else find_filed(
                session,
                path=display_path(src),
                device=st.st_dev,
                inode=st.st_ino,
                size=st.st_size,
            )
        )
        if row is None:
            raise InboxsortError(
                f"{image_path} is not a filed image in the database: only images the daemon "
                f"filed into {library} can be labelled"
            )
        if not src.is_relative_to(library):
            src = _inside(Path(row.path), library, st, image_path)
        return (
            src,
            row.id,
            _Before(
                row.label,
                row.path,
                row.dest_path,
                row.score,
                row.model_version,
                row.model_label,
                row.model_score,
            ),
            identity(st),
        )


def _inside(path: Path, library: Path, st: os.stat_result, given: Path) -> Path:
    """The row's path when it is in the library and names the file `st` describes."""
    try:
        if path.is_relative_to(library) and identity(lstat_under(library, path)) == identity(st):
            return path
    except OSError:
        pass
    raise InboxsortError(f"{given} is not inside the library {library}")


def _write(
    db: Database,
    image_id: int,
    before: _Before,
    *,
    path: Path,
    label: str,
    class_count: int,
    correction: str | None = None,
    score: float | None = None,
    model_version: int | None = None,
    node: str | None = None,
) -> int | None:
    """Point the row at `path` with `label` and, given a source, add the correction; commit.

    `score` is given when a model gave `label` (reclassify): that model's label, score and
    version become the row's. Otherwise it is a person's label, and the model's stay.
    """
    with db.begin() as session:
        row = session.get(Image, image_id)
        if row is None or row.status != STATUS_FILED:
            raise InboxsortError(f"image {image_id} changed while it was being labelled; try again")
        row.path, row.dest_path = display_path(path), None
        if score is not None:
            row.model_label, row.model_score, row.model_version = label, score, model_version
        row.set_label(label, class_count=class_count)
        if correction is None:
            return None
        entry = Correction(
            image_id=image_id,
            old_label=before.label,
            new_label=label,
            source=correction,
            old_path=before.path,
            new_path=display_path(path),
            created_at=utcnow(),
            node=node,
        )
        session.add(entry)
        session.flush()
        return entry.id


def _revert(db: Database, image_id: int, before: _Before, correction_id: int | None) -> None:
    """Undo _write after a failed move: the row as it was, and no correction for no action."""
    with db.begin() as session:
        row = session.get(Image, image_id)
        if row is not None:
            row.label, row.path, row.dest_path = before.label, before.path, before.dest_path
            row.score, row.model_version = before.score, before.model_version
            row.model_label, row.model_score = before.model_label, before.model_score
        if correction_id is not None:
            delete_correction(session, correction_id)


def _moved_anyway(src: Path, target: Path, library: Path) -> bool:
    """True when a move that raised still put the file at target (link done, unlink failed)."""
    try:
        there = lstat_under(library, target)
    except OSError:
        return False
    try:
        return identity(lstat_under(library, src)) == identity(there)
    except OSError:
        return True


def _refresh_location(db: Database, image_id: int, path: Path) -> None:
    """Record the moved file's device and inode (a copy across filesystems gets a new inode)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    with db.begin() as session:
        row = session.get(Image, image_id)
        if row is not None and (row.device, row.inode) != (st.st_dev, st.st_ino):
            row.device, row.inode = st.st_dev, st.st_ino


def relabel_in_flight(session: Session, row: Image, text: str, *, recent: bool = False) -> bool:
    """Whether relabel() recorded moving `row` away from `text` and has not moved it yet."""
    if os.path.lexists(row.path):
        return False
    last = latest_correction(session, row.id)
    if last is None or last.source == SOURCE_MOVE:
        return False
    # `review` comes from the library watcher for a file moved out of _review/ (moved already
    # when recorded, like `move`), and from relabel() for a correction on the web page.
    if last.source == SOURCE_REVIEW and REVIEW_FOLDER in Path(last.old_path or "").parts:
        return False
    if (last.old_path, last.new_path) != (text, row.path):
        return False
    # Live, the window between relabel's commit and its move is milliseconds; at start-up
    # (recent=False) any age counts: the relabel was stopped before it could move.
    return not recent or utcnow() - last.created_at < RELABEL_WINDOW
