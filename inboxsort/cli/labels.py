"""Label commands: `label PATH CLASS` (one correction) and `reclassify` (the active model again)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inboxsort.cli.common import open_store, parse_time
from inboxsort.config import Config
from inboxsort.errors import ConfigError, InboxsortError

if TYPE_CHECKING:
    from inboxsort.db import Database, Image
    from inboxsort.model.classifier import Classifier
    from inboxsort.model.registry import ModelStore

# Filed images decoded at once by reclassify: bounds its memory on a large library.
_CHUNK = 256


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """The --since value in UTC: `2h`, `7d`, `1.5h` ago, or an ISO date or date and time."""
    try:
        return parse_time(text, now=now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _classes(store: ModelStore) -> list[str]:
    """The active model's classes from its card, without loading TensorFlow."""
    classes = store.info(store.active_version()).classes
    if not classes:
        raise ConfigError("the active model's card lists no classes")
    return list(classes)


def cmd_label(config: Config, args: argparse.Namespace) -> int:
    """Record the user's label for one filed image and move it to library/<CLASS>/."""
    from inboxsort.db import SOURCE_LABEL
    from inboxsort.layout import check_class
    from inboxsort.library.relabel import relabel

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
        node=config.node.name,
    )
    if done.correction_id is None:
        print(f"{done.new_path} is already labelled {done.new_label}")
    elif done.new_path == done.old_path:
        print(f"labelled {done.new_path} as {done.new_label} (was {done.old_label})")
    else:
        was = f"(was {done.old_label})"
        print(f"labelled {done.old_path} as {done.new_label} {was}: moved to {done.new_path}")
    return 0


def _candidates(db: Database, since: dt.datetime | None) -> list[Image]:
    """Filed images (optionally filed since `since`) that no user has corrected."""
    from inboxsort.db.queries import uncorrected_filed

    with db.session() as session:
        return uncorrected_filed(session, since=since)


def cmd_reclassify(config: Config, args: argparse.Namespace) -> int:
    """Classify filed images with the active model; report label changes, move them with --apply."""
    from inboxsort.model.registry import require_model

    store = open_store(config)
    classifier = require_model(store, runtime=config.serving.runtime)
    rows = _candidates(store.db, args.since)
    changes, unreadable = _changes(classifier, rows, review_below=config.filing.review_below)
    failed = _apply(config, store.db, classifier, changes) if args.apply else 0
    _report(args, classifier.version, len(rows), changes, unreadable)
    return 1 if failed else 0


def _changes(
    classifier: Classifier, rows: list[Image], *, review_below: float
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The rows whose label the classifier changes, and the files it could not read."""
    from inboxsort.imageio import load_many

    changes: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    # Chunks bound the decoded pixels held at once; predict_all batches within each chunk.
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        loaded = load_many([Path(r.path) for r in chunk], classifier.image_size)
        unreadable += [{"path": chunk[i].path, "error": why} for i, why in loaded.errors]
        predictions = classifier.to_predictions(classifier.predict_all(loaded.pixels))
        for index, pred in zip(loaded.loaded, predictions, strict=True):
            row = chunk[index]
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
    return changes, unreadable


def _apply(
    config: Config, db: Database, classifier: Classifier, changes: list[dict[str, Any]]
) -> int:
    """Move each sure change to its new class folder; returns how many could not be moved."""
    from inboxsort.db import SOURCE_RECLASSIFY
    from inboxsort.library.relabel import relabel

    failed = 0
    for change in changes:
        if change["unsure"]:
            continue
        try:
            done = relabel(
                db,
                image_path=Path(change["path"]),
                new_label=change["new_label"],
                source=SOURCE_RECLASSIFY,
                library=config.paths.library,
                classes=list(classifier.classes),
                score=change["score"],
                model_version=classifier.version,
                node=config.node.name,
            )
            change["new_path"] = str(done.new_path)
        except InboxsortError as exc:  # one image that moved meanwhile must not stop all
            change["error"] = str(exc)
            failed += 1
    return failed


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
