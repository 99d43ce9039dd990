"""Which images a retrain learns from and which judge it; decided without TensorFlow.

Every split here is by content hash (dataset.hash_fraction), so the same image always lands on
the same side: a held-out correction is never trained on, in this attempt or any later one.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inboxsort.config import Config
from inboxsort.db import Correction, Database
from inboxsort.db.queries import images_by_id
from inboxsort.db.training import confirmed_images
from inboxsort.files import sha256_or_none
from inboxsort.layout import still_filed_as
from inboxsort.trainer.dataset import Sample, discover, hash_fraction
from inboxsort.trainer.retrain.records import LabelledPath, PlanSummary

log = logging.getLogger(__name__)

# At most this many gate-set images per attempt (the lowest hashes: a stable choice as the
# library grows), so judging two models stays a matter of seconds on a large library.
GATE_MAX = 1000


@dataclass(frozen=True)
class Item:
    """One labelled image file; `label` indexes the active model's classes."""

    path: str
    label: int
    sha256: str

    def labelled(self) -> LabelledPath:
        """(path, label) as the worker's job lists it."""
        return (self.path, self.label)


@dataclass
class RetrainPlan:
    """The images of one retrain attempt."""

    active: int
    classes: tuple[str, ...]
    corrections: list[Item] = field(default_factory=list)
    replay: list[Item] = field(default_factory=list)
    held_out: list[Item] = field(default_factory=list)
    gate: list[Item] = field(default_factory=list)
    gate_source: str = ""
    used_ids: list[int] = field(default_factory=list)  # correction rows the training consumes
    ignored: Counter[str] = field(default_factory=Counter)

    @property
    def train(self) -> list[Item]:
        """Corrected images first, then the replay sample."""
        return self.corrections + self.replay

    def summary(self) -> PlanSummary:
        """Counts for the card and the metrics."""
        return PlanSummary(
            corrections=len(self.corrections),
            replay=len(self.replay),
            held_out_corrections=len(self.held_out),
            gate_set=len(self.gate),
            gate_source=self.gate_source,
            ignored=dict(self.ignored),
        )

    def describe(self) -> str:
        """The summary as one line."""
        ignored = ", ".join(f"{n} {why}" for why, n in sorted(self.ignored.items()))
        return (
            f"{len(self.corrections)} corrected + {len(self.replay)} replayed images, "
            f"{len(self.held_out)} held-out corrections, {len(self.gate)} gate-set images"
            f" ({self.gate_source})" + (f"; ignored: {ignored}" if ignored else "")
        )


def make_plan(
    config: Config,
    db: Database,
    pool: Sequence[Correction],
    *,
    active: int,
    classes: Sequence[str],
) -> RetrainPlan:
    """Split the correction pool into training and held-out images, add replay and gate sets.

    `pool` is oldest first; `classes` are the active version's, whose indices label the items.
    """
    plan = RetrainPlan(active=active, classes=tuple(classes))
    _split_corrections(plan, db, pool, holdout=config.retrain.holdout)
    # Nothing that judges the candidate may also teach it.
    judging = {i.sha256 for i in plan.held_out}
    rng = random.Random(config.train.seed)
    if config.train.data is not None:
        _from_dataset(plan, config.train.data, rng, replay=config.retrain.replay, avoid=judging)
    else:
        _from_library(plan, db, config, rng, avoid=judging)
    taught = {i.sha256 for i in plan.train}
    plan.gate = [i for i in plan.gate if i.sha256 not in taught]
    return plan


def _split_corrections(
    plan: RetrainPlan, db: Database, pool: Sequence[Correction], *, holdout: float
) -> None:
    # A file moved twice (cats → dogs → cats) is one example with the last label; every
    # correction row of it counts as used.
    by_image: dict[int, list[Correction]] = {}
    for correction in pool:  # oldest first
        by_image.setdefault(correction.image_id, []).append(correction)
    with db.session() as session:
        images = images_by_id(session, by_image)
    for image_id, rows in by_image.items():
        last = rows[-1]
        image = images.get(image_id)
        if last.new_label not in plan.classes:
            log.info(
                "retrain: correction %d labels image %d %r, not a class of version %d %s; ignored",
                last.id,
                image_id,
                last.new_label,
                plan.active,
                list(plan.classes),
            )
            plan.ignored["unknown label"] += 1
            continue
        path = Path(image.path) if image is not None else None
        if path is None or not path.is_file():
            plan.ignored["file gone"] += 1
            continue
        sha = (image.sha256 if image is not None else None) or sha256_or_none(path)
        if sha is None:
            plan.ignored["unreadable"] += 1
            continue
        item = Item(str(path), plan.classes.index(last.new_label), sha)
        if hash_fraction(sha) < holdout:
            plan.held_out.append(item)
        else:
            plan.corrections.append(item)
            plan.used_ids += [r.id for r in rows]


def _from_dataset(
    plan: RetrainPlan, data: Path, rng: random.Random, *, replay: int, avoid: set[str]
) -> None:
    """Replay from train.data's training split; judge on its test split."""
    splits = discover(data)

    def mapped(samples: Iterable[Sample]) -> list[Item]:
        items = []
        for s in samples:
            name = splits.classes[s.label]
            if name in plan.classes and s.sha256 not in avoid:
                items.append(Item(str(s.path), plan.classes.index(name), s.sha256))
        return items

    pool = sorted(mapped(splits.train), key=lambda i: i.sha256)
    plan.replay = rng.sample(pool, min(replay, len(pool)))
    plan.gate = sorted(mapped(splits.test), key=lambda i: i.sha256)[:GATE_MAX]
    plan.gate_source = f"test split of {data}"


def _from_library(
    plan: RetrainPlan, db: Database, config: Config, rng: random.Random, *, avoid: set[str]
) -> None:
    """Replay and judge on confirmed images: filed in library/<label>/ and never corrected."""
    library = config.paths.library
    with db.session() as session:
        rows = confirmed_images(session, plan.classes)
    items = sorted(
        (
            Item(path, plan.classes.index(label), sha)
            for path, label, sha in rows
            if label
            and sha
            and sha not in avoid
            and still_filed_as(Path(path), label, library=library)
        ),
        key=lambda i: (hash_fraction(i.sha256), i.sha256),
    )
    held = [i for i in items if hash_fraction(i.sha256) < config.retrain.holdout]
    rest = [i for i in items if hash_fraction(i.sha256) >= config.retrain.holdout]
    plan.gate = _existing(held, GATE_MAX)
    rng.shuffle(rest)
    plan.replay = _existing(rest, config.retrain.replay)
    plan.gate_source = f"held-out confirmed images in {library}"


def _existing(items: Iterable[Item], limit: int) -> list[Item]:
    """The first `limit` items whose file is still there (stat only as many as needed)."""
    found: list[Item] = []
    for item in items:
        if len(found) >= limit:
            break
        if Path(item.path).is_file():
            found.append(item)
    return found
