"""A site every check passes on, and ways to break one check at a time."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from inboxsort.config import load_config
from inboxsort.db import ModelVersion, open_database, utcnow

FOLDER_KEYS = ("inbox", "library", "failed", "models", "duplicates")


def healthy_setup(root: Path, model_folder: Path, writer) -> Path:
    """Folders, a database at head and `model_folder` active as version 1; returns the config."""
    config_path = writer(root)
    config = load_config(config_path)
    for key in FOLDER_KEYS:
        getattr(config.paths, key).mkdir(parents=True, exist_ok=True)
    folder = config.paths.models / "0001"
    shutil.copytree(model_folder, folder)
    card = json.loads((folder / "card.json").read_text())
    with open_database(config.database.url) as db, db.begin() as session:
        session.add(
            ModelVersion(
                version=1,
                created_at=utcnow(),
                path=str(folder),
                metrics=card.get("metrics") or {},
                active=True,
                image_size=card["image_size"],
                classes=card["classes"],
            )
        )
    return config_path


def make_unwritable(path: Path) -> None:
    """Make `path` unusable as a writable folder, also for root (who ignores mode bits)."""
    if os.geteuid() == 0:
        path.write_text("a file where a folder belongs\n")
    else:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o500)


def limit_file(tmp_path: Path, value: str) -> Path:
    """A stand-in for /proc/sys/fs/inotify/max_user_watches holding `value`."""
    path = tmp_path / "max_user_watches"
    path.write_text(value + "\n")
    return path
