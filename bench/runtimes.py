"""LiteRT against Keras, all in one run: agreement, model-only, end to end, start-up, memory.

On the 1000 validation images at 224 px with the shipped model. Usage:
python bench/runtimes.py --data DIR/validation [--flood 5000] [--out FILE]. The figures and
the goals they are held against are in the README's Results.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.baselines import images_in, model_only_split, naive  # noqa: E402
from bench.benchkit import Daemon, offline_env, write_results, write_site  # noqa: E402
from bench.daemon_bench import e2e, flood_run  # noqa: E402

SHIPPED = (2, 16)  # batch.inference_workers, batch.max_size
# How LiteRT could be driven on this machine: interpreters side by side x images per batch.
# "litert" runs one invoke per image of a batch (what ships); "litert-batched" resizes the
# input tensor to the batch instead.
LITERT_SETUPS = [
    ("litert", (1, 16)),
    ("litert", (2, 16)),
    ("litert", (2, 8)),
    ("litert-batched", (1, 16)),
    ("litert-batched", (2, 8)),
    ("litert-batched", (2, 16)),
]
REPEATS = 3


def say(line: str, out: list[str]) -> None:
    """Print a report line at once and keep it for the results file."""
    print(line, flush=True)
    out.append(line)


def agreement(files: list[tuple[Path, str]]) -> dict[str, Any]:
    """Both runtimes on the same decoded pixels: labels, probabilities, accuracy."""
    from inboxsort.files import file_sha256
    from inboxsort.imageio import load_image
    from inboxsort.model.artifact import load_classifier
    from inboxsort.model.registry import BUILTIN, BUILTIN_DIR
    from inboxsort.trainer.dataset import TEST_SHARE_OF_VALIDATION, hash_fraction

    keras_model = load_classifier(BUILTIN_DIR, version=BUILTIN, runtime="keras")
    litert_model = load_classifier(BUILTIN_DIR, version=BUILTIN, runtime="litert")
    x = np.stack([load_image(p, keras_model.image_size) for p, _ in files])
    ours, theirs = keras_model.predict_all(x), litert_model.predict_all(x)
    truth = np.array([keras_model.classes.index(lab) for _, lab in files])
    # The test split of the shipped model's recipe: 20% of validation/, chosen by content hash.
    test = np.array([hash_fraction(file_sha256(p)) < TEST_SHARE_OF_VALIDATION for p, _ in files])
    same = ours.argmax(axis=1) == theirs.argmax(axis=1)
    return {
        "n": len(files),
        "labels_equal": int(same.sum()),
        "test_n": int(test.sum()),
        "test_labels_equal": int(same[test].sum()),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "keras_accuracy": float((ours.argmax(axis=1) == truth).mean()),
        "litert_accuracy": float((theirs.argmax(axis=1) == truth).mean()),
    }


def ready_seconds(root: Path, runtime: str) -> float:
    """Seconds from starting `inboxsort run` to its READY=1 on a notify socket of our own."""
    root.mkdir(parents=True)
    config = write_site(root, serving={"runtime": runtime}, logging={"level": "WARNING"})
    address = str(root / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(120)
        env = {**offline_env(), "NOTIFY_SOCKET": address}
        start = time.perf_counter()
        daemon = Daemon(config, env)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            return time.perf_counter() - start
        finally:
            daemon.stop()


def classify_seconds(root: Path, image: Path, runtime: str) -> float:
    """Wall time of `inboxsort classify IMAGE`, the whole process."""
    root.mkdir(parents=True)
    config = write_site(root, serving={"runtime": runtime}, logging={"level": "WARNING"})
    command = [sys.executable, "-m", "inboxsort", "--config", str(config), "classify", str(image)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=offline_env(), cwd=root)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, work: Path, out: list[str]) -> dict[str, Any]:
    """Every figure, in the order the report prints them."""
    files = images_in(args.data)
    figures: dict[str, Any] = {"agreement": agreement(files)}
    a = figures["agreement"]
    say(
        f"agreement    {a['labels_equal']}/{a['n']} labels equal (test split "
        f"{a['test_labels_equal']}/{a['test_n']}), largest probability difference "
        f"{a['max_abs_diff']:.2g}; accuracy keras {a['keras_accuracy']:.4f}, litert "
        f"{a['litert_accuracy']:.4f}",
        out,
    )
    model_only: dict[str, float] = {}
    for runtime, (workers, batch) in [("keras", SHIPPED), *LITERT_SETUPS]:
        rate = model_only_split(args.data, batch, workers, runtime=runtime)["images_per_s"]
        model_only[f"{runtime} {workers}x{batch}"] = rate
        say(f"model-only   {runtime:<14} {workers} x batch {batch:<3} {rate:7.1f} images/s", out)
    figures["model_only"] = model_only
    slow = naive(files[:: len(files) // 100][:100], work)
    figures["naive"] = slow["images_per_s"]
    say(f"naive loop   {slow['images_per_s']:7.1f} images/s (Keras model.predict per image)", out)
    runs = {}
    for runtime in ("keras", "litert"):
        run = e2e(work / f"e2e-{runtime}", files, SHIPPED, idle=args.idle, runtime=runtime)
        runs[runtime] = run
        idle = sorted(1000 * s for s in run.get("idle", []))
        say(
            f"end-to-end   {runtime:<6} {run['images_per_s']:7.1f} images/s ({SHIPPED[0]} x "
            f"{SHIPPED[1]}); peak RSS {run['rss']:.0f} MB; idle drop p50 "
            f"{statistics.median(idle):.0f} ms",
            out,
        )
    figures["e2e"] = {k: {n: v for n, v in r.items() if n != "labels"} for k, r in runs.items()}
    lite, slow_rate = runs["litert"]["images_per_s"], figures["naive"]
    shipped_only = model_only[f"litert {SHIPPED[0]}x{SHIPPED[1]}"]
    say(
        f"ratios       litert end to end / naive {lite / slow_rate:.1f}x (goal >= 10); "
        f"/ keras end to end {lite / runs['keras']['images_per_s']:.2f}x (goal >= 1.6); "
        f"/ litert model-only {SHIPPED[0]}x{SHIPPED[1]} {lite / shipped_only:.2f} (goal >= 0.8)",
        out,
    )
    if args.flood:
        figures["flood"] = flood_figures(args, files, work, out)
    figures["ready"], figures["classify"] = {}, {}
    image = files[0][0]
    for runtime in ("keras", "litert"):
        ready = [ready_seconds(work / f"ready-{runtime}-{i}", runtime) for i in range(REPEATS)]
        wall = [
            classify_seconds(work / f"classify-{runtime}-{i}", image, runtime)
            for i in range(REPEATS)
        ]
        figures["ready"][runtime], figures["classify"][runtime] = ready, wall
        say(
            f"start-up     {runtime:<6} run to READY median {statistics.median(ready):.2f} s "
            f"(goal <= 3 s for litert); classify one image median {statistics.median(wall):.2f} "
            f"s wall (goal <= 3 s); {REPEATS} each",
            out,
        )
    return figures


def flood_figures(
    args: argparse.Namespace, files: list[tuple[Path, str]], work: Path, out: list[str]
) -> dict[str, Any]:
    """The flood through the LiteRT daemon: its rate and peak memory."""
    big = flood_run(work / "flood", files, args.flood, SHIPPED, runtime="litert")
    say(
        f"flood        litert {big['n']} images: {big['images_per_s']:.1f} images/s, peak RSS "
        f"{big['rss']:.0f} MB (goal <= 500 MB); exit code after SIGTERM {big['code']}",
        out,
    )
    return {k: v for k, v in big.items() if k != "labels"}


def main() -> int:
    """Run everything, print the report, write it and the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--flood", type=int, default=5000, help="images for the memory flood")
    parser.add_argument("--idle", type=int, default=10, help="single drops into an idle daemon")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/runtimes.txt")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inboxsort-runtimes-"))
    out: list[str] = []
    say(f"{len(images_in(args.data))} images from {args.data}; {os.cpu_count()} cores", out)
    figures = measure(args, work, out)
    write_results(args.out, out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
