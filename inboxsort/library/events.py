"""What the library watcher hands the tracker: one filesystem event, reduced to its kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CREATED, MOVED, DELETED, CLOSED = "created", "moved", "deleted", "closed"


@dataclass(frozen=True)
class LibraryEvent:
    """One watchdog event, reduced to what the tracker needs (MOVED: `src` → `path`)."""

    kind: str
    path: Path
    src: Path | None = None
    is_dir: bool = False
