"""Reading a claimed file once: check it is still what settled, hash it, decode it."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from inboxsort.dirfd import PathChanged, identity, open_under
from inboxsort.errors import BadImage
from inboxsort.files import is_transient, loggable
from inboxsort.imageio import IncompleteImage, decode_image
from inboxsort.intake.records import Claim, Decoded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    """A file to look at again later (still being written, busy), with the reason."""

    claim: Claim
    reason: str
    transient_error: bool = False


@dataclass(frozen=True)
class Undecodable:
    """A file read whole that does not decode, perhaps only because its writer is not done."""

    decoded: Decoded


def _bad_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_and_decode(claim: Claim, size: int, *, root: Path) -> Decoded | Retry | Undecodable | None:
    """Read a claimed file once, hash it and decode it; None when it vanished.

    The file is opened through the folders below `root` (the inbox), none of them followed if
    it has become a symbolic link: a path that no longer leads there is a file gone from it.
    """
    if _bad_name(claim.path):
        return Decoded(claim, None, None, "name is not valid UTF-8")
    if claim.is_symlink:
        # Never followed: the target may be anywhere (a device, another user's file).
        return Decoded(claim, None, None, "symbolic link (not followed)")
    try:
        # O_NOFOLLOW: the name may have become a symlink since it was claimed.
        # O_NONBLOCK: opening a FIFO must not hang the pool (regular files ignore it).
        fd = open_under(root, claim.path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PathChanged as exc:
        log.warning("%s: not read: %s", loggable(claim.path), exc.strerror)
        return None
    except OSError as exc:
        return _read_error(claim, exc)
    try:
        st = os.fstat(fd)
        if identity(st) != (claim.device, claim.inode):
            return Retry(claim, "replaced after it was claimed")
        if not stat.S_ISREG(st.st_mode):
            return Decoded(claim, None, None, "not a regular file")
        if (st.st_size, st.st_mtime_ns) != (claim.size, claim.mtime_ns):
            return Retry(claim, "changed after it settled")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
        after = os.fstat(fd)
    except OSError as exc:
        return _read_error(claim, exc)
    finally:
        os.close(fd)
    unchanged = (after.st_size, after.st_mtime_ns) == (claim.size, claim.mtime_ns)
    if not unchanged or len(data) != st.st_size:
        return Retry(claim, "written to while being read")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        pixels = decode_image(data, size)
    except IncompleteImage as exc:
        return Undecodable(Decoded(claim, sha256, None, str(exc)))
    except BadImage as exc:
        return Decoded(claim, sha256, None, str(exc))
    return Decoded(claim, sha256, pixels, None)


def _read_error(claim: Claim, exc: OSError) -> Decoded | Retry:
    if is_transient(exc) or exc.errno == errno.ELOOP:
        return Retry(claim, f"cannot read yet: {exc.strerror}", transient_error=True)
    return Decoded(claim, None, None, f"cannot read: {exc.strerror or exc}")
