"""The one writer: in the driver, each batch of results as it streams back, one commit each.

Exactly once: a result whose file is already on record (a batch Ray ran again after a worker
died, a file recorded by a run that was killed) is dropped in the same transaction that would
insert it; a file moved since an earlier run gets its old row back, found by SHA-256.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inboxsort.db import Database, Image, utcnow
from inboxsort.db.backfill import backfilled_with, mtime_moment, recorded_at
from inboxsort.db.schema import (
    ORIGIN_BACKFILL,
    STATUS_CLASSIFIED,
    STATUS_FAILED,
    STATUS_PENDING,
)
from inboxsort.intake.ledger import Ledger


@dataclass(frozen=True)
class Result:
    """One file's outcome from the pool: a label and score, or the reason it failed."""

    path: str
    size: int
    mtime_ns: int
    device: int | None
    inode: int | None
    sha256: str | None
    label: str | None
    score: float | None
    error: str | None
    node: str | None
    version: int | None


def unpack(batch: dict[str, np.ndarray]) -> list[Result]:
    """The rows of one output batch of the pipeline as Results."""
    out = []
    for i in range(len(batch["path"])):
        error = str(batch["error"][i]) or None
        score = float(batch["score"][i])
        out.append(
            Result(
                path=str(batch["path"][i]),
                size=int(batch["size"][i]),
                mtime_ns=int(batch["mtime_ns"][i]),
                device=int(batch["device"][i]),
                inode=int(batch["inode"][i]),
                sha256=str(batch["sha256"][i]) or None,
                label=None if error else str(batch["label"][i]),
                score=None if error or np.isnan(score) else score,
                error=error,
                node=str(batch["node"][i]),
                version=int(batch["version"][i]),
            )
        )
    return out


@dataclass
class Tally:
    """What a run did, for the progress line and the summary."""

    labels: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    moved: int = 0
    repeated: int = 0

    @property
    def done(self) -> int:
        """Files this run has finished with (recorded, found moved, or dropped as repeats)."""
        return sum(self.labels.values()) + sum(self.failures.values()) + self.moved + self.repeated


def new_row(result: Result, *, status: str) -> Image:
    """The backfill row of one result (left where it lies)."""
    return Image(
        sha256=result.sha256,
        original_name=Path(result.path).name,
        source_path=result.path,
        path=result.path,
        label=result.label,
        score=result.score,
        model_version=result.version,
        node=result.node,
        origin=ORIGIN_BACKFILL,
        status=status,
        error=result.error,
        size=result.size,
        device=result.device,
        inode=result.inode,
        received_at=mtime_moment(result.mtime_ns),
        classified_at=utcnow() if result.label is not None else None,
    )


def _moved_row(rows: list[Image]) -> Image | None:
    """Of the rows holding some content, the first whose file is no longer where it says."""
    return next((row for row in rows if not os.path.lexists(row.path)), None)


class Writer:
    """Records results where they lie (status classified or failed), a batch per commit."""

    def __init__(self, db: Database, *, ledger: Ledger | None = None) -> None:
        self.db = db
        self.ledger = ledger or Ledger(db)
        self.tally = Tally()

    def fresh(self, results: list[Result]) -> list[Result]:
        """The results of a batch, each file once (a batch run again may come back twice)."""
        out = list({r.path: r for r in results}.values())
        self.tally.repeated += len(results) - len(out)
        return out

    def write(self, results: list[Result]) -> None:
        """Record one batch in one transaction; repeats and moved files add no row."""
        results = self.fresh(results)
        if not results:
            return
        counts = Tally()

        def commit() -> None:
            nonlocal counts
            counts = Tally()
            with self.db.begin() as session:
                known = recorded_at(session, [r.path for r in results])
                hashes = [r.sha256 for r in results if r.sha256 and r.path not in known]
                holders = backfilled_with(session, hashes)
                for r in results:
                    row = known.get(r.path)
                    if row is not None and row.status != STATUS_PENDING and row.size == r.size:
                        counts.repeated += 1
                        continue
                    moved = _moved_row(holders.get(r.sha256 or "", []))
                    if moved is not None:
                        moved.path, moved.size = r.path, r.size
                        moved.device, moved.inode = r.device, r.inode
                        counts.moved += 1
                        continue
                    status = STATUS_FAILED if r.error else STATUS_CLASSIFIED
                    session.add(new_row(r, status=status))
                    if r.error:
                        counts.failures[r.error] += 1
                    else:
                        counts.labels[r.label or ""] += 1

        self.ledger.run("recording backfill results", commit)
        self.tally.labels.update(counts.labels)
        self.tally.failures.update(counts.failures)
        self.tally.moved += counts.moved
        self.tally.repeated += counts.repeated
