"""Find labelled images on disk, split them deterministically by content hash, load them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inboxsort.errors import ModelError
from inboxsort.files import file_sha256
from inboxsort.imageio import IMAGE_SUFFIXES, load_many

TEST_SHARE_OF_VALIDATION = 0.2  # the tutorial moves 20% of validation to a test split
FLAT_SPLIT = (0.8, 0.1, 0.1)  # train / validation / test when DIR has no validation folder


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int
    sha256: str


@dataclass(frozen=True)
class Splits:
    """Train, validation and test samples plus the class names (sorted folder names)."""

    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    validation: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def fingerprint(self) -> str:
        """A hash over classes and every file's content and split, to tell when data changed."""
        parts = ["|".join(self.classes)]
        named = (("train", self.train), ("validation", self.validation), ("test", self.test))
        for name, part in named:
            parts += [f"{name}:{s.label}:{s.sha256}" for s in sorted(part, key=lambda s: s.sha256)]
        return hashlib.sha256("".join(parts).encode()).hexdigest()


def hash_fraction(sha256: str) -> float:
    """Map a content hash to [0, 1): the split a file lands in depends on its bytes only."""
    return int(sha256[:12], 16) / float(1 << 48)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _samples(root: Path, classes: Sequence[str]) -> list[Sample]:
    samples = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise ModelError(f"data: {root} has no folder for class {name!r}")
        samples += [Sample(p, index, file_sha256(p)) for p in _images_in(folder)]
    return samples


def discover(root: Path) -> Splits:
    """Read DIR (class folders, or train/ and validation/ holding class folders) into splits."""
    if not root.is_dir():
        raise ModelError(f"data: {root} is not a folder")
    if (root / "train").is_dir() and (root / "validation").is_dir():
        classes = tuple(p.name for p in _class_folders(root / "train"))
        _check_classes(root / "train", classes)
        train = _samples(root / "train", classes)
        held = _samples(root / "validation", classes)
        test = [s for s in held if hash_fraction(s.sha256) < TEST_SHARE_OF_VALIDATION]
        validation = [s for s in held if hash_fraction(s.sha256) >= TEST_SHARE_OF_VALIDATION]
    else:
        classes = tuple(p.name for p in _class_folders(root))
        _check_classes(root, classes)
        every = _samples(root, classes)
        cut_train, cut_val = FLAT_SPLIT[0], FLAT_SPLIT[0] + FLAT_SPLIT[1]
        train = [s for s in every if hash_fraction(s.sha256) < cut_train]
        validation = [s for s in every if cut_train <= hash_fraction(s.sha256) < cut_val]
        test = [s for s in every if hash_fraction(s.sha256) >= cut_val]
    if not train:
        raise ModelError(f"data: no training images found under {root}")
    return Splits(classes, tuple(train), tuple(validation), tuple(test))


def _check_classes(root: Path, classes: Sequence[str]) -> None:
    if len(classes) < 2:
        raise ModelError(
            f"data: {root} needs one subfolder per class (at least 2), found {list(classes)}"
        )


def discover_flat(root: Path, classes: Sequence[str]) -> list[Sample]:
    """Every image under DIR/<class>/ for the given classes (for evaluate); others are ignored."""
    if not root.is_dir():
        raise ModelError(f"data: {root} is not a folder")
    present = [c for c in classes if (root / c).is_dir()]
    if not present:
        raise ModelError(f"data: {root} holds none of the class folders {list(classes)}")
    return [
        Sample(p, classes.index(name), file_sha256(p))
        for name in present
        for p in _images_in(root / name)
    ]


def load_arrays(
    samples: Iterable[Sample], *, image_size: int, workers: int = 4
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Decode samples with the shared loader → (pixels, labels, skipped files with reasons)."""
    items = list(samples)
    loaded = load_many([s.path for s in items], image_size, workers=workers)
    y = np.array([items[i].label for i in loaded.loaded], dtype=np.int64)
    return loaded.pixels, y, [(items[i].path, why) for i, why in loaded.errors]
