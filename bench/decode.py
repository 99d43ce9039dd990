"""Loader benchmark: CPU per image of the shared loader, with the shipped JPEG draft rule and
with the rule it replaced (decode at no less than twice the target size), in one run.

Usage: python bench/decode.py --data DIR/validation [--size 224] [--camera 40] [--rounds 5]
[--labels MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import inboxsort.imageio as imageio  # noqa: E402

Rule = Callable[[int], tuple[int, int]]


def twice(size: int) -> tuple[int, int]:
    """The previous rule: both decoded sides at least twice the target."""
    return size * 2, size * 2


@contextmanager
def drafting(rule: Rule) -> Iterator[None]:
    """The shared loader with `rule` as its JPEG draft rule, for the duration."""
    shipped = imageio.draft_box
    imageio.draft_box = rule  # decode_image looks it up at call time
    try:
        yield
    finally:
        imageio.draft_box = shipped


def cpu_ms_per_image(datas: list[bytes], size: int, rule: Rule) -> float:
    """The loader's CPU milliseconds per image under `rule`, over one pass of datas."""
    with drafting(rule):
        start = time.process_time()
        for data in datas:
            imageio.decode_image(data, size)
        return 1000 * (time.process_time() - start) / len(datas)


def pixels(files: list[Path], size: int, rule: Rule) -> np.ndarray:
    """Every file through the shared loader under `rule`, stacked."""
    with drafting(rule):
        return np.stack([imageio.load_image(path, size) for path in files])


def compare_labels(files: list[Path], model_dir: Path) -> str:
    """A model's labels and accuracy on the files loaded under each rule, as one line."""
    from inboxsort.model.artifact import load_classifier

    classifier = load_classifier(model_dir, version=0)
    truth = np.array([classifier.classes.index(path.parent.name) for path in files])
    old, new = (
        classifier.predict_all(pixels(files, classifier.image_size, rule)).argmax(axis=1)
        for rule in (twice, imageio.draft_box)
    )
    return (
        f"model {model_dir}: the same label for {int((old == new).sum())} of {len(files)} images "
        f"under both rules; accuracy {(new == truth).mean():.4f} shipped rule, "
        f"{(old == truth).mean():.4f} before"
    )


def camera_photos(files: list[Path], folder: Path, n: int) -> list[bytes]:
    """n 4032 x 3024 JPEGs (a 12 MP phone photo) upscaled from the first n files."""
    datas = []
    for i, path in enumerate(files[:n]):
        target = folder / f"camera-{i}.jpg"
        Image.open(path).convert("RGB").resize((4032, 3024)).save(target, quality=90)
        datas.append(target.read_bytes())
    return datas


def main() -> int:
    """Print the loader's CPU per image for both rules on the dataset and on camera photos."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--camera", type=int, default=40, help="12 MP photos to make")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="*",
        default=[],
        metavar="MODEL_DIR",
        help="also compare these models' labels under both rules (folders of model.keras + card)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.camera < 1:
        parser.error("--rounds and --camera must be at least 1")
    files = sorted(args.data.glob("*/*.jpg"))
    if not files:
        parser.error(f"no */*.jpg under {args.data}")
    sets = {f"{len(files)} dataset photos": [p.read_bytes() for p in files]}
    with tempfile.TemporaryDirectory() as tmp:
        camera = camera_photos(files, Path(tmp), args.camera)
        sets[f"{len(camera)} camera photos (4032 x 3024)"] = camera
    rounds = args.rounds  # the median discounts a slow first (cold) pass
    for name, datas in sets.items():
        # The order flips every round (ABBA), so neither the cold first pass nor drift in the
        # machine favours one rule.
        olds, news = [], []
        for i in range(rounds):
            order = (twice, imageio.draft_box) if i % 2 == 0 else (imageio.draft_box, twice)
            for rule in order:
                spent = cpu_ms_per_image(datas, args.size, rule)
                (olds if rule is twice else news).append(spent)
        old, new = statistics.median(olds), statistics.median(news)
        print(
            f"{name:36s} at {args.size} px: {new:6.2f} ms CPU per image shipped "
            f"(each side >= 3/4 of the target), {old:6.2f} ms before (>= 2x): "
            f"{old / new:.2f}x as fast",
            flush=True,
        )
    for model_dir in args.labels:
        print(compare_labels(files, model_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
