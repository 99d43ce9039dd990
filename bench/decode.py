"""Loader benchmark: CPU per image of the shared loader, with the shipped JPEG draft rule and
with the rule it replaced (decode at no less than twice the target size), in one run.

Usage: python bench/decode.py --data DIR/validation [--size 224] [--camera 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import inboxsort.imageio as imageio  # noqa: E402

Rule = Callable[[int], tuple[int, int]]


def twice(size: int) -> tuple[int, int]:
    """The previous rule: both decoded sides at least twice the target."""
    return size * 2, size * 2


def cpu_ms_per_image(datas: list[bytes], size: int, rule: Rule) -> float:
    """The loader's CPU milliseconds per image under `rule`, over one pass of datas."""
    shipped = imageio.draft_box
    imageio.draft_box = rule  # decode_image looks it up at call time
    try:
        start = time.process_time()
        for data in datas:
            imageio.decode_image(data, size)
        return 1000 * (time.process_time() - start) / len(datas)
    finally:
        imageio.draft_box = shipped


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
    args = parser.parse_args()
    files = sorted(args.data.glob("*/*.jpg"))
    sets = {f"{len(files)} dataset photos": [p.read_bytes() for p in files]}
    with tempfile.TemporaryDirectory() as tmp:
        sets[f"{args.camera} camera photos (4032 x 3024)"] = camera_photos(
            files, Path(tmp), args.camera
        )
    rounds = args.rounds  # the median discounts a slow first (cold) pass
    for name, datas in sets.items():
        # Rounds alternate between the rules, so drift in the machine favours neither.
        olds, news = [], []
        for _ in range(rounds):
            olds.append(cpu_ms_per_image(datas, args.size, twice))
            news.append(cpu_ms_per_image(datas, args.size, imageio.draft_box))
        old, new = statistics.median(olds), statistics.median(news)
        print(
            f"{name:36s} at {args.size} px: {new:6.2f} ms CPU per image shipped "
            f"(each side >= 3/4 of the target), {old:6.2f} ms before (>= 2x): "
            f"{old / new:.2f}x as fast",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
