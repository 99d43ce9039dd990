"""Learning-loop benchmark: does one retrain on user corrections make a weak model better?

Trains a deliberately weak model (a small slice of DATA/train, one frozen-base epoch), files a
stream of other training images with it as the daemon would, lets a simulated user move every
misfiled one to the right folder (recorded as corrections by inboxsort.labels.relabel, the path
`inboxsort label` and the library tracker use) until --corrections exist, then runs
retrain(config, force=False) once, with the retrain settings of a default config.
Reports accuracy of the model before and of the candidate after (promoted or not) on:
  - the test split (20% of DATA/validation by the dataset module's hash split),
  - fresh training images nobody classified or corrected,
  - the images the user left in place (all right before, by construction; some of them are
    replayed in training, so this row shows forgetting, not generalisation),
plus the gate's own figures and the wall time of the retrain.

Usage: python bench/learning_gain.py --data DATA [--per-class 20] [--corrections 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inboxsort.classifier import Classifier  # noqa: E402
from inboxsort.config import Config, parse_config  # noqa: E402
from inboxsort.daemon.ledger import display_path  # noqa: E402
from inboxsort.db import SOURCE_MOVE, STATUS_FILED, Database, Image, open_database, utcnow  # noqa: E402
from inboxsort.labels import relabel  # noqa: E402
from inboxsort.trainer.dataset import Sample, Splits, discover, load_arrays  # noqa: E402
from inboxsort.trainer.evaluate import evaluate_arrays, predict_all  # noqa: E402
from inboxsort.trainer.registry import ModelStore  # noqa: E402
from inboxsort.trainer.retrain import RetrainOutcome, retrain  # noqa: E402
from inboxsort.trainer.train import TrainOptions, train_on  # noqa: E402

CHUNK = 32


def weak_model(splits: Splits, per_class: int, size: int, seed: int) -> tuple[Any, dict, set]:
    """A model trained one frozen-base epoch on the first `per_class` images of each class."""
    picked = [
        s
        for label in range(len(splits.classes))
        for s in sorted((s for s in splits.train if s.label == label), key=lambda s: s.path)[
            :per_class
        ]
    ]
    small = Splits(splits.classes, tuple(picked), (), splits.test)
    options = TrainOptions(image_size=size, epochs=1, fine_tune_epochs=0, seed=seed, verbose=0)
    result = train_on(small, options, data_source=f"bench slice of {per_class} per class")
    return result.model, result.card, {s.sha256 for s in picked}


def file_as_daemon(db: Database, config: Config, sample: Sample, label: str, score: float) -> Path:
    """Copy an image into library/<label>/ and record it as the daemon's filing does."""
    dest = config.paths.library / label / f"{sample.sha256[:12]}{sample.path.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample.path, dest)
    st = dest.stat()
    now = utcnow()
    with db.begin() as session:
        session.add(
            Image(
                sha256=sample.sha256,
                original_name=sample.path.name,
                source_path=display_path(config.paths.inbox / sample.path.name),
                path=display_path(dest),
                label=label,
                score=score,
                model_version=1,
                status=STATUS_FILED,
                size=st.st_size,
                device=st.st_dev,
                inode=st.st_ino,
                received_at=now,
                classified_at=now,
                filed_at=now,
            )
        )
    return dest


def accuracy(classifier: Classifier, samples: list[Sample]) -> dict[str, Any]:
    """Accuracy of a classifier on samples (decoded at its own size)."""
    x, y, _ = load_arrays(samples, image_size=classifier.image_size, workers=2)
    return evaluate_arrays(classifier, x, y)


def fmt(m: dict[str, Any] | None) -> str:
    if not m or not m["n"]:
        return "n/a"
    return f"{m['accuracy']:.3f} ({m['correct']}/{m['n']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="train/ + validation/ folder")
    parser.add_argument("--per-class", type=int, default=20, help="weak model's slice")
    parser.add_argument("--corrections", type=int, default=50, help="user moves to record")
    parser.add_argument("--fresh", type=int, default=200, help="untouched images to score")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/learning.txt")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    bench_start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="inboxsort-learning-"))
    try:
        config = parse_config(
            {
                "database": {"url": "sqlite:///inboxsort.db"},
                # Every retrain knob at its default except the trigger, set to what we record.
                "retrain": {"min_new_corrections": args.corrections},
            },
            base=root,
        )
        db = open_database(config.database.url)
        store = ModelStore(config.paths.models, db)
        splits = discover(args.data)
        classes = splits.classes
        say(
            f"# inboxsort learning gain, {dt.date.today()}, {platform.node()}, {os.cpu_count()} cpu"
        )
        say(f"data {args.data}: {len(splits.train)} train, {len(splits.test)} test images")

        started = time.monotonic()
        model, card, taught = weak_model(splits, args.per_class, args.image_size, args.seed)
        store.register(model, card, parent=None, activate=True, note="bench: weak model")
        weak = Classifier(model, classes, args.image_size, version=1)
        say(
            f"weak model: {args.per_class}/class, 1 frozen-base epoch, {args.image_size} px, "
            f"{time.monotonic() - started:.0f} s"
        )

        others = [s for s in splits.train if s.sha256 not in taught]
        random.Random(args.seed).shuffle(others)
        fresh, stream = others[: args.fresh], others[args.fresh :]

        # The daemon files, the user moves the misfiled ones, until enough corrections exist.
        left_in_place: list[Sample] = []
        corrected = 0
        filed = 0
        for start in range(0, len(stream), CHUNK):
            chunk = stream[start : start + CHUNK]
            x, _, skipped = load_arrays(chunk, image_size=args.image_size, workers=2)
            chunk = [s for s in chunk if s.path not in {p for p, _ in skipped}]
            for sample, probs in zip(chunk, predict_all(weak, x), strict=True):
                if corrected >= args.corrections:
                    break
                predicted = classes[int(probs.argmax())]
                path = file_as_daemon(db, config, sample, predicted, float(probs.max()))
                filed += 1
                if predicted == classes[sample.label]:
                    left_in_place.append(sample)
                    continue
                relabel(
                    db,
                    image_path=path,
                    new_label=classes[sample.label],
                    source=SOURCE_MOVE,
                    library=config.paths.library,
                    classes=classes,
                )
                corrected += 1
            if corrected >= args.corrections:
                break
        say(
            f"filed {filed} images with the weak model; the user moved {corrected} misfiled "
            f"ones (stream error rate {corrected / max(filed, 1):.3f})"
        )

        test = list(splits.test)
        before = {
            "test": accuracy(weak, test),
            "fresh": accuracy(weak, fresh),
            "left": accuracy(weak, left_in_place),
        }
        r = config.retrain
        say(
            f"retrain settings: epochs {r.epochs}, replay {r.replay}, holdout {r.holdout}, "
            f"tolerance {r.tolerance}, nice {r.nice}, fine-tune lr "
            f"{config.train.fine_tune_learning_rate}, fine_tune_at {config.train.fine_tune_at}"
        )
        outcome: RetrainOutcome = retrain(config, force=False)
        say(f"retrain: {outcome.reason}")
        say(f"retrain wall time: {outcome.seconds:.1f} s for {outcome.new_corrections} corrections")
        if outcome.candidate is None:
            say("no candidate: nothing to compare")
            return 1
        info = store.info(outcome.candidate)
        plan = info.metrics["retrain"]
        worker = json.loads((Path(info.path) / "card.json").read_text())["wall_seconds"]
        say(
            f"  of which the training process: {worker['total']:.1f} s (decode {worker['load']:.1f}"
            f" s, fit {worker['fit']:.1f} s, the rest scoring both models and saving)"
        )
        say(
            f"  trained on {plan['corrections']} corrections + {plan['replay']} replayed images; "
            f"held out {plan['held_out_corrections']} corrections; gate set "
            f"{plan['gate_set']} ({plan['gate_source']})"
        )
        candidate = store.load(outcome.candidate)
        after = {
            "test": accuracy(candidate, test),
            "fresh": accuracy(candidate, fresh),
            "left": accuracy(candidate, left_in_place),
        }
        say("")
        say(f"{'accuracy on':<44} {'before (v1)':>18} {'after (v' + str(info.version) + ')':>18}")
        rows = [
            ("test split (validation 20%)", before["test"], after["test"]),
            ("fresh images, never classified", before["fresh"], after["fresh"]),
            ("left in place (some replayed in training)", before["left"], after["left"]),
            (
                "held-out corrections (the gate)",
                (outcome.active_metrics or {}).get("corrections"),
                (outcome.candidate_metrics or {}).get("corrections"),
            ),
            (
                "gate set (held-out confirmed images)",
                (outcome.active_metrics or {}).get("set"),
                (outcome.candidate_metrics or {}).get("set"),
            ),
        ]
        for name, b, a in rows:
            say(f"{name:<44} {fmt(b):>18} {fmt(a):>18}")
        say("")
        say(f"promoted: {outcome.promoted}; bench wall time {time.monotonic() - bench_start:.0f} s")
        db.close()
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
        say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
