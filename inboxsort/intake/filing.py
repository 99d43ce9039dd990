"""Filing: choose each image's destination, record it, move it, record the outcome."""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inboxsort.config import FilingConfig, PathsConfig
from inboxsort.db import STATUS_DUPLICATE, STATUS_FAILED, STATUS_FILED
from inboxsort.db.schema import ORIGIN_INBOX
from inboxsort.dirfd import PathChanged, SourceChanged, lexists_under
from inboxsort.files import display_path, free_name, loggable, move_no_clobber, sync_folders
from inboxsort.intake.announce import Announcer
from inboxsort.intake.ledger import Entry, Ledger, PlannedMove
from inboxsort.intake.records import Claim, Decoded
from inboxsort.intake.tidy import EmptiedFolders
from inboxsort.layout import REVIEW_FOLDER
from inboxsort.own_filings import OwnFilings

log = logging.getLogger(__name__)

VANISHED = "vanished from the inbox before it was filed"
# The claimed file is not at its inbox path any more, or cannot be reached there without a
# symbolic link (a folder on the way swapped for one): it is not moved, and whatever is at
# that path now is looked at afresh, as a new arrival.
LEFT = "no longer at its inbox path when it was filed"
# A destination name taken between choosing it and moving (another program writing into the
# library) is retried with the next free name this many times before the image waits.
_NAME_ATTEMPTS = 5


@dataclass
class BatchOutcome:
    """What became of one batch: counts per status and images to try again later.

    `duplicates` counts every image filed as a copy of one filed before (`duplicate_of` set):
    moved to duplicates/, or kept in the library (filing.duplicates = "keep"); `filed` counts
    the other images filed into the library. Each image counts once.
    """

    filed: int = 0
    failed: int = 0
    duplicates: int = 0
    vanished: int = 0
    retry: list[Decoded] = field(default_factory=list)


class Filer:
    """Moves classified (or failed) images to their folders, never overwriting anything."""

    def __init__(
        self,
        paths: PathsConfig,
        filing: FilingConfig,
        ledger: Ledger,
        *,
        own: OwnFilings | None = None,
        origin: str = ORIGIN_INBOX,
        announcer: Announcer | None = None,
        emptied: EmptiedFolders | None = None,
    ) -> None:
        self.paths = paths
        self.filing = filing
        self.ledger = ledger
        self.own = own
        # `paths.inbox` is the folder files are taken from: the inbox, or a backfilled archive.
        self.origin = origin
        self.announcer = announcer or Announcer()
        self.emptied = emptied

    def _folder(self, item: Decoded, filed: dict[str, int]) -> tuple[Path, str, int | None]:
        if not item.ok or item.label is None:
            return self.paths.failed, STATUS_FAILED, None
        assert item.sha256 is not None
        original = filed.get(item.sha256)
        if original is not None and self.filing.duplicates == "move":
            return self.paths.duplicates, STATUS_DUPLICATE, original
        if item.score is not None and item.score < self.filing.review_below:
            return self.paths.library / REVIEW_FOLDER, STATUS_FILED, original
        return self.paths.library / item.label, STATUS_FILED, original

    def file_batch(self, items: Sequence[Decoded]) -> BatchOutcome:
        """File one batch; transient failures come back in `retry`, the rest is final."""
        outcome = BatchOutcome()
        entries: list[Entry] = []
        chosen: dict[Path, Decoded] = {}
        original_of: dict[Path, int] = {}  # sources with duplicate_of set, whatever their folder
        reserved: set[Path] = set()
        first_of_sha: set[str] = set()
        filed = self.ledger.filed_duplicates(
            item.sha256 for item in items if item.ok and item.sha256 is not None
        )
        for item in items:
            if item.sha256 is not None and item.ok and item.sha256 in first_of_sha:
                # Same content twice in one batch: file the first now, and this one next
                # batch, when the first is on record and it can point at it.
                outcome.retry.append(item)
                continue
            if item.sha256 is not None:
                first_of_sha.add(item.sha256)
            folder, status, original = self._folder(item, filed)
            dest = free_name(folder, display_path(Path(item.claim.path.name)), reserved=reserved)
            reserved.add(dest)
            entry = entry_for(item, dest, status=status, duplicate_of=original)
            entries.append(dataclasses.replace(entry, origin=self.origin))
            chosen[item.claim.path] = item
            if original is not None:
                original_of[item.claim.path] = original
        plans = self.ledger.plan(entries)
        done: list[tuple[PlannedMove, str | None]] = []
        for plan in plans:
            item = chosen[plan.source]
            result = self._move(plan, item.claim, reserved)
            if result is None:
                outcome.retry.append(item)
                continue
            moved, reason = result
            done.append((moved, reason))
            if reason is not None:
                outcome.vanished += 1
            elif moved.status == STATUS_FAILED:
                outcome.failed += 1
            elif moved.status == STATUS_DUPLICATE or plan.source in original_of:
                outcome.duplicates += 1
            else:
                outcome.filed += 1
        # One fsync per destination folder, not per file; the rows say "filed" only after it.
        sync_folders(moved.dest.parent for moved, reason in done if reason is None)
        self.ledger.finish(done)
        for moved, reason in done:  # once recorded: each line then matches what query shows
            self._announce(chosen[moved.source], moved, reason, original_of.get(moved.source))
            if self.emptied is not None and reason is None:
                self.emptied.note(moved.source.parent)
        return outcome

    def _announce(
        self, item: Decoded, moved: PlannedMove, reason: str | None, duplicate_of: int | None
    ) -> None:
        """The image's one log line: where it went, with its score, or why it did not."""
        source = loggable(_under(moved.source, self.paths.inbox))
        if reason is not None:
            self.announcer.image(logging.WARNING, "not filed", "%s: not filed: %s", source, reason)
            return
        root = self._root_of(moved.dest)
        where = _under(moved.dest.parent, root.parent if root != self.paths.library else root)
        # The folder alone when the name was kept, as users look for it; the new name if not.
        if moved.dest.name != moved.source.name:
            where = where / moved.dest.name
        shown = loggable(where)
        if moved.status == STATUS_FAILED:
            self.announcer.image(
                logging.WARNING, "failed", "%s → %s: %s", source, shown, item.error
            )
            return
        score = "" if item.score is None else f" ({item.score:.3f})"
        copy = "" if duplicate_of is None else f", same content as image {duplicate_of}"
        outcome = "duplicates" if duplicate_of is not None else "filed"
        self.announcer.image(logging.INFO, outcome, "%s → %s%s%s", source, shown, score, copy)

    def _move(
        self, plan: PlannedMove, claim: Claim, reserved: set[Path]
    ) -> tuple[PlannedMove, str | None] | None:
        """Move one file; (plan, None) when moved, (plan, reason) when gone, None to retry."""
        for _ in range(_NAME_ATTEMPTS):
            try:
                self._move_noted(plan, claim)
                return plan, None
            except FileExistsError:
                dest = free_name(plan.dest.parent, _original_name(plan), reserved=reserved)
                reserved.add(dest)
                plan = self.ledger.replan(plan, dest)
            except SourceChanged as exc:
                log.warning("not filing %s: %s", loggable(plan.source), exc.strerror)
                return plan, f"{LEFT}: {exc.strerror}"
            except PathChanged as exc:
                log.error(
                    "cannot file %s into %s (will retry): %s",
                    loggable(plan.source),
                    loggable(str(exc.filename)),
                    exc.strerror,
                )
                return None
            except FileNotFoundError:
                if not lexists_under(self.paths.inbox, plan.source):
                    return plan, VANISHED
                log.warning(
                    "cannot file %s: destination folder %s vanished",
                    loggable(plan.source),
                    loggable(plan.dest),
                )
                return None
            except OSError as exc:
                # Disk full, a busy network share, permissions being fixed: the row stays
                # pending with its dest_path and the file in the inbox, so nothing is lost.
                level = logging.ERROR if exc.errno == errno.ENOSPC else logging.WARNING
                log.log(level, "cannot file %s yet (will retry): %s", loggable(plan.source), exc)
                return None
        log.warning(
            "cannot find a free name for %s in %s",
            loggable(plan.source),
            loggable(plan.dest.parent),
        )
        return None

    def _move_noted(self, plan: PlannedMove, claim: Claim) -> None:
        """move_no_clobber, telling the library watcher first, and untelling it on failure."""
        if self.own is None or not plan.dest.is_relative_to(self.paths.library):
            self._move_file(plan, claim)
            return
        # Before the move, so the library event cannot arrive first. A rename keeps the
        # inode; a copy across filesystems gets a new one and is looked up instead.
        self.own.add(plan.dest, device=claim.device, inode=claim.inode)
        try:
            self._move_file(plan, claim)
        except BaseException:
            self.own.discard(plan.dest)
            raise

    def _move_file(self, plan: PlannedMove, claim: Claim) -> None:
        """Move the claimed file itself, never through a symbolic link, never out of the roots."""
        move_no_clobber(
            plan.source,
            plan.dest,
            sync=False,
            src_root=self.paths.inbox,
            dest_root=self._root_of(plan.dest),
            expect=(claim.device, claim.inode),
        )

    def _root_of(self, dest: Path) -> Path:
        """The configured folder a destination lies in (every destination lies in one)."""
        for root in (self.paths.library, self.paths.failed, self.paths.duplicates):
            if dest.is_relative_to(root):
                return root
        raise AssertionError(f"{dest} is in no folder files are filed to")


def entry_for(item: Decoded, dest: Path, *, status: str, duplicate_of: int | None) -> Entry:
    """What the ledger records for `item` before it is moved to `dest`."""
    claim = item.claim
    return Entry(
        source=claim.path,
        dest=dest,
        status=status,
        sha256=item.sha256,
        size=claim.size,
        device=claim.device,
        inode=claim.inode,
        received_at=claim.received_at,
        label=item.label,
        score=item.score,
        model_version=item.model_version,
        error=item.error,
        duplicate_of=duplicate_of,
        node=item.node,
    )


def _under(path: Path, root: Path) -> Path:
    """`path` relative to `root` where it lies under it, else as it is."""
    return path.relative_to(root) if path.is_relative_to(root) else path


def _original_name(plan: PlannedMove) -> str:
    return display_path(Path(plan.source.name))
