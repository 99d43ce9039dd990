"""Model commands: train, evaluate, classify, models list|activate|rollback|export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inboxsort.cli.common import open_store
from inboxsort.config import Config, TrainConfig
from inboxsort.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from inboxsort.model.registry import ModelStore


def add_commands(sub: Any) -> None:
    """Register the model commands on the CLI's subparsers."""
    train = sub.add_parser("train", help="train a model with the transfer-learning recipe")
    train.add_argument("--data", type=Path, help="folder of class folders, or train/ + validation/")
    train.add_argument("--epochs", type=int, help="phase 1 epochs (frozen base)")
    train.add_argument("--fine-tune-epochs", type=int, help="phase 2 epochs (0 skips it)")
    train.add_argument("--fine-tune-at", type=int, help="unfreeze base layers from this index")
    train.add_argument("--image-size", type=int, help="input size in pixels (160 or 224, ...)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--activate", action="store_true", help="serve the new version")
    train.add_argument("--export", type=Path, help="write the model folder here; register nothing")
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (otherwise a live line on a terminal, a log line per epoch elsewhere)",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a model on a folder of class folders")
    evaluate.add_argument("data", type=Path)
    evaluate.add_argument("--model", type=int, help="version (default: the active one)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=cmd_evaluate)

    _add_classify(sub)

    models = sub.add_parser("models", help="list, activate or roll back model versions")
    msub = models.add_subparsers(dest="action", required=True)
    listing = msub.add_parser("list", help="registered versions and the shipped default")
    listing.add_argument("--json", action="store_true")
    act = msub.add_parser("activate", help="serve a version (0 is the shipped default)")
    act.add_argument("version", type=int)
    act.add_argument(
        "--force", action="store_true", help="activate a version the retrain gate did not promote"
    )
    msub.add_parser("rollback", help="serve the active version's parent")
    export = msub.add_parser(
        "export", help="add a LiteRT flatbuffer to versions without one (needs TensorFlow)"
    )
    export.add_argument(
        "versions", type=int, nargs="*", metavar="VERSION", help="default: every one without"
    )
    export.add_argument(
        "--data",
        type=Path,
        help="check it on this folder of class folders (default: the test split of "
        "train.data, else confirmed library images)",
    )
    models.set_defaults(handler=cmd_models)


def _add_classify(sub: Any) -> None:
    """Register classify."""
    classify = sub.add_parser(
        "classify",
        help="print label and score per file; moves nothing",
        description="Prints one line per image: path, label, score (or ERROR and why). Exit "
        "status 1 when any file could not be read as an image.",
    )
    classify.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="image files, or folders: every file directly in a folder (not its subfolders, "
        "nor hidden files), in name order; --recursive for subfolders too",
    )
    classify.add_argument(
        "-r", "--recursive", action="store_true", help="classify the files of subfolders too"
    )
    classify.add_argument(
        "--model", type=int, metavar="VERSION", help="model version (default: the active one)"
    )
    classify.add_argument("--json", action="store_true", help="print a JSON list of results")
    classify.set_defaults(handler=cmd_classify)


def _train_options(config: Config, args: argparse.Namespace) -> TrainConfig:
    """The [train] recipe with the command line's overrides."""
    flags = ("image_size", "batch_size", "epochs", "fine_tune_epochs", "fine_tune_at", "seed")
    given = {name: getattr(args, name) for name in (*flags, "label_smoothing")}
    return dataclasses.replace(config.train, **{k: v for k, v in given.items() if v is not None})


def cmd_train(config: Config, args: argparse.Namespace) -> int:
    """Train a model; register it (or export it to a folder)."""
    from inboxsort.model.artifact import write_version_folder
    from inboxsort.trainer.progress import console_sink
    from inboxsort.trainer.train import summary_table, train

    data = args.data or config.train.data
    if data is None:
        raise ConfigError("config: train.data is not set: pass --data DIR")
    export = args.export
    # Before training, which takes minutes: an export never replaces anything already there.
    if export and (export.is_symlink() or export.exists()):
        try:
            empty = export.is_dir() and not export.is_symlink() and not any(export.iterdir())
        except OSError:
            empty = False
        if not empty:
            raise ConfigError(
                f"--export {export} exists and is not an empty folder; name a new or empty folder"
            )
    progress = None if args.quiet else console_sink(label="train")
    result = train(data, _train_options(config, args), verbose=0, progress=progress)
    if args.export:
        if args.export.exists():
            try:
                args.export.rmdir()  # the empty folder checked above (fails if it filled up)
            except OSError as exc:
                why = f"--export {args.export}: {exc.strerror}; the trained model was not written"
                raise ConfigError(why) from None
        write_version_folder(result.model, result.card, args.export, litert=result.litert)
        where = str(args.export)
    else:
        store = open_store(config)
        info = store.register(
            result.model,
            result.card,
            parent=None,
            activate=args.activate,
            note="inboxsort train",
            litert=result.litert,
        )
        where = f"version {info.version} in {info.path}" + (" (active)" if info.active else "")
    print(f"trained {where}\n{summary_table(result.card)}")
    if result.litert_error:
        print(f"  litert      not converted, serves with Keras: {result.litert_error}")
    return 0


def cmd_evaluate(config: Config, args: argparse.Namespace) -> int:
    """Accuracy, per-class figures and errors of a model on DIR/<class>/ images."""
    from inboxsort.trainer.dataset import discover_flat, load_arrays
    from inboxsort.trainer.evaluate import score

    classifier = open_store(config).load(args.model, runtime=config.serving.runtime)
    samples = discover_flat(args.data, classifier.classes)
    x, y, skipped = load_arrays(samples, image_size=classifier.image_size)
    kept = [s for s in samples if s.path not in {p for p, _ in skipped}]
    probs = classifier.predict_all(x)
    result = score(probs, y, classifier.classes).to_json()
    errors = [
        {
            "path": str(s.path),
            "label": classifier.classes[s.label],
            "predicted": classifier.classes[int(p.argmax())],
            "score": round(float(p.max()), 4),
        }
        for s, p in zip(kept, probs, strict=True)
        if int(p.argmax()) != s.label
    ]
    out = {
        **result,
        "model_version": classifier.version,
        "classes": list(classifier.classes),
        "errors": errors,
        "unreadable": [{"path": str(p), "error": why} for p, why in skipped],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    accuracy = "n/a" if out["accuracy"] is None else f"{out['accuracy']:.4f}"
    print(f"model version {classifier.version}: accuracy {accuracy} on {out['n']} images")
    for name, m in result["per_class"].items():
        p, r = m["precision"], m["recall"]
        print(
            f"  {name:<12} precision {p if p is None else f'{p:.4f}'}  "
            f"recall {r if r is None else f'{r:.4f}'}  n {m['support']}"
        )
    print(f"  confusion (rows true, columns predicted): {result['confusion']}")
    for e in errors:
        print(f"  wrong: {e['path']}: {e['label']} → {e['predicted']} ({e['score']})")
    for u in out["unreadable"]:
        print(f"  unreadable: {u['path']}: {u['error']}")
    return 0


def expand_folders(paths: list[Path], *, recursive: bool) -> list[Path]:
    """Each folder replaced by its files (name order, hidden ones left out); files kept."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)  # a missing or unreadable file is reported as its row's error
            continue
        for top, folders, names in os.walk(path):  # never follows a link to a folder
            folders[:] = sorted(f for f in folders if not f.startswith(".")) if recursive else []
            files += [Path(top) / n for n in sorted(names) if not n.startswith(".")]
    return files


def cmd_classify(config: Config, args: argparse.Namespace) -> int:
    """Label and score for each file, without moving anything."""
    from inboxsort.imageio import load_many

    files = expand_folders(args.files, recursive=args.recursive)
    if not files:
        raise ConfigError("classify: no files in " + ", ".join(map(str, args.files)))
    classifier = open_store(config).load(args.model, runtime=config.serving.runtime)
    loaded = load_many(files, classifier.image_size)
    rows: list[dict[str, Any]] = [
        {"path": str(path), "model_version": classifier.version} for path in files
    ]
    for index, why in loaded.errors:
        rows[index]["error"] = why
    predictions = classifier.to_predictions(classifier.predict_all(loaded.pixels))
    for index, pred in zip(loaded.loaded, predictions, strict=True):
        rows[index].update(label=pred.label, score=round(pred.score, 4))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['path']}\tERROR\t{row['error']}")
            else:
                print(f"{row['path']}\t{row['label']}\t{row['score']:.4f}")
    return 1 if any("error" in r for r in rows) else 0


def cmd_models(config: Config, args: argparse.Namespace) -> int:
    """models list|activate|rollback|export."""
    store = open_store(config)
    if args.action == "activate":
        info = next((v for v in store.versions() if v.version == args.version), None)
        # promoted None: no gate judged it (`inboxsort train`, the shipped model).
        if info is not None and info.promoted is False and not args.force:
            why = " ".join((info.note or "the retrain gate rejected it").split())
            raise ConfigError(
                f"models activate: version {args.version} was not promoted ({why}); "
                "pass --force to activate it anyway"
            )
        store.activate(args.version)
        print(f"version {args.version} is active")
    elif args.action == "rollback":
        print(f"rolled back: version {store.rollback()} is active")
    elif args.action == "export":
        return _export(config, store, args)
    else:
        _list(config, store, as_json=args.json)
    return 0


def _list(config: Config, store: ModelStore, *, as_json: bool) -> None:
    """Every version, with the runtime it serves with (and why not LiteRT, when it does not)."""
    rows = []
    for v in store.versions():
        runtime, why = store.serving(v.version, config.serving.runtime)
        rows.append((v, runtime, why))
    if as_json:
        entries = [{**v.to_json(), "runtime": r, "runtime_reason": why} for v, r, why in rows]
        print(json.dumps(entries, indent=2))
        return
    print(
        f"  {'ver':>4}  {'created':<19}  {'size':<5}  {'test accuracy':<15}  {'promoted':<8}"
        f"  {'runtime':<7}  path"
    )
    for v, runtime, why in rows:
        acc, n = v.accuracy("test")
        figure = "—" if acc is None else f"{acc:.4f} on {'?' if n is None else n}"
        promoted = {True: "yes", False: "no", None: "—"}[v.promoted]
        mark = "*" if v.active else " "
        when = "builtin" if v.builtin else (v.created_at or "")[:19]
        size = f"{v.image_size or '?'}px"
        # The gate's verdict, for versions it judged; then why it does not serve with LiteRT.
        gate = f"  gate: {' '.join(v.note.split())}" if v.promoted is not None and v.note else ""
        print(
            f"{mark} {v.version:>4}  {when:<19}  {size:<5}  {figure:<15}"
            f"  {promoted:<8}  {runtime:<7}  {v.path}{gate}"
            + (f"  ({' '.join(why.split())})" if why else "")
        )


def _export(config: Config, store: ModelStore, args: argparse.Namespace) -> int:
    """Add a checked flatbuffer to the named versions (default: every one without a usable one)."""
    from inboxsort.model.artifact import BUILTIN, read_card
    from inboxsort.trainer.flatbuffer import export_version, needs_export, probe_images

    known = {v.version for v in store.versions()}
    unknown = [n for n in args.versions if n not in known]
    if unknown:
        raise ModelError(f"model version {unknown[0]} is not registered")
    # The shipped model comes with its flatbuffer: only a version named here is exported.
    named = args.versions or sorted(known - {BUILTIN})
    wanted = [n for n in dict.fromkeys(named) if needs_export(store, n)]
    for version in sorted(set(args.versions) - set(wanted)):
        print(f"version {version} already has a LiteRT flatbuffer that agrees with Keras")
    if not wanted and not args.versions:
        print("every version already has a LiteRT flatbuffer that agrees with Keras")
    failed = 0
    for version in wanted:
        try:
            classes = read_card(store.local(version))["classes"]
            probe = probe_images(config, store.db, classes, args.data)  # ConfigError: none
            flatbuffer = export_version(store, version, probe)
        except ModelError as exc:
            print(f"version {version}: {exc}", file=sys.stderr)
            failed += 1
            continue
        verdict = "serves with LiteRT" if flatbuffer.agreement.agrees else "serves with Keras"
        print(f"version {version}: {flatbuffer.agreement.describe()}; {verdict}")
        if flatbuffer.agreement.agrees and version == store.active_version():
            # The daemon reloads a version when another one is activated, not in place.
            print(f"version {version} is active: restart a running daemon to serve it with LiteRT")
    return 1 if failed else 0
