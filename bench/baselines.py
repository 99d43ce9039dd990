"""The references the daemon is measured against: model-only and the naive loop.

Model-only with several workers needs TensorFlow's threads split before it runs an op, so it
runs in a process of its own: python bench/baselines.py --data DIR --workers 2 --batch 16
[--runtime litert] prints its figures as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.benchkit import offline_env  # noqa: E402


def images_in(data: Path) -> list[tuple[Path, str]]:
    """(path, class) for every image under data/<class>/."""
    return [
        (p, folder.name)
        for folder in sorted(d for d in data.iterdir() if d.is_dir())
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


def stage(
    files: list[tuple[Path, str]], staging: Path, *, copies: int = 1, prefix: str = ""
) -> list[Path]:
    """Copy files next to the inbox (same filesystem) so dropping them is one rename each."""
    staging.mkdir(parents=True, exist_ok=True)
    staged = []
    for copy in range(copies):
        for path, _label in files:
            name = path.name if copy == 0 else f"{path.stem}.copy{copy}{path.suffix}"
            dest = staging / f"{prefix}{name}"
            shutil.copyfile(path, dest)
            staged.append(dest)
    return staged


@dataclass(frozen=True)
class Arrays:
    """The shipped model and every image decoded for it, once per process."""

    classifier: Any
    x: np.ndarray
    decode_cpu_ms: float


def decode_all(
    files: list[tuple[Path, str]], *, runtime: str = "keras", workers: int = 1
) -> Arrays:
    """Load the shipped model on `runtime` and decode every file with the shared loader."""
    from inboxsort.imageio import load_image
    from inboxsort.model.artifact import load_classifier
    from inboxsort.model.registry import BUILTIN, BUILTIN_DIR

    # "litert-batched" is not a product setting: the same flatbuffer with its input tensor
    # resized to each batch, to compare with the one invoke per image that the product runs.
    serving = "litert" if runtime == "litert-batched" else runtime
    classifier = load_classifier(BUILTIN_DIR, version=BUILTIN, runtime=serving, workers=workers)
    if classifier.runtime != serving:
        raise SystemExit(f"the shipped model cannot serve with {runtime}; see the log above")
    if runtime == "litert-batched":
        from inboxsort.model.litert import LiteRTNetwork

        network = classifier.model
        batched = LiteRTNetwork(
            network.path, copies=workers, threads=network.threads, resize_batches=True
        )
        classifier = dataclasses.replace(classifier, model=batched)
    start = time.process_time()
    x = np.stack([load_image(p, classifier.image_size) for p, _ in files])
    # CPU seconds, not wall: what decoding takes from the cores inference also needs.
    decode_cpu = time.process_time() - start
    return Arrays(classifier, x, 1000 * decode_cpu / len(files))


def model_only(
    files: list[tuple[Path, str]], arrays: Arrays, batch: int, *, workers: int = 1
) -> dict[str, Any]:
    """predict_on_batch on already-decoded arrays, the ceiling for the daemon.

    With workers > 1, that many batches run side by side, as the daemon's inference workers
    do; TensorFlow's threads must then be split first (share_cores), so that case runs in a
    process of its own (model_only_split).
    """
    classifier, x = arrays.classifier, arrays.x
    for n in (1, batch):  # warm-up, as the daemon does before serving
        classifier.predict(x[:n])
    batches = [x[i : i + batch] for i in range(0, len(x), batch)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(classifier.predict, batches))
    seconds = time.perf_counter() - start
    labels = [p.label for predictions in results for p in predictions]
    truth = [label for _, label in files]
    accuracy = sum(a == b for a, b in zip(labels, truth, strict=True)) / len(files)
    return {
        "images_per_s": len(files) / seconds,
        "decode_cpu_ms": arrays.decode_cpu_ms,
        "accuracy": accuracy,
        "labels": dict(zip((p.name for p, _ in files), labels, strict=True)),
        "image_size": classifier.image_size,
        "workers": workers,
    }


def model_only_split(
    data: Path, batch: int, workers: int, *, runtime: str = "keras"
) -> dict[str, Any]:
    """model_only with `workers` batches side by side, in a fresh process with split cores."""
    command = [sys.executable, __file__, "--data", str(data), "--workers", str(workers)]
    command += ["--batch", str(batch), "--runtime", runtime]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=offline_env())
    return dict(json.loads(done.stdout.splitlines()[-1]))


def naive(files: list[tuple[Path, str]], root: Path) -> dict[str, Any]:
    """What a user would write first: for each file, load, model.predict one image, move."""
    import keras
    from PIL import Image

    from inboxsort.model.registry import BUILTIN_DIR

    model = keras.saving.load_model(BUILTIN_DIR / "model.keras", compile=False)
    size = model.input_shape[1]
    src, out = root / "naive-in", root / "naive-out"
    staged = stage(files, src)
    for label in ("cats", "dogs"):
        (out / label).mkdir(parents=True, exist_ok=True)
    model.predict(np.zeros((1, size, size, 3)), verbose=0)
    start = time.perf_counter()
    for path in staged:
        image = Image.open(path).convert("RGB").resize((size, size))
        logit = model.predict(np.asarray(image, dtype=np.float32)[None], verbose=0)
        shutil.move(path, out / ("dogs" if logit[0, 0] > 0 else "cats") / path.name)
    return {"images_per_s": len(staged) / (time.perf_counter() - start), "n": len(staged)}


def main() -> int:
    """The child process of model_only_split: split the cores, measure, print JSON."""
    from inboxsort.model.cores import share_cores

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--runtime", choices=("keras", "litert", "litert-batched"), default="keras")
    args = parser.parse_args()
    if args.runtime == "keras":
        share_cores(args.workers)  # LiteRT gives each worker's interpreter its share instead
    files = images_in(args.data)
    arrays = decode_all(files, runtime=args.runtime, workers=args.workers)
    figures = model_only(files, arrays, args.batch, workers=args.workers)
    figures["runtime"] = args.runtime
    print(json.dumps({k: v for k, v in figures.items() if k != "labels"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
