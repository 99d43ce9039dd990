"""Content hashes: the one SHA-256 of a file's bytes that the daemon, labels and trainer share."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


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
