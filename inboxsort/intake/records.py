"""The small frozen records that pass from one daemon stage to the next."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Arrival:
    """A path the watcher or a scan saw; `closed` means a writer closed it after writing.

    `writing` means inotify saw it written (a modify event), so its writer's close is still to
    come; `delay` holds a retry back (seconds) after a transient error such as a busy file.
    """

    path: Path
    closed: bool = False
    writing: bool = False
    is_dir: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A settled file taken for processing, identified by device and inode."""

    path: Path
    device: int
    inode: int
    size: int
    mtime_ns: int
    is_symlink: bool
    received_at: datetime

    def fleet_key(self, root: Path) -> str:
        """The file's identity as every node sharing the inbox sees it: where it lies under
        the inbox, its size and mtime (device and inode differ between machines)."""
        where = os.fsencode(self.path.relative_to(root))
        digest = hashlib.sha256(where)
        digest.update(f"\0{self.size}\0{self.mtime_ns}".encode())
        return digest.hexdigest()

    @classmethod
    def from_stat(cls, path: Path, st: os.stat_result, *, received_at: datetime) -> Claim:
        """The claim on `path` as lstat() saw it."""
        return cls(
            path=path,
            device=st.st_dev,
            inode=st.st_ino,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            is_symlink=stat.S_ISLNK(st.st_mode),
            received_at=received_at,
        )


@dataclass(frozen=True)
class Decoded:
    """A claimed file after reading: its pixels, or the reason it cannot be used."""

    claim: Claim
    sha256: str | None
    pixels: np.ndarray | None
    error: str | None
    # Set for an image that decoded; filled in by the model before filing.
    label: str | None = None
    score: float | None = None
    model_version: int | None = None
    # The node that classified it, when not this process (a backfill's Ray actor).
    node: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image decoded and can be classified."""
        return self.pixels is not None
