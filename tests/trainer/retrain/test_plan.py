"""make_plan on a real SQLite database and real image files: what teaches and what judges.

Every split is by a file's content hash, so each picture here is made until its hash falls
where the test needs it (`Pictures.make(..., below=, at_least=)`), and the expectations are
computed from the files' bytes, never from the plan.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update

from inboxsort.config import Config, PathsConfig, RetrainConfig, TrainConfig
from inboxsort.db import (
    SOURCE_MOVE,
    SOURCE_RECLASSIFY,
    STATUS_DELETED,
    STATUS_FILED,
    Correction,
    Database,
    Image,
)
from inboxsort.files import file_sha256
from inboxsort.trainer.dataset import TEST_SHARE_OF_VALIDATION, hash_fraction
from inboxsort.trainer.retrain.plan import Item, RetrainPlan, make_plan
from inboxsort.trainer.retrain.run import new_corrections
from tests.helpers.filedrows import CLASSES, file_image
from tests.helpers.imagegen import noise, save

CATS, DOGS = CLASSES.index("cats"), CLASSES.index("dogs")


class Pictures:
    """Real PNG files, each of content no other has, chosen by where their hash falls."""

    def __init__(self) -> None:
        self.seed = 0
        self.count = 0

    def make(self, folder: Path, *, below: float = 1.0, at_least: float = 0.0) -> Path:
        """A new picture in `folder` whose hash fraction lies in [at_least, below)."""
        self.count += 1
        path = folder / f"pic_{self.count:03d}.png"
        while True:
            self.seed += 1
            save(noise((8, 8), seed=self.seed), path)
            if at_least <= hash_fraction(file_sha256(path)) < below:
                return path


@pytest.fixture
def pictures() -> Pictures:
    return Pictures()


def config_for(
    tmp_path: Path, *, holdout: float, replay: int = 200, data: Path | None = None
) -> Config:
    return Config(
        paths=PathsConfig(
            inbox=tmp_path / "inbox",
            library=tmp_path / "library",
            failed=tmp_path / "failed",
            models=tmp_path / "models",
            duplicates=tmp_path / "duplicates",
        ),
        train=TrainConfig(data=data),
        retrain=RetrainConfig(holdout=holdout, replay=replay),
    )


def plan_for(config: Config, db: Database) -> RetrainPlan:
    """The plan of an attempt from the builtin version, on the pool a retrain would read."""
    pool, _ = new_corrections(db, 0)
    return make_plan(config, db, pool, active=0, classes=CLASSES)


def move(db: Database, image_id: int, label: str, *, source: str = SOURCE_MOVE) -> int:
    """The user moves a filed image into library/<label>/; returns the correction's id."""
    with db.begin() as session:
        image = session.get(Image, image_id)
        assert image is not None
        old = Path(image.path)
        new = old.parent.parent / label / old.name
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        correction = Correction(
            image_id=image_id,
            old_label=image.label,
            new_label=label,
            source=source,
            old_path=str(old),
            new_path=str(new),
        )
        session.add(correction)
        image.path, image.label = str(new), label
        session.flush()
        return correction.id


def add_correction(db: Database, image_id: int, label: str, *, source: str = SOURCE_MOVE) -> int:
    """A correction row that moves no file (a label the library has no folder for, a reclassify)."""
    with db.begin() as session:
        correction = Correction(image_id=image_id, new_label=label, source=source)
        session.add(correction)
        session.flush()
        return correction.id


def path_of(db: Database, image_id: int) -> Path:
    with db.session() as session:
        image = session.get(Image, image_id)
        assert image is not None
        return Path(image.path)


def file_image_id(db: Database, path: Path) -> int:
    """The id of the filed image at `path`."""
    with db.session() as session:
        row = session.scalars(select(Image).where(Image.path == str(path))).one()
        assert row.status == STATUS_FILED
        return row.id


def item(path: Path, label: int) -> Item:
    return Item(str(path), label, file_sha256(path))


def by_hash(items: list[Item]) -> list[Item]:
    return sorted(items, key=lambda i: i.sha256)


# --------------------------------------------------------------------------------------------
# The corrections
# --------------------------------------------------------------------------------------------


def test_corrections_split_by_content_hash_and_only_trained_ones_are_used(tmp_path, db, pictures):
    config = config_for(tmp_path, holdout=0.5, replay=0)
    cats = config.paths.library / "cats"
    low = [file_image(db, pictures.make(cats, below=0.5), "cats") for _ in range(3)]
    high = [file_image(db, pictures.make(cats, at_least=0.5), "cats") for _ in range(3)]
    used = [move(db, image_id, "dogs") for image_id in high]
    for image_id in low:
        move(db, image_id, "dogs")

    plan = plan_for(config, db)
    assert by_hash(plan.held_out) == by_hash([item(path_of(db, i), DOGS) for i in low])
    assert by_hash(plan.corrections) == by_hash([item(path_of(db, i), DOGS) for i in high])
    assert sorted(plan.used_ids) == sorted(used)  # held-out corrections stay unused
    assert (plan.replay, plan.train) == ([], plan.corrections)
    # Planned again, nothing changes sides.
    again = plan_for(config, db)
    assert (again.held_out, again.corrections, again.used_ids) == (
        plan.held_out,
        plan.corrections,
        plan.used_ids,
    )


def test_the_same_content_lands_on_the_same_side_whatever_the_file(tmp_path, db, pictures):
    config = config_for(tmp_path, holdout=0.5, replay=0)
    library = config.paths.library
    originals = [pictures.make(tmp_path / "new", below=0.5) for _ in range(3)]
    originals += [pictures.make(tmp_path / "new", at_least=0.5) for _ in range(3)]
    for index, source in enumerate(originals):
        # Each picture arrives twice under other names; both copies get corrected.
        for copy, label in ((f"a{index}.png", "cats"), (f"b{index}.png", "dogs")):
            image_id = file_image(db, library / label / copy, label, source=source)
            move(db, image_id, "dogs" if label == "cats" else "cats")

    plan = plan_for(config, db)
    held = Counter(i.sha256 for i in plan.held_out)
    trained = Counter(i.sha256 for i in plan.corrections)
    digests = [file_sha256(p) for p in originals]
    assert held == {d: 2 for d in digests[:3]}
    assert trained == {d: 2 for d in digests[3:]}


def test_a_file_moved_twice_is_one_example_with_its_last_label(tmp_path, db, pictures):
    config = config_for(tmp_path, holdout=0.5, replay=0)
    library = config.paths.library
    taught = file_image(db, pictures.make(library / "cats", at_least=0.5), "cats")
    first, second = move(db, taught, "dogs"), move(db, taught, "cats")
    judging = file_image(db, pictures.make(library / "dogs", below=0.5), "dogs")
    move(db, judging, "cats")
    move(db, judging, "dogs")

    plan = plan_for(config, db)
    assert plan.corrections == [item(library / "cats" / path_of(db, taught).name, CATS)]
    assert plan.held_out == [item(library / "dogs" / path_of(db, judging).name, DOGS)]
    assert sorted(plan.used_ids) == [first, second]  # every row of it counts as used
    summary = plan.summary()
    assert (summary.corrections, summary.held_out_corrections) == (1, 1)


def test_unknown_labels_missing_and_unreadable_files_are_counted_in_ignored(tmp_path, db, pictures):
    config = config_for(tmp_path, holdout=0.5, replay=0)
    cats = config.paths.library / "cats"
    # A label the active version does not have, first or after a good one: the last decides.
    add_correction(db, file_image(db, pictures.make(cats, at_least=0.5), "cats"), "birds")
    later = file_image(db, pictures.make(cats, at_least=0.5), "cats")
    move(db, later, "dogs")
    add_correction(db, later, "birds")
    # A corrected file the user deleted since.
    gone = file_image(db, pictures.make(cats, at_least=0.5), "cats")
    move(db, gone, "dogs")
    path_of(db, gone).unlink()
    # A row with no hash whose file cannot be read, not even by root: /proc/self/mem has no
    # byte at offset 0. And a row with no hash whose file can be: it is hashed now, and used.
    unreadable = file_image(db, pictures.make(cats, at_least=0.5), "cats")
    hashed_now = file_image(db, pictures.make(cats, at_least=0.5), "cats")
    with db.begin() as session:
        for image_id in (unreadable, hashed_now):
            row = session.get(Image, image_id)
            assert row is not None
            row.sha256 = None
            if image_id == unreadable:
                row.path = "/proc/self/mem"
    add_correction(db, unreadable, "dogs")
    used = move(db, hashed_now, "dogs")

    plan = plan_for(config, db)
    assert plan.ignored == Counter({"unknown label": 2, "file gone": 1, "unreadable": 1})
    assert plan.corrections == [item(path_of(db, hashed_now), DOGS)]
    assert (plan.held_out, plan.used_ids) == ([], [used])
    assert plan.summary().ignored == {"unknown label": 2, "file gone": 1, "unreadable": 1}
    assert plan.describe().endswith("ignored: 1 file gone, 2 unknown label, 1 unreadable")


# --------------------------------------------------------------------------------------------
# Replay and gate
# --------------------------------------------------------------------------------------------


def test_without_train_data_replay_and_gate_are_confirmed_library_images(tmp_path, db, pictures):
    config = config_for(tmp_path, holdout=0.5, replay=3)
    library = config.paths.library

    def filed(label: str, **where: float) -> Path:
        path = pictures.make(library / label, **where)
        file_image(db, path, label)
        return path

    # Confirmed: filed where the model put them and left there.
    held = [filed(label, below=0.5) for label in ("cats", "dogs", "cats", "dogs")]
    rest = [filed(label, at_least=0.5) for label in ("cats", "dogs", "cats", "dogs", "cats")]
    # A reclassified image left in place is a model's label the user let stand: confirmed too.
    reclassified = filed("dogs", at_least=0.5)
    add_correction(db, file_image_id(db, reclassified), "dogs", source=SOURCE_RECLASSIFY)
    # Not confirmed: corrected by the user, in _review/, of no class, deleted, or vanished.
    corrected = filed("cats", at_least=0.5)
    move(db, file_image_id(db, corrected), "dogs")
    review = pictures.make(library / "_review")
    file_image(db, review, "cats")
    file_image(db, pictures.make(library / "birds"), "birds")
    deleted = filed("cats")
    with db.begin() as session:
        session.execute(
            update(Image).where(Image.path == str(deleted)).values(status=STATUS_DELETED)
        )
    vanished = [filed("dogs", below=0.5), filed("dogs", at_least=0.5)]
    for path in vanished:
        path.unlink()

    plan = plan_for(config, db)
    assert plan.gate_source == f"held-out confirmed images in {library}"
    label = {p: CLASSES.index(p.parent.name) for p in [*held, *rest, reclassified]}
    # The gate: every held-out confirmed image still there, lowest hash first.
    assert plan.gate == sorted(
        (item(p, label[p]) for p in held), key=lambda i: hash_fraction(i.sha256)
    )
    replayable = {item(p, label[p]) for p in [*rest, reclassified]}
    assert len(plan.replay) == 3 == len(set(plan.replay)) and set(plan.replay) <= replayable
    assert plan.corrections == [item(library / "dogs" / corrected.name, DOGS)]
    assert plan.train == plan.corrections + plan.replay
    assert plan_for(config, db).replay == plan.replay  # the same sample for the same seed
    everything = plan_for(config_for(tmp_path, holdout=0.5, replay=100), db)
    assert set(everything.replay) == replayable
    assert everything.gate == plan.gate


def test_with_train_data_replay_is_its_train_split_and_the_gate_its_test_split(
    tmp_path, db, pictures
):
    data = tmp_path / "data"
    # train.data has a class the model lacks: its images are never used.
    names = ("birds", *CLASSES)
    train = {n: [pictures.make(data / "train" / n) for _ in range(4)] for n in names}
    test_split = {
        n: [
            pictures.make(data / "validation" / n, below=TEST_SHARE_OF_VALIDATION) for _ in range(2)
        ]
        for n in names
    }
    for n in names:  # the rest of validation/ is the validation split: neither replay nor gate
        pictures.make(data / "validation" / n, at_least=TEST_SHARE_OF_VALIDATION)
    config = config_for(tmp_path, holdout=0.5, replay=5, data=data)
    confirmed = pictures.make(config.paths.library / "cats")
    file_image(db, confirmed, "cats")  # confirmed library images are not used with train.data

    plan = plan_for(config, db)
    assert plan.gate_source == f"test split of {data}"
    # Labels index the model's classes, whatever index train.data's sorted folders give them.
    assert plan.gate == by_hash([item(p, CLASSES.index(n)) for n in CLASSES for p in test_split[n]])
    replayable = {item(p, CLASSES.index(n)) for n in CLASSES for p in train[n]}
    assert len(plan.replay) == 5 == len(set(plan.replay)) and set(plan.replay) <= replayable
    assert plan_for(config, db).replay == plan.replay  # the same sample for the same seed
    everything = plan_for(config_for(tmp_path, holdout=0.5, replay=100, data=data), db)
    assert set(everything.replay) == replayable
    assert str(confirmed) not in {i.path for i in everything.replay + everything.gate}


def test_nothing_that_judges_the_candidate_also_teaches_it(tmp_path, db, pictures):
    holdout = 0.1
    data = tmp_path / "data"
    config = config_for(tmp_path, holdout=holdout, replay=100, data=data)
    library = config.paths.library
    for name in CLASSES:
        for _ in range(3):
            pictures.make(data / "train" / name)
            pictures.make(data / "validation" / name, below=TEST_SHARE_OF_VALIDATION)
    # A held-out correction whose picture is also in train.data's training split.
    judging = pictures.make(library / "cats", below=holdout)
    shutil.copyfile(judging, data / "train" / "dogs" / "judging.png")
    judging_sha = file_sha256(judging)
    move(db, file_image(db, judging, "cats"), "dogs")
    # A trained correction whose picture is also in the test split (hash below 0.2, not 0.1).
    taught = pictures.make(library / "cats", below=TEST_SHARE_OF_VALIDATION, at_least=holdout)
    shutil.copyfile(taught, data / "validation" / "cats" / "taught.png")
    taught_sha = file_sha256(taught)
    move(db, file_image(db, taught, "cats"), "dogs")
    # A replayed training image that is also in the test split.
    replayed = pictures.make(data / "train" / "cats", below=TEST_SHARE_OF_VALIDATION)
    shutil.copyfile(replayed, data / "validation" / "cats" / "replayed.png")

    plan = plan_for(config, db)
    held, trained = {i.sha256 for i in plan.held_out}, {i.sha256 for i in plan.train}
    gate = {i.sha256 for i in plan.gate}
    assert judging_sha in held and judging_sha not in trained
    assert taught_sha in trained and taught_sha not in gate
    assert file_sha256(replayed) in {i.sha256 for i in plan.replay}
    assert file_sha256(replayed) not in gate
    assert not held & trained and not gate & trained
    assert len(plan.gate) == 6  # the test split's own pictures still judge


def test_a_confirmed_copy_of_a_held_out_correction_neither_judges_nor_teaches(
    tmp_path, db, pictures
):
    config = config_for(tmp_path, holdout=0.5, replay=100)
    library = config.paths.library
    judging = pictures.make(library / "cats", below=0.5)
    copy = library / "dogs" / "copy.png"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(judging, copy)
    file_image(db, copy, "dogs")  # filed as a dog and left there
    move(db, file_image(db, judging, "cats"), "dogs")
    other = pictures.make(library / "cats", below=0.5)
    file_image(db, other, "cats")

    plan = plan_for(config, db)
    assert plan.held_out == [item(library / "dogs" / judging.name, DOGS)]
    assert plan.gate == [item(other, CATS)]
    assert plan.replay == []
