"""Every model version gets its LiteRT flatbuffer: converted where Keras already runs.

`inboxsort train` and the retrain worker convert the model they just trained
(`convert_or_none`); `inboxsort models export` adds one to a version that has none
(`export_version`), checked on real images (`probe_images`). A conversion that fails never
costs the trained model: the version is kept, without an artifact, and serves with Keras.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.config import Config
from inboxsort.db import Database
from inboxsort.db.training import confirmed_images
from inboxsort.errors import ConfigError, ModelError
from inboxsort.imageio import load_many
from inboxsort.layout import still_filed_as
from inboxsort.model.artifact import load_classifier, read_card
from inboxsort.model.export import Flatbuffer, attach, convert
from inboxsort.model.lineage import publish
from inboxsort.model.registry import ModelStore
from inboxsort.trainer.dataset import discover, discover_flat, hash_fraction

log = logging.getLogger(__name__)

# `models export` checks a flatbuffer on at most this many images of --data or the test split
# (the lowest content hashes: the same choice every time), and on at most LIBRARY_PROBE_MAX
# confirmed library images.
PROBE_MAX = 1000
LIBRARY_PROBE_MAX = 200


def convert_or_none(
    model: Any, probe: np.ndarray, probe_name: str
) -> tuple[Flatbuffer | None, str]:
    """The model's flatbuffer checked on `probe`, or (None, why) if the conversion failed.

    Never raises for a failed conversion: the caller keeps the trained model either way.
    A flatbuffer whose agreement gate failed is returned too; its card entry says so and the
    version serves with Keras.
    """
    try:
        flatbuffer = convert(model, probe=probe, probe_name=probe_name)
    except Exception as exc:  # the converter raises many types; none may lose the model
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        log.warning("LiteRT conversion failed; the model will serve with Keras: %s", why)
        return None, why
    if flatbuffer.agreement.agrees:
        log.info("LiteRT flatbuffer: %s", flatbuffer.agreement.describe())
    else:
        log.warning(
            "LiteRT flatbuffer failed its agreement gate; the model will serve with Keras: %s",
            flatbuffer.agreement.describe(),
        )
    return flatbuffer, ""


def first_nonempty(*named: tuple[np.ndarray, str]) -> tuple[np.ndarray, str]:
    """The first non-empty pixel array of (pixels, what) pairs, named "the N <what> images"."""
    for pixels, what in named:
        if len(pixels):
            return pixels, f"the {len(pixels)} {what} images"
    return named[-1][0], "no images"


@dataclass(frozen=True)
class ProbeImages:
    """Real image files to check a flatbuffer against Keras on, and where they come from."""

    paths: tuple[Path, ...]
    source: str

    def pixels(self, size: int) -> tuple[np.ndarray, str]:
        """The readable ones decoded at `size`, and the probe's name for the card."""
        loaded = load_many(self.paths, size)
        return loaded.pixels, f"{len(loaded.pixels)} {self.source}"


def _lowest_hashes(samples: Iterable[tuple[Path, str]], limit: int) -> tuple[Path, ...]:
    ordered = sorted(samples, key=lambda s: (hash_fraction(s[1]), s[1]))
    return tuple(path for path, _ in ordered[:limit])


def probe_images(
    config: Config, db: Database, classes: Sequence[str], data: Path | None
) -> ProbeImages:
    """Images to check a version's flatbuffer on: --data, train.data's test split, the library.

    `data` (a folder of class folders) first; else the test split of train.data (its
    validation split if the test split is empty); else up to LIBRARY_PROBE_MAX confirmed images
    of the library (filed under one of `classes`, never corrected). ConfigError if none.
    """
    if data is not None:
        found = discover_flat(data, classes)
        paths = _lowest_hashes(((s.path, s.sha256) for s in found), PROBE_MAX)
        if not paths:
            raise ConfigError(f"--data {data}: no images in its folders for {list(classes)}")
        return ProbeImages(paths, f"images in {data}")
    if config.train.data is not None:
        splits = discover(config.train.data)
        split, name = (splits.test, "test") if splits.test else (splits.validation, "validation")
        paths = _lowest_hashes(((s.path, s.sha256) for s in split), PROBE_MAX)
        if paths:
            return ProbeImages(paths, f"{name} images of {config.train.data}")
    library = config.paths.library
    with db.session() as session:
        rows = confirmed_images(session, classes)
    kept = [
        (Path(path), sha)
        for path, label, sha in rows
        if still_filed_as(Path(path), label, library=library) and Path(path).is_file()
    ]
    paths = _lowest_hashes(kept, LIBRARY_PROBE_MAX)
    if paths:
        return ProbeImages(paths, f"confirmed images in {library}")
    raise ConfigError(
        "no images to check the LiteRT flatbuffer against Keras on: pass --data DIR (a folder "
        "with one subfolder of images per class), set train.data, or let the daemon file "
        "some images into the library first"
    )


def needs_export(store: ModelStore, version: int) -> bool:
    """Whether a version lacks a usable flatbuffer (none, a failed gate, a changed file...)."""
    return store.serving(version, "auto")[0] != "litert"


def export_version(store: ModelStore, version: int, probe: ProbeImages) -> Flatbuffer:
    """Convert a registered version's model.keras and add the flatbuffer to its folder.

    Loads Keras (TensorFlow); writes model.tflite and the updated card.json atomically and
    leaves model.keras alone. Raises ModelError if the conversion fails (nothing is written).
    """
    folder = store.local(version)
    card = read_card(folder)
    keras_model = load_classifier(folder, version=version, runtime="keras").model
    pixels, name = probe.pixels(int(card["image_size"]))
    if not len(pixels):
        raise ModelError(f"none of the {len(probe.paths)} {probe.source} could be read")
    try:
        flatbuffer = convert(keras_model, probe=pixels, probe_name=name)
    except Exception as exc:  # the converter raises many types: report it as the model's
        raise ModelError(f"version {version}: LiteRT conversion failed: {exc}") from None
    attach(folder, flatbuffer)
    publish(store.db, version, folder)  # the other nodes fetch the new card and flatbuffer
    return flatbuffer
