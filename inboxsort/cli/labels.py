"""Label commands: `label PATH CLASS` (one correction) and `reclassify` (the active model again)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from inboxsort.config import Config
from inboxsort.errors import BadImage, ConfigError, InboxsortError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BATCH = 32  # images per predict_on_batch call: bounded memory, one graph call per batch


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`2h`, `7d`, `30m`, `1w` ago, or an ISO date/time (local time unless it has a zone)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date (2024-05-01, 2024-05-01T14:00) "
            "nor a relative time (30m, 2h, 7d, 1w)"
        ) from None
    # A date the user types means their own wall clock; astimezone() reads a naive value so.
    return when.astimezone(dt.UTC)


def add_commands(sub: Any) -> None:
    """Register the label commands on the CLI's subparsers."""
    label = sub.add_parser("label", help="give a filed image its right class (moves it)")
    label.add_argument("path", metavar="PATH", type=Path, help="an image in the library")
    label.add_argument("label", metavar="CLASS", help="one of the active model's classes")
    label.set_defaults(handler=cmd_label)

    reclassify = sub.add_parser(
        "reclassify", help="run the active model over filed images again; report or move changes"
    )
    reclassify.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="filed since an ISO date or 2h, 7d"
    )
    mode = reclassify.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="report only (the default)")
    mode.add_argument("--apply", action="store_true", help="move the images that change label")
    reclassify.add_argument("--json", action="store_true")
    reclassify.set_defaults(handler=cmd_reclassify)


def _classes(store: Any) -> list[str]:
    """The active model's classes from its card, without loading TensorFlow."""
    classes = store.info(store.active_version()).classes
    if not classes:
        raise ConfigError("the active model's card lists no classes")
    return list(classes)


def cmd_label(config: Config, args: argparse.Namespace) -> int:
    """Record the user's label for one filed image and move it to library/<CLASS>/."""
    from inboxsort.cli.models import open_store
    from inboxsort.db import SOURCE_LABEL
    from inboxsort.labels import check_class, relabel

    store = open_store(config)
    classes = _classes(store)
    check_class(args.label, classes)  # before touching anything, and with the allowed names
    done = relabel(
        store.db,
        image_path=args.path,
        new_label=args.label,
        source=SOURCE_LABEL,
        library=config.paths.library,
        classes=classes,
    )
    if done.correction_id is None:
        print(f"{done.new_path} is already labelled {done.new_label}")
    elif done.new_path == done.old_path:
        print(f"labelled {done.new_path} as {done.new_label} (was {done.old_label})")
    else:
        was = f"(was {done.old_label})"
        print(f"labelled {done.old_path} as {done.new_label} {was}: moved to {done.new_path}")
    return 0


def _candidates(db: Any, since: dt.datetime | None) -> list[Any]:
    """Filed images (optionally filed since `since`) that no user has corrected."""
    from sqlalchemy import exists, func, select

    from inboxsort.db import SOURCE_RECLASSIFY, STATUS_FILED, Correction, Image

    # The user's word beats the model: any correction but an earlier reclassify excludes.
    corrected = exists().where(
        Correction.image_id == Image.id, Correction.source != SOURCE_RECLASSIFY
    )
    stmt = select(Image).where(Image.status == STATUS_FILED, ~corrected).order_by(Image.id)
    if since is not None:
        stmt = stmt.where(func.coalesce(Image.filed_at, Image.received_at) >= since)
    with db.session() as session:
        return list(session.scalars(stmt))


def cmd_reclassify(config: Config, args: argparse.Namespace) -> int:
    """Classify filed images with the active model; report label changes, move them with --apply."""
    import numpy as np

    from inboxsort.cli.models import open_store, require_model
    from inboxsort.db import SOURCE_RECLASSIFY
    from inboxsort.imageio import load_image
    from inboxsort.labels import relabel

    store = open_store(config)
    classifier = require_model(store)
    classes = list(classifier.classes)
    rows = _candidates(store.db, args.since)
    changes: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    review_below = config.filing.review_below
    for start in range(0, len(rows), _BATCH):
        pixels, batch = [], []
        for row in rows[start : start + _BATCH]:
            try:
                pixels.append(load_image(Path(row.path), classifier.image_size))
                batch.append(row)
            except (BadImage, OSError) as exc:
                unreadable.append({"path": row.path, "error": str(exc)})
        if not pixels:
            continue
        for row, pred in zip(batch, classifier.predict(np.stack(pixels)), strict=True):
            if pred.label == row.label:
                continue
            changes.append(
                {
                    "id": row.id,
                    "path": row.path,
                    "old_label": row.label,
                    "new_label": pred.label,
                    "score": round(pred.score, 4),
                    # Below the review threshold the new model is unsure too: report, keep.
                    "unsure": pred.score < review_below,
                }
            )
    failed = 0
    if args.apply:
        for change in changes:
            if change["unsure"]:
                continue
            try:
                done = relabel(
                    store.db,
                    image_path=Path(change["path"]),
                    new_label=change["new_label"],
                    source=SOURCE_RECLASSIFY,
                    library=config.paths.library,
                    classes=classes,
                    score=change["score"],
                    model_version=classifier.version,
                )
                change["new_path"] = str(done.new_path)
            except InboxsortError as exc:  # one image that moved meanwhile must not stop all
                change["error"] = str(exc)
                failed += 1
    _report(args, classifier.version, len(rows), changes, unreadable)
    return 1 if failed else 0


def _report(
    args: argparse.Namespace,
    version: int,
    checked: int,
    changes: list[dict[str, Any]],
    unreadable: list[dict[str, str]],
) -> None:
    if args.json:
        out = {
            "model_version": version,
            "applied": bool(args.apply),
            "checked": checked,
            "changes": changes,
            "unreadable": unreadable,
        }
        print(json.dumps(out, indent=2))
        return
    for c in changes:
        if "error" in c:
            outcome = f"  NOT MOVED: {c['error']}"
        elif "new_path" in c:
            outcome = f"  moved to {c['new_path']}"
        elif c["unsure"]:
            outcome = "  (below filing.review_below: kept)"
        else:
            outcome = ""
        print(f"{c['path']}: {c['old_label']} → {c['new_label']} ({c['score']:.4f}){outcome}")
    for u in unreadable:
        print(f"{u['path']}: unreadable: {u['error']}")
    if args.apply:
        moved = sum("new_path" in c for c in changes)
        print(f"model version {version}: moved {moved} of {checked} filed images")
    else:
        hint = "; run with --apply to move them" if changes else ""
        count = f"{len(changes)} of {checked} filed images"
        print(f"model version {version}: {count} would change{hint}")
