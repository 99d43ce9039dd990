"""Learning-loop benchmark: does the daemon's scheduled retrain make a weak model better?

Trains a deliberately weak model (a small slice of DATA/train, one frozen-base epoch) and
registers it as version 1 of a fresh site, then runs the real daemon (`inboxsort run`, a
subprocess) with the retrain job every 30 s and retrain.min_new_corrections = --corrections.
Other training images are copied into the inbox in chunks; once the daemon has filed a chunk, a
simulated user moves each misfiled image into library/<true class>/ (a rename, as `mv` does),
which the daemon's library watcher records as a correction, until --corrections moves. The
scheduled job then retrains on its own, while one image a quarter second keeps arriving (never
corrected) so that the swap to a promoted model happens under load. The daemon is stopped with
SIGTERM and every dropped image is accounted for. Reports, from the daemon's log and database:
  - the retrain's wall time, the swap's inference pause, and the gaps between served batches
    from the job's start to 10 s after the swap (a stall would show as one long gap),
and, computed here, accuracy of version 1 before and of the candidate after (promoted or not) on:
  - the test split (20% of DATA/validation by the dataset module's hash split),
  - fresh training images nobody classified or corrected,
  - the images the user left in place (some of them are replayed in training, so this row shows
    forgetting, not generalisation),
plus the gate's own figures.

Usage: python bench/learning_gain.py --data DATA [--per-class 20] [--corrections 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.benchkit import (  # noqa: E402
    Daemon,
    LogLine,
    account,
    offline_env,
    serving_gaps,
    write_site,
)

os.environ.update(offline_env())  # before TensorFlow is imported: offline ImageNet weights

from inboxsort.config import TrainConfig, load_config  # noqa: E402
from inboxsort.db import open_database  # noqa: E402
from inboxsort.model.classifier import Classifier  # noqa: E402
from inboxsort.model.registry import ModelStore  # noqa: E402
from inboxsort.trainer.dataset import Sample, Splits, discover, load_arrays  # noqa: E402
from inboxsort.trainer.evaluate import evaluate_arrays  # noqa: E402
from inboxsort.trainer.train import train_on  # noqa: E402

CHUNK = 32  # images dropped at once while the user corrects
EVERY_MINUTES = 0.5  # the retrain schedule: the job fires soon after the last correction
TRICKLE_SECONDS = 0.25  # one image this often while the job retrains and the daemon swaps
AFTER_SWAP = 10.0  # seconds of serving watched after the swap
RETRAIN_TIMEOUT = 15 * 60


def weak_model(
    splits: Splits, per_class: int, size: int, seed: int
) -> tuple[Any, dict, bytes | None, set]:
    """A model trained one frozen-base epoch on the first `per_class` images of each class."""
    picked = [
        s
        for label in range(len(splits.classes))
        for s in sorted((s for s in splits.train if s.label == label), key=lambda s: s.path)[
            :per_class
        ]
    ]
    small = Splits(splits.classes, tuple(picked), (), splits.test)
    options = TrainConfig(image_size=size, epochs=1, fine_tune_epochs=0, seed=seed)
    result = train_on(
        small, options, data_source=f"bench slice of {per_class} per class", verbose=0
    )
    return result.model, result.card, result.litert, {s.sha256 for s in picked}


def accuracy(classifier: Classifier, samples: list[Sample]) -> dict[str, Any]:
    """Accuracy of a classifier on samples (decoded at its own size)."""
    x, y, _ = load_arrays(samples, image_size=classifier.image_size, workers=2)
    return evaluate_arrays(classifier, x, y).to_json()


def fmt(m: dict[str, Any] | None) -> str:
    if not m or not m["n"]:
        return "n/a"
    return f"{m['accuracy']:.3f} ({m['correct']}/{m['n']})"


def done_rows(daemon: Daemon, names: set[str]) -> dict[str, tuple[str, str, str]] | None:
    """{name: (status, label, path)} once every name has a row that is no longer pending."""
    rows = daemon.query("select original_name, status, label, path from images")
    found = {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in names and r[1] != "pending"}
    return found if len(found) == len(names) else None


def act_as_user(
    daemon: Daemon, library: Path, stream: list[Sample], classes: tuple[str, ...], want: int
) -> tuple[list[Sample], list[Sample], list[Sample], int]:
    """Drop chunks; move each misfiled image to its class folder until `want` moves.

    Returns (corrected, left in place and right, left in place and wrong, images used).
    """
    inbox = daemon.root / "inbox"
    corrected: list[Sample] = []
    right: list[Sample] = []
    wrong: list[Sample] = []
    used = 0
    while len(corrected) < want and used < len(stream):
        seen = len(corrected) + len(right) + len(wrong)
        error = (len(corrected) + len(wrong)) / seen if seen else 0.5
        # The last chunks hold about as many images as the moves still wanted need.
        size = min(CHUNK, math.ceil((want - len(corrected)) / max(error, 0.1)))
        chunk = stream[used : used + size]
        used += len(chunk)
        for sample in chunk:
            shutil.copyfile(sample.path, inbox / sample.path.name)
        names = {s.path.name for s in chunk}
        rows = daemon.until(partial(done_rows, daemon, names), "a chunk filed", 300)
        for sample in chunk:
            status, label, path = rows[sample.path.name]
            truth = classes[sample.label]
            if status != "filed" or label == truth:
                right.append(sample)
            elif len(corrected) < want:
                Path(path).rename(library / truth / Path(path).name)  # as `mv` does
                corrected.append(sample)
            else:
                wrong.append(sample)
    return corrected, right, wrong, used


def find(lines: list[LogLine], pattern: str, after: float = 0.0) -> LogLine | None:
    """The first line at or after `after` whose message matches `pattern` (a regex)."""
    return next((x for x in lines if x.at >= after and re.search(pattern, x.message)), None)


def trickle(
    daemon: Daemon, pool: list[Sample], dropped: list[str], start: float
) -> dict[str, LogLine | None]:
    """Copy one image every TRICKLE_SECONDS into the inbox until AFTER_SWAP s after the swap.

    Returns the job's outcome line and, if promoted, the daemon's load and swap lines.
    """
    inbox = daemon.root / "inbox"
    marks: dict[str, LogLine | None] = {}
    k = 0
    while True:
        lines = daemon.lines()
        marks["outcome"] = find(lines, r"^retrain: (version \d+ from|failed)", start)
        if marks["outcome"] is not None:
            promoted = ": promoted: " in marks["outcome"].message
            marks["load"] = find(lines, r"^model version \d+ is active; loading", start)
            marks["loaded"] = find(lines, r"^model version \d+ loaded and warmed up", start)
            marks["swap"] = find(lines, r"^now serving model version", start)
            end = marks["swap"] if promoted else marks["outcome"]
            if end is not None and time.time() >= end.at + AFTER_SWAP:
                return marks
        if time.time() > start + RETRAIN_TIMEOUT:
            raise SystemExit(f"no retrain outcome after {RETRAIN_TIMEOUT} s; see {daemon.log_path}")
        if daemon.proc.poll() is not None:
            raise SystemExit(f"daemon exited {daemon.proc.returncode}; see {daemon.log_path}")
        sample = pool[k % len(pool)]
        name = sample.path.name if k < len(pool) else f"again{k // len(pool)}-{sample.path.name}"
        shutil.copyfile(sample.path, inbox / name)
        dropped.append(name)
        k += 1
        time.sleep(TRICKLE_SECONDS)


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
    daemon: Daemon | None = None
    try:
        config_path = write_site(
            root,
            watch={"settle_seconds": 0.3, "rescan_seconds": 0},
            # Every other retrain knob at its default.
            retrain={"every_minutes": EVERY_MINUTES, "min_new_corrections": args.corrections},
            logging={"level": "INFO", "timestamps": True},
        )
        config = load_config(config_path)
        library = config.paths.library
        splits = discover(args.data)
        classes = splits.classes
        say(
            f"# inboxsort learning gain, {dt.date.today()}, {platform.node()}, {os.cpu_count()} cpu"
        )
        say(f"data {args.data}: {len(splits.train)} train, {len(splits.test)} test images")

        started = time.monotonic()
        model, card, litert, taught = weak_model(splits, args.per_class, args.image_size, args.seed)
        with open_database(config.database.url) as db:
            # With its flatbuffer, as `inboxsort train` registers one: the daemon serves LiteRT.
            ModelStore(config.paths.models, db).register(
                model, card, parent=None, activate=True, note="bench: weak model", litert=litert
            )
        weak = Classifier(model, classes, args.image_size, version=1)
        say(
            f"weak model: {args.per_class}/class, 1 frozen-base epoch, {args.image_size} px, "
            f"{time.monotonic() - started:.0f} s; registered as active version 1"
        )
        others = [s for s in splits.train if s.sha256 not in taught]
        random.Random(args.seed).shuffle(others)
        fresh, stream = others[: args.fresh], others[args.fresh :]

        started = time.monotonic()
        daemon = Daemon(config_path, offline_env())
        daemon.wait_log("watching ", "the daemon to start", 300)
        say(
            f"daemon: `inboxsort run` subprocess ready in {time.monotonic() - started:.0f} s; "
            f"retrain job every {EVERY_MINUTES * 60:.0f} s, min_new_corrections "
            f"{args.corrections}, settle {config.watch.settle_seconds} s"
        )
        corrected, right, wrong, used = act_as_user(
            daemon, library, stream, classes, args.corrections
        )
        dropped = [s.path.name for s in stream[:used]]
        filed = len(corrected) + len(right) + len(wrong)
        say(
            f"the daemon filed {filed} images with version 1; the user moved {len(corrected)} "
            f"misfiled ones to their class folders (stream error rate "
            f"{(len(corrected) + len(wrong)) / max(filed, 1):.3f}) and left {len(wrong)} "
            "misfiled ones in place"
        )
        daemon.until(
            lambda: daemon.query("select count(*) from corrections")[0][0] >= len(corrected),
            f"{len(corrected)} corrections recorded",
            120,
        )
        recorded = daemon.query("select count(*) from corrections where source = 'move'")[0][0]
        say(f"corrections the daemon's library watcher recorded from those moves: {recorded}")
        job = daemon.wait_log("retrain: fine-tuning version", "the retrain job to start", 300)
        marks = trickle(daemon, stream[used:], dropped, job.at)
        daemon.until(lambda: done_rows(daemon, set(dropped)), "every trickled image filed", 300)
        log_lines = daemon.lines()
        code = daemon.stop()
        ok, accounting = account(daemon, library, dropped)

        r = config.retrain
        say(
            f"retrain settings: epochs {r.epochs}, replay {r.replay}, holdout {r.holdout}, "
            f"tolerance {r.tolerance}, nice {r.nice}, fine-tune lr "
            f"{config.train.fine_tune_learning_rate}, fine_tune_at {config.train.fine_tune_at}"
        )
        outcome = marks["outcome"]
        assert outcome is not None
        say(f"retrain (the scheduled job): {outcome.message.removeprefix('retrain: ')}")
        # The job fired on its interval, counted from when the daemon scheduled it.
        anchor = next((x.at for x in log_lines if "retraining scheduled" in x.message), job.at)
        every = EVERY_MINUTES * 60
        fired = anchor + (job.at - anchor) // every * every
        say(
            f"retrain wall time: {outcome.at - fired:.1f} s for {len(corrected)} corrections "
            f"(job fired -> outcome logged; planning {job.at - fired:.2f} s of it; goal <= 180 s)"
        )
        with open_database(config.database.url, readonly=True) as db:
            store = ModelStore(config.paths.models, db)
            version = max(v.version for v in store.versions())
            if version < 2:
                say("no candidate: nothing to compare")
                return 1
            info = store.info(version)
            candidate = store.load(version)
        plan, gate = (info.metrics or {})["retrain"], (info.metrics or {})["gate"]
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
        swap, load, loaded = marks.get("swap"), marks.get("load"), marks.get("loaded")
        end = (swap or outcome).at + AFTER_SWAP
        if swap is not None and load is not None and loaded is not None:
            pause = re.search(r"paused ([\d.]+) ms", swap.message)
            say(
                f"swap: serving version {version} {swap.at - outcome.at:.1f} s after the outcome; "
                f"load + warm-up off the inference thread {loaded.at - load.at:.1f} s; inference "
                f"paused {pause[1] if pause else '?'} ms for the swap (goal <= 1000 ms)"
            )
        gaps = serving_gaps(log_lines, job.at, end)
        trickled = len(dropped) - used
        if "max_gap" in gaps:
            where = gaps["max_gap_at"] - (swap or outcome).at
            say(
                f"serving from the job's start to {AFTER_SWAP:.0f} s after the "
                f"{'swap' if swap else 'outcome'}: {trickled} images trickled in (one every "
                f"{TRICKLE_SECONDS} s), {gaps['images']} filed in {gaps['n']} batches; longest "
                f"gap between batches {gaps['max_gap']:.2f} s (starting {where:+.1f} s from the "
                f"{'swap' if swap else 'outcome'}), median gap {gaps['median_gap']:.2f} s; "
                f"slowest batch {gaps['max_ms']:.0f} ms, median {gaps['median_ms']:.0f} ms"
            )
        say(f"stop: exit code {code} after SIGTERM; accounting: {accounting}")

        test = list(splits.test)
        left = right + wrong
        before = {"test": accuracy(weak, test), "fresh": accuracy(weak, fresh)}
        before["left"] = accuracy(weak, left)
        after = {"test": accuracy(candidate, test), "fresh": accuracy(candidate, fresh)}
        after["left"] = accuracy(candidate, left)
        say("")
        say(f"{'accuracy on':<44} {'before (v1)':>18} {'after (v' + str(version) + ')':>18}")
        rows = [
            ("test split (validation 20%)", before["test"], after["test"]),
            ("fresh images, never classified", before["fresh"], after["fresh"]),
            ("left in place (some replayed in training)", before["left"], after["left"]),
            (
                "held-out corrections (the gate)",
                gate["active"].get("corrections"),
                gate["candidate"].get("corrections"),
            ),
            (
                "gate set (held-out confirmed images)",
                gate["active"].get("set"),
                gate["candidate"].get("set"),
            ),
        ]
        for name, b, a in rows:
            say(f"{name:<44} {fmt(b):>18} {fmt(a):>18}")
        say("")
        promoted = bool(info.promoted)
        say(f"promoted: {promoted}; bench wall time {time.monotonic() - bench_start:.0f} s")
        return 0 if ok and code == 0 else 1
    finally:
        if daemon is not None:
            daemon.stop()
            kept = Path(tempfile.gettempdir()) / "inboxsort-learning-daemon.log"
            shutil.copyfile(daemon.log_path, kept)
            print(f"daemon log kept in {kept}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
