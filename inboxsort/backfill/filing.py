"""`backfill --file`: the daemon's filing (a row before every move, no clobber), per archive.

Each archive folder stands where the daemon's inbox does: files are taken from it, through no
symbolic link, into library/<label>/ or failed/, and a run killed mid-move is recovered by the
next one as the daemon recovers its inbox.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from inboxsort.backfill.scan import Candidate
from inboxsort.backfill.writer import Result, Writer
from inboxsort.config import FilingConfig, PathsConfig
from inboxsort.db import Database
from inboxsort.db.backfill import mtime_moment
from inboxsort.db.schema import ORIGIN_BACKFILL
from inboxsort.errors import ConfigError
from inboxsort.intake.filing import Filer
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Claim, Decoded
from inboxsort.intake.recovery import recover

log = logging.getLogger(__name__)

# A batch that comes back with files to try again (a name taken meanwhile, a busy disk) is
# tried this many more times; what is left stays in the archive for the next run.
_ATTEMPTS = 3


def check_apart(roots: Sequence[Path], paths: PathsConfig) -> None:
    """ConfigError when an archive folder and a folder files are filed to overlap."""
    for root in roots:
        for key in ("library", "failed", "duplicates"):
            folder = getattr(paths, key).resolve()
            if root.is_relative_to(folder) or folder.is_relative_to(root):
                raise ConfigError(
                    f"backfill --file: {root} and paths.{key} ({folder}) overlap; "
                    "files would be filed into the folder they are taken from"
                )


def recover_moves(db: Database, roots: Iterable[Path], paths: PathsConfig) -> None:
    """Finish the moves a killed `--file` run left half done under each of `roots`.

    Before the scan: a file left under both names (archive and library) loses its archive
    name here, so that the scan does not take it for a file still to do.
    """
    ledger = Ledger(db)
    for root in roots:
        recover(ledger, dataclasses.replace(paths, inbox=root), origin=ORIGIN_BACKFILL)


class FilingWriter(Writer):
    """Files each result as the daemon does, recording it on the way (status filed or failed)."""

    def __init__(
        self,
        db: Database,
        *,
        paths: PathsConfig,
        filing: FilingConfig,
        candidates: Iterable[Candidate],
    ) -> None:
        super().__init__(db)
        self.candidates = {c.text: c for c in candidates}
        roots = {c.root for c in self.candidates.values()}
        self.filers = {
            root: Filer(
                dataclasses.replace(paths, inbox=root), filing, self.ledger, origin=ORIGIN_BACKFILL
            )
            for root in roots
        }
        self.left = 0  # files still in the archive after every attempt
        # A filed file's row no longer names its archive path, so the transaction's check
        # cannot see a batch come back twice: this run remembers what it filed.
        self._seen: set[str] = set()

    def _decoded(self, result: Result) -> Decoded:
        candidate = self.candidates[result.path]
        claim = Claim(
            path=candidate.path,
            device=candidate.device,
            inode=candidate.inode,
            size=result.size,
            mtime_ns=result.mtime_ns,
            is_symlink=candidate.problem is not None and "symbolic link" in candidate.problem,
            received_at=mtime_moment(result.mtime_ns),
        )
        # Filing looks at `ok` (pixels present), never at the pixels: the actor kept them.
        pixels = None if result.error else np.empty(0, dtype=np.uint8)
        return Decoded(
            claim,
            result.sha256,
            pixels,
            result.error,
            label=result.label,
            score=result.score,
            model_version=result.version,
            node=result.node,
        )

    def write(self, results: list[Result]) -> None:
        """File one batch, folder by folder; a file that cannot be filed now stays where it is."""
        by_root: dict[Path, list[Decoded]] = {}
        for result in self.fresh(results):
            if result.path in self._seen:
                self.tally.repeated += 1
                continue
            self._seen.add(result.path)
            item = self._decoded(result)
            by_root.setdefault(self.candidates[result.path].root, []).append(item)
        for root, items in by_root.items():
            self._file(self.filers[root], items)

    def _file(self, filer: Filer, items: list[Decoded]) -> None:
        for _ in range(_ATTEMPTS):
            outcome = filer.file_batch(items)
            again = {id(item) for item in outcome.retry}
            for item in items:
                if id(item) in again:
                    continue
                if item.ok:
                    self.tally.labels[item.label or ""] += 1
                else:
                    self.tally.failures[item.error or "unknown"] += 1
            items = outcome.retry
            if not items:
                return
        self.left += len(items)
        log.warning("%d file(s) could not be filed now; they stay for the next run", len(items))
