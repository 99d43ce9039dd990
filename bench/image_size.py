"""Input size trade-off: predict_on_batch throughput of the recipe's model at 160 and at 224 px.

Both models are built in one process and timed in alternating rounds, so the ratio holds on a
noisy machine. Speed does not depend on the weights, so the ImageNet file is not needed here;
accuracy at each size comes from `make model` and `make model-160` (their cards).

Usage: python bench/image_size.py [--sizes 160 224] [--rounds 5] [--batches 1 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inboxsort.trainer.recipe import build_model  # noqa: E402


def images_per_second(model: object, batch: np.ndarray, *, seconds: float) -> float:
    """Calls of predict_on_batch for about `seconds`; images per second."""
    predict = model.predict_on_batch  # type: ignore[attr-defined]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and setting")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/image_size.txt")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    models = {s: build_model(image_size=s, num_classes=2, weights=None) for s in args.sizes}
    inputs = {
        (s, b): rng.integers(0, 256, (b, s, s, 3)).astype("float32")
        for s in args.sizes
        for b in args.batches
    }
    for (s, _), x in inputs.items():  # warm-up: graph tracing is not throughput
        models[s].predict_on_batch(x)
    runs: dict[tuple[int, int], list[float]] = {key: [] for key in inputs}
    for _ in range(args.rounds):
        for (s, b), x in inputs.items():
            runs[(s, b)].append(images_per_second(models[s], x, seconds=args.seconds))
    lines = [f"# input size vs throughput, {platform.node()}, {os.cpu_count()} cpu"]
    lines.append(f"{'size':>5} {'batch':>6} {'median img/s':>13} {'min':>7} {'max':>7}")
    for (s, b), values in runs.items():
        lines.append(
            f"{s:>5} {b:>6} {statistics.median(values):>13.1f} {min(values):>7.1f} "
            f"{max(values):>7.1f}"
        )
    small, large = min(args.sizes), max(args.sizes)
    for b in args.batches:
        ratio = statistics.median(runs[(small, b)]) / statistics.median(runs[(large, b)])
        lines.append(f"batch {b}: {small} px is {ratio:.2f}x as fast as {large} px")
    lines.append(f"command: python bench/image_size.py {' '.join(argv or sys.argv[1:])}".strip())
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
