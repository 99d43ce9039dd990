"""Thumbnails: made once per image and content, cached, and only of files inside the library.

No path from a request is ever used: the request names an image id, the database gives its
path, and the file is opened below the library one folder at a time, never through a
symbolic link (dirfd.open_under), so neither `..` nor a link can lead out of it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from inboxsort.db import STATUS_FILED, Image
from inboxsort.dirfd import open_under
from inboxsort.errors import BadImage
from inboxsort.imageio import thumbnail_jpeg
from inboxsort.web.security import Refused

THUMB_SIDE = 256
# Larger files are not read into memory for a thumbnail (the pixel limit still applies).
MAX_SOURCE_BYTES = 256 << 20


def cache_name(row: Image) -> str:
    """The cache file of a row: its id and content hash, so new content makes a new file."""
    return f"{row.id}-{row.sha256 or 'nohash'}-{THUMB_SIDE}.jpg"


def _inside(row: Image, library: Path) -> Path:
    """The row's file, refused unless it is a filed image lexically inside the library."""
    if row.status != STATUS_FILED:
        raise Refused(404, f"image {row.id} is {row.status}, not in the library: no thumbnail")
    path = Path(row.path)
    if not path.is_absolute() or os.path.normpath(path) != str(path):
        raise Refused(404, f"image {row.id} has no plain library path: no thumbnail")
    if not path.is_relative_to(library) or path == library:
        raise Refused(404, f"image {row.id} is not inside the library: no thumbnail")
    return path


def _read(path: Path, library: Path, image_id: int) -> bytes:
    try:
        fd = open_under(library, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        # ELOOP: a symbolic link on the way; ENOENT: moved since the row was written.
        raise Refused(404, f"image {image_id}: cannot open its file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Refused(404, f"image {image_id}: not a regular file")
        if st.st_size > MAX_SOURCE_BYTES:
            raise Refused(404, f"image {image_id}: too large for a thumbnail")
        return handle.read()


def thumbnail(row: Image, *, library: Path, cache: Path) -> bytes:
    """The JPEG thumbnail of a filed image: from the cache, or made now and cached."""
    path = _inside(row, library)
    cached = cache / cache_name(row)
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    try:
        data = thumbnail_jpeg(_read(path, library, row.id), THUMB_SIDE)
    except BadImage as exc:
        raise Refused(422, f"image {row.id}: {exc}") from None
    _store(cache, cached.name, data)
    return data


def _store(cache: Path, name: str, data: bytes) -> None:
    """Write a cache file atomically: readers see all of it or none."""
    cache.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=cache, prefix=".thumb-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # Our own cache file under a name only this image's content maps to: replacing a
        # copy another request made meanwhile loses nothing.
        Path(temp).replace(cache / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
