"""Retraining on corrections: real SQLite, real image files, a real tiny model, a real worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inboxsort.config import Config, load_config
from inboxsort.db import (
    SOURCE_MOVE,
    SOURCE_RECLASSIFY,
    STATUS_FILED,
    Correction,
    Database,
    Image,
    open_database,
)
from inboxsort.files import file_sha256
from inboxsort.model.litert import LITERT_FILE
from inboxsort.model.registry import ModelStore
from inboxsort.trainer.dataset import hash_fraction
from inboxsort.trainer.retrain.gate import judge
from inboxsort.trainer.retrain.records import Judged, RetrainMetrics
from inboxsort.trainer.retrain.run import SavedModelFile, new_corrections, retrain
from tests.helpers.filedrows import forget_stored_files

CLASSES = ("cats", "dogs")
# Images the tiny model never saw (it trained on the first 20 of each class).
FIRST_UNSEEN = 100


@dataclass
class Setup:
    """A configured folder with the tiny model active as version 1."""

    config: Config
    config_path: Path
    db: Database
    store: ModelStore


def retrain_section(**values: object) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "[retrain]\n" + "\n".join(lines) + "\n"


@pytest.fixture
def make_setup(make_config, tiny_model, tiny_card) -> Iterator:
    opened: list[Database] = []

    def make(extra: str) -> Setup:
        path = make_config(extra)
        config = load_config(path)
        db = open_database(config.database.url)
        opened.append(db)
        store = ModelStore(config.paths.models, db)
        store.register(
            SavedModelFile(tiny_model / "model.keras"),
            tiny_card,
            parent=None,
            activate=True,
            litert=(tiny_model / LITERT_FILE).read_bytes(),
        )
        assert store.active_version() == 1
        return Setup(config, path, db, store)

    yield make
    for db in opened:
        db.close()


def unseen(dataset_root: Path, name: str, *, count: int, skip: int = 0) -> list[Path]:
    """Training images of one class the tiny model was not trained on."""
    files = sorted((dataset_root / "train" / name).glob("*.jpg"))
    return files[FIRST_UNSEEN + skip : FIRST_UNSEEN + skip + count]


def file_image(setup: Setup, source: Path, *, predicted: str, truth: str | None = None) -> int:
    """Record a filed image as the daemon does; if `truth` differs, the user moves it there."""
    library = setup.config.paths.library
    dest = library / predicted / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    with setup.db.session() as session, session.begin():
        image = Image(
            sha256=file_sha256(dest),
            original_name=source.name,
            source_path=str(setup.config.paths.inbox / source.name),
            path=str(dest),
            label=predicted,
            score=0.9,
            model_version=1,
            status=STATUS_FILED,
        )
        session.add(image)
        session.flush()
        if truth is not None and truth != predicted:
            moved = library / truth / source.name
            moved.parent.mkdir(parents=True, exist_ok=True)
            dest.rename(moved)
            image.path, image.label = str(moved), truth
            session.add(
                Correction(
                    image_id=image.id,
                    old_label=predicted,
                    new_label=truth,
                    source=SOURCE_MOVE,
                    old_path=str(dest),
                    new_path=str(moved),
                )
            )
        return image.id


def split_by_holdout(paths: list[Path], holdout: float) -> tuple[list[Path], list[Path]]:
    """(trained on, held out) by the retrainer's own hash rule."""
    held = [p for p in paths if hash_fraction(file_sha256(p)) < holdout]
    return [p for p in paths if p not in held], held


def corrections(setup: Setup) -> list[Correction]:
    with setup.db.session() as session:
        return list(session.query(Correction).order_by(Correction.id))


# --------------------------------------------------------------------------------------------
# Skipping
# --------------------------------------------------------------------------------------------


def test_below_the_threshold_it_skips_fast_without_tensorflow(make_setup, dataset_root, tmp_path):
    setup = make_setup(retrain_section(min_new_corrections=5))
    for path in unseen(dataset_root, "cats", count=3):
        file_image(setup, path, predicted="dogs", truth="cats")
    outcome = retrain(setup.config)
    assert (outcome.ran, outcome.failed, outcome.candidate) == (False, False, None)
    assert outcome.reason == "skipped: 3 new correction(s) for version 1, 5 needed"
    assert outcome.new_corrections == 3 and outcome.seconds < 5
    assert not list(setup.config.paths.models.glob(".retrain-*"))
    # In a fresh interpreter: the skip path must not even import TensorFlow.
    code = (
        "import json, sys; from inboxsort.config import load_config;"
        "from inboxsort.trainer.retrain.run import retrain;"
        f"o = retrain(load_config(__import__('pathlib').Path({str(setup.config_path)!r})));"
        "print(json.dumps([o.reason, 'tensorflow' in sys.modules, 'keras' in sys.modules]))"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    reason, tf_loaded, keras_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reason.startswith("skipped: 3 new") and not tf_loaded and not keras_loaded
    assert time.monotonic() - started < 15


def test_reclassify_rows_are_the_model_speaking_and_do_not_count(make_setup, dataset_root):
    setup = make_setup(retrain_section(min_new_corrections=3))
    for path in unseen(dataset_root, "cats", count=4):
        image_id = file_image(setup, path, predicted="cats")
        with setup.db.session() as session, session.begin():
            session.add(
                Correction(
                    image_id=image_id, old_label="dogs", new_label="cats", source=SOURCE_RECLASSIFY
                )
            )
    pool, new = new_corrections(setup.db, 1)
    assert (pool, new) == ([], 0)
    assert retrain(setup.config).reason.startswith("skipped: 0 new")


def test_a_second_retrain_skips_while_one_holds_the_lock(make_setup, dataset_root):
    import fcntl

    setup = make_setup(retrain_section(min_new_corrections=1))
    file_image(setup, unseen(dataset_root, "cats", count=1)[0], predicted="dogs", truth="cats")
    with open(setup.config.paths.models / ".retrain.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = retrain(setup.config, force=True)
    assert (outcome.ran, outcome.failed) == (False, False)
    assert outcome.reason == "skipped: another retrain is running"


def test_force_with_nothing_usable_skips(make_setup, dataset_root):
    setup = make_setup(retrain_section(min_new_corrections=50))
    image_id = file_image(
        setup, unseen(dataset_root, "cats", count=1)[0], predicted="dogs", truth="cats"
    )
    with setup.db.session() as session, session.begin():
        session.add(Correction(image_id=image_id, new_label="birds", source=SOURCE_MOVE))
    outcome = retrain(setup.config, force=True)
    assert not outcome.ran and not outcome.failed
    assert "no usable corrections" in outcome.reason and "1 unknown label" in outcome.reason


# --------------------------------------------------------------------------------------------
# Training in the worker
# --------------------------------------------------------------------------------------------


def test_poisoned_corrections_make_a_worse_candidate_that_is_not_promoted(make_setup, dataset_root):
    """Cats taught as dogs at a high learning rate; honest cat corrections are held out."""
    holdout = 0.3
    setup = make_setup(
        retrain_section(min_new_corrections=10, holdout=holdout, epochs=2, replay=0)
        + "[train]\nfine_tune_learning_rate = 0.001\nbatch_size = 16\n"
    )
    cats = unseen(dataset_root, "cats", count=40)
    taught, held = split_by_holdout(cats, holdout)
    assert len(held) >= 4 and len(taught) >= 16
    # Training side: the user "corrects" cats into dogs (a deliberately wrong lesson).
    for path in taught[:16]:
        file_image(setup, path, predicted="cats", truth="dogs")
    # Held-out side: honest corrections of cats the model called dogs.
    for path in held[:4]:
        file_image(setup, path, predicted="dogs", truth="cats")
    # Confirmed images for the gate set: correctly filed, never corrected.
    for name in CLASSES:
        for path in unseen(dataset_root, name, count=12, skip=60):
            file_image(setup, path, predicted=name)

    outcome = retrain(setup.config)  # 20 new corrections >= 10: runs without force
    assert outcome.ran and not outcome.failed, outcome.reason
    assert outcome.candidate == 2 and outcome.promoted is False
    assert setup.store.active_version() == 1
    assert outcome.active_metrics and outcome.candidate_metrics
    before, after = outcome.active_metrics.to_json(), outcome.candidate_metrics.to_json()
    assert before["corrections"]["n"] == 4
    # The lesson took: every held-out cat is now called a dog, so the gate must refuse it
    # even if the (dog-heavy) gate set happens to score no worse.
    assert after["corrections"]["confusion"] == [[0, 4], [0, 0]]
    assert after["corrections"]["correct"] <= before["corrections"]["correct"]
    assert "not promoted" in outcome.reason

    info = setup.store.info(2)
    assert (info.parent, info.promoted, info.active) == (1, False, False)
    assert info.metrics["gate"]["active"] == before
    assert info.metrics["gate"]["candidate"] == after
    assert info.metrics["retrain"]["corrections"] == 16
    assert info.note == outcome.reason.split(": ", 1)[1]
    card = json.loads((Path(info.path) / "card.json").read_text())
    assert card["classes"] == list(CLASSES) and card["parent"] == 1
    assert_the_metrics_json_keeps_its_shape(card, info.metrics)
    assert_the_candidate_serves_with_litert(setup, info.version, card)
    # Only the trained-on corrections are marked; held-out ones stay unused.
    used = [c.used_in_version for c in corrections(setup)]
    assert used == [2] * 16 + [None] * 4
    # The rejected attempt's corrections stay in the pool for version 1 but are not new.
    pool, new = new_corrections(setup.db, 1)
    assert len(pool) == 20 and new == 0
    assert retrain(setup.config).reason.startswith("skipped: 0 new")


def assert_the_candidate_serves_with_litert(setup: Setup, version: int, card: dict) -> None:
    """The worker converted the candidate, checked on the images that judged it."""
    folder = setup.store.folder(version)
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.keras", LITERT_FILE]
    entry = card["litert"]
    assert entry["file"] == LITERT_FILE and entry["sha256"] == file_sha256(folder / LITERT_FILE)
    gate_n = card["metrics"]["gate"]["candidate"]["set"]["n"]
    held_n = card["metrics"]["gate"]["candidate"]["corrections"]["n"]
    agreement = entry["agreement"]
    assert agreement["n"] == gate_n + held_n > 0
    assert agreement["probe"] == (f"the {gate_n} gate-set images and {held_n} held-out corrections")
    assert agreement["labels_equal"] == agreement["n"] and entry["agrees"] is True
    assert agreement["max_abs_diff"] <= agreement["bound"]
    # The parent never imported TensorFlow to get here, and the hot-swap loads LiteRT.
    served = setup.store.load(version, runtime=setup.config.serving.runtime)
    assert served.runtime == "litert" and served.version == version


def assert_the_metrics_json_keeps_its_shape(card: dict, metrics: dict) -> None:
    """The shape cards and model_versions.metrics have always had, and the records read it."""
    assert card["metrics"] == metrics
    assert set(metrics) == {"gate", "test", "retrain"}
    assert set(metrics["gate"]) == {"active", "candidate", "set", "tolerance"}
    assert metrics["test"] == metrics["gate"]["candidate"]["set"]
    assert set(metrics["retrain"]) == {
        "started_at",
        "wall_seconds",
        "corrections",
        "replay",
        "held_out_corrections",
        "gate_set",
        "gate_source",
        "ignored",
    }
    # The worker's wall seconds, as the card has them: /metrics's retrain durations.
    assert metrics["retrain"]["wall_seconds"] == card["wall_seconds"]
    assert metrics["retrain"]["wall_seconds"]["total"] > 0
    counts = {
        k: v for k, v in metrics["retrain"].items() if k not in {"started_at", "wall_seconds"}
    }
    assert card["data"] == {"source": "corrections", **counts}
    assert RetrainMetrics.from_json(metrics).to_json() == metrics


def test_a_corrupt_active_model_fails_in_the_worker_and_changes_nothing(make_setup, dataset_root):
    setup = make_setup(retrain_section(min_new_corrections=1))
    for path in unseen(dataset_root, "dogs", count=4):
        file_image(setup, path, predicted="cats", truth="dogs")
    # The database's copy would heal the folder (model/lineage.py): a pre-0004 version has none.
    forget_stored_files(setup.store.db, 1)
    (setup.store.folder(1) / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    outcome = retrain(setup.config)
    assert outcome.failed and outcome.candidate is None and not outcome.promoted
    assert "cannot load" in outcome.reason
    assert setup.store.active_version() == 1
    assert [v.version for v in setup.store.versions()] == [0, 1]
    assert all(c.used_in_version is None for c in corrections(setup))
    assert not list(setup.config.paths.models.glob(".retrain-*"))


def test_a_worker_over_max_minutes_is_killed(make_setup, dataset_root):
    setup = make_setup(retrain_section(min_new_corrections=1, max_minutes=0.02))
    for path in unseen(dataset_root, "dogs", count=4):
        file_image(setup, path, predicted="cats", truth="dogs")
    # Left by an attempt whose parent was killed: swept by the next one.
    (setup.config.paths.models / ".retrain-stale" / "job.json").parent.mkdir()
    started = time.monotonic()
    outcome = retrain(setup.config)
    assert time.monotonic() - started < 10
    assert outcome.ran and outcome.failed and "max_minutes" in outcome.reason
    assert setup.store.active_version() == 1
    assert [v.version for v in setup.store.versions()] == [0, 1]
    assert not list(setup.config.paths.models.glob(".retrain-*"))


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_retrain_skips_then_force_registers_a_candidate(make_setup, dataset_root, run_cli):
    holdout = 0.5
    setup = make_setup(retrain_section(min_new_corrections=30, holdout=holdout, epochs=1))
    mixed = unseen(dataset_root, "cats", count=6) + unseen(dataset_root, "dogs", count=6)
    for path in mixed:
        truth = path.parent.name
        file_image(setup, path, predicted="dogs" if truth == "cats" else "cats", truth=truth)
    for name in CLASSES:
        for path in unseen(dataset_root, name, count=6, skip=60):
            file_image(setup, path, predicted=name)
    taught, held = split_by_holdout(mixed, holdout)

    skipped = run_cli("--config", setup.config_path, "retrain", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["ran"] is False

    done = run_cli("--config", setup.config_path, "retrain", "--force", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ran"] is True and out["failed"] is False and out["candidate"] == 2
    # Progress from the training child, as log lines: stderr is not a terminal here.
    progress = "INFO inboxsort.trainer.progress: retrain: epoch 1/1, "
    assert re.search(re.escape(progress) + r"[\d.]+ images/s, .*done", done.stderr), done.stderr
    assert out["active_metrics"]["corrections"]["n"] == len(held)
    assert out["candidate_metrics"]["set"]["n"] == out["active_metrics"]["set"]["n"] > 0
    info = setup.store.info(2)
    assert info.metrics["gate"]["active"] == out["active_metrics"]
    assert info.metrics["gate"]["candidate"] == out["candidate_metrics"]
    assert info.promoted is out["promoted"] and info.active is out["promoted"]
    assert setup.store.active_version() == (2 if out["promoted"] else 1)
    assert (
        judge(
            Judged.from_json(out["active_metrics"]),
            Judged.from_json(out["candidate_metrics"]),
            tolerance=0.01,
        )[0]
        is (out["promoted"])
    )
    assert sum(c.used_in_version == 2 for c in corrections(setup)) == len(taught)


def test_cli_retrain_exits_1_when_training_fails(make_setup, dataset_root, run_cli):
    setup = make_setup(retrain_section(min_new_corrections=1, max_minutes=0.02))
    for path in unseen(dataset_root, "dogs", count=2):
        file_image(setup, path, predicted="cats", truth="dogs")
    done = run_cli("--config", setup.config_path, "retrain")
    assert done.returncode == 1
    assert "max_minutes" in done.stdout
