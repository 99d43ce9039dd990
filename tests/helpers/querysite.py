"""A database of eight images with known ages, labels and scores, for query and stats tests."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

from inboxsort.cli import build_parser
from inboxsort.config import Config, load_config
from inboxsort.db import (
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_FILED,
    STATUS_PENDING,
    Correction,
    Database,
    Image,
    ModelVersion,
    open_database,
    utcnow,
)
from inboxsort.errors import InboxsortError

NOW = dt.datetime(2024, 6, 15, 12, 0, tzinfo=dt.UTC)
AGE = dt.timedelta
# id: (original_name, status, label, score, model_version, age)
ROWS: dict[int, tuple[str, str, str | None, float | None, int | None, dt.timedelta]] = {
    1: ("IMG_0001.JPG", STATUS_FILED, "cats", 0.95, 1, AGE(minutes=10)),
    2: ("img_0002.jpg", STATUS_FILED, "dogs", 0.55, 1, AGE(hours=3)),
    3: ("holiday_cat.png", STATUS_FILED, "cats", 0.80, 0, AGE(days=2)),
    4: ("broken.jpg", STATUS_FAILED, None, None, None, AGE(days=5)),
    5: ("IMG_0001 (1).JPG", STATUS_DUPLICATE, "cats", 0.95, 1, AGE(days=8)),
    6: ("new.jpg", STATUS_PENDING, None, None, None, AGE(minutes=1)),
    7: ("100%_sure.jpg", STATUS_FILED, "dogs", 0.99, 2, AGE(days=40)),
    8: ("100xxsure.jpg", STATUS_FILED, "dogs", 0.70, 2, AGE(days=20)),
}
BY_AGE = [7, 8, 5, 4, 3, 2, 1, 6]  # the default order: oldest first


@dataclass(frozen=True)
class Site:
    root: Path
    config_path: Path
    config: Config
    now: dt.datetime


def populate(db: Database, now: dt.datetime) -> None:
    """Write the ROWS the way the daemon records images, plus versions and corrections."""
    with db.begin() as session:
        for image_id, (name, status, label, score, version, age) in ROWS.items():
            folder = {STATUS_FILED: f"library/{label}", STATUS_PENDING: "inbox"}.get(status, status)
            session.add(
                Image(
                    id=image_id,
                    sha256=f"{image_id:064x}",
                    original_name=name,
                    source_path=f"/site/inbox/{name}",
                    path=f"/site/{folder}/{name}",
                    label=label,
                    score=score,
                    model_version=version,
                    status=status,
                    error="cannot identify image file" if status == STATUS_FAILED else None,
                    duplicate_of=1 if status == STATUS_DUPLICATE else None,
                    received_at=now - age,
                )
            )
        for version, active in ((1, False), (2, True)):
            session.add(
                ModelVersion(
                    version=version,
                    path=f"/site/models/{version:04d}",
                    metrics={"test": {"accuracy": 0.9 + version / 100}},
                    active=active,
                    parent=version - 1 or None,
                    image_size=160,
                    classes=["cats", "dogs"],
                )
            )
        session.flush()
        session.add(Correction(image_id=3, old_label="dogs", new_label="cats", source="move"))
        session.add(
            Correction(
                image_id=7, old_label="cats", new_label="dogs", source="label", used_in_version=2
            )
        )


def build_site(root: Path, writer, database_url: str | None = None) -> Site:
    """A config under `root` and its database holding ROWS (test_cli_stats.py uses it too);
    `database_url` replaces the SQLite file under `root` (e.g. a PostgreSQL test database)."""
    config_path = writer(root, **({"database_url": database_url} if database_url else {}))
    config = load_config(config_path)
    now = utcnow()
    with open_database(config.database.url) as db:
        populate(db, now)
    return Site(root, config_path, config, now)


def run(config: Config, *argv: str) -> int:
    """One command in-process, errors mapped to exit codes as main() does (no logging setup)."""
    args = build_parser().parse_args(list(argv))
    try:
        return int(args.handler(config, args) or 0)
    except InboxsortError as exc:
        print(f"inboxsort: {exc}", file=sys.stderr)
        return exc.exit_code
