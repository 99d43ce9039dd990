"""One model lineage for a fleet: each version's files live in the database as well as on disk.

A node that did not train a version fetches its files from the database into its own models
folder (a cache), each checked against the SHA-256 stored with it, so no node needs a shared
filesystem. A cached folder whose files differ from the stored ones (a corrupt copy, or a card
and flatbuffer that `models export` added on another node) is fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from inboxsort.db import Database
from inboxsort.db.artifacts import artifact_hashes, put_artifacts, read_artifacts
from inboxsort.errors import ModelError
from inboxsort.files import fsync_dir
from inboxsort.model.artifact import CARD_FILE, MODEL_FILE
from inboxsort.model.litert import LITERT_FILE

log = logging.getLogger(__name__)

ARTIFACT_NAMES = (MODEL_FILE, CARD_FILE, LITERT_FILE)


def folder_files(folder: Path) -> dict[str, bytes]:
    """The version files a folder holds, by name."""
    return {n: (folder / n).read_bytes() for n in ARTIFACT_NAMES if (folder / n).is_file()}


def publish(db: Database, version: int, folder: Path) -> None:
    """Store (or update) a version's files in the database, for the other nodes."""
    files = folder_files(folder)
    with db.begin() as session:
        put_artifacts(session, version, files)


def _sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def ensure_local(db: Database, version: int, folder: Path) -> Path:
    """`folder`, holding exactly the files the database stores for `version` (fetched when
    missing or different); unchanged when the database stores none (a version registered
    before revision 0004, or on a node that predates the fleet)."""
    with db.session() as session:
        stored = artifact_hashes(session, version)
    if not stored:
        return folder
    if all(_sha256(folder / name) == sha for name, sha in stored.items()):
        return folder
    what = "differs from" if folder.exists() else "is not in"
    log.info("model version %d: %s %s the database's copy; fetching it", version, folder, what)
    _fetch(db, version, folder)
    return folder


def _fetch(db: Database, version: int, folder: Path) -> None:
    """Write the stored files into a new folder, check each SHA-256, and rename it into place."""
    with db.session() as session:
        rows = read_artifacts(session, version)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".fetch", dir=folder.parent))
    try:
        for row in rows:
            data = bytes(row.data)
            if hashlib.sha256(data).hexdigest() != row.sha256:
                raise ModelError(
                    f"model version {version}: {row.name} in the database does not match its "
                    f"SHA-256 {row.sha256}"
                )
            with open(temp / row.name, "wb") as handle:
                handle.write(data)
                os.fsync(handle.fileno())
        fsync_dir(temp)
        if folder.exists():
            # A cache copy that differs: set aside, replaced, then removed.
            old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            folder.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            temp.rename(folder)
        except OSError:
            if not (folder / MODEL_FILE).is_file():
                raise
            # Another process of this node fetched it at the same moment: theirs stands.
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
