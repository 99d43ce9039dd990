"""Model commands end to end through `python -m inboxsort` subprocesses on real files.

One module-wide state: `train --activate` runs once (version 1, active); the tests read it, and
the one test that changes which version is active restores version 1 before it returns.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inboxsort import __version__
from inboxsort.config import load_config
from inboxsort.db import open_database
from inboxsort.model.artifact import BUILTIN_DIR
from inboxsort.model.litert import LITERT_FILE
from inboxsort.model.registry import ModelStore
from inboxsort.trainer.dataset import discover
from inboxsort.trainer.retrain.run import SavedModelFile
from tests.helpers.imagegen import TEXT_BYTES, copy_first_images

EVAL_PER_CLASS = 6


@dataclass(frozen=True)
class Trained:
    root: Path
    config: Path
    models: Path
    train: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, config_writer, run_cli, tiny_data) -> Trained:
    root = tmp_path_factory.mktemp("cli_models")
    config = config_writer(root)
    result = run_cli(
        "--config",
        config,
        "train",
        "--data",
        tiny_data,
        "--image-size",
        "160",
        "--epochs",
        "1",
        "--fine-tune-epochs",
        "1",
        "--activate",
        "--quiet",
        cwd=root,
    )
    return Trained(root, config, root / "models", result)


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, dataset_root) -> Path:
    """6 validation images per class (not in tiny_data) plus one text file posing as a JPEG."""
    root = tmp_path_factory.mktemp("eval")
    for name in ("cats", "dogs"):
        copy_first_images(dataset_root / "validation" / name, root / name, EVAL_PER_CLASS)
    (root / "cats" / "zz_notes.jpg").write_bytes(TEXT_BYTES)
    return root


@pytest.fixture
def cli(trained, run_cli):
    """Run a command against the trained config; require the training to have worked."""
    assert trained.train.returncode == 0, trained.train.stderr[-3000:]

    def run(*args: Any) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", trained.config, *args, cwd=trained.root)

    return run


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def listing(cli) -> dict[int, dict[str, Any]]:
    result = cli("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {entry["version"]: entry for entry in json_out(result)}


# ---------------------------------------------------------------------------------------------


def test_train_registers_and_activates_version_1_and_prints_a_summary(trained):
    result = trained.train
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"trained version 1 in {trained.models / '0001'} (active)"
    summary = [
        r"  validation  accuracy \d\.\d{4}  loss \d+\.\d{4}  n \d+",
        r"  test        accuracy \d\.\d{4}  loss \d+\.\d{4}  n \d+",
        r"  wall time   \d+ s \(load \d+ s, phase 1 \d+ s, phase 2 \d+ s\)",
        r"  peak memory \d+ MB",
        r"  litert      (\d+)/\1 labels equal to Keras, largest difference \S+ "
        r"\(serves with LiteRT\)",
    ]
    assert len(lines) == 1 + len(summary), result.stdout
    for line, pattern in zip(lines[1:], summary, strict=True):
        assert re.fullmatch(pattern, line), line
    assert "━" not in result.stdout + result.stderr  # --quiet: no progress bars
    assert sorted(p.name for p in trained.models.iterdir()) == ["0001"]
    assert sorted(p.name for p in (trained.models / "0001").iterdir()) == [
        "card.json",
        "model.keras",
        "model.tflite",
    ]
    assert (trained.root / "db.sqlite3").is_file()


def test_models_list_json(cli, trained):
    entries = listing(cli)
    assert sorted(entries) == [0, 1]
    builtin, first = entries[0], entries[1]
    assert builtin["builtin"] is True and builtin["active"] is False
    assert builtin["path"] == str(BUILTIN_DIR)
    assert {"version", "active", "path", "image_size", "metrics"} <= set(first)
    assert first["active"] is True and first["builtin"] is False
    assert first["path"] == str(trained.models / "0001")
    assert first["image_size"] == 160
    assert first["classes"] == ["cats", "dogs"]
    assert set(first["metrics"]) == {"validation", "test", "train_n"}
    assert first["note"] == "inboxsort train" and first["parent"] is None
    for entry in (builtin, first):
        assert (entry["runtime"], entry["runtime_reason"]) == ("litert", None)


def test_models_list_text_marks_the_active_version(cli, trained):
    result = cli("models", "list")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == HEADER
    assert len(lines) == 2
    assert lines[0].startswith("     0  builtin")
    test_n = json.loads((trained.models / "0001" / "card.json").read_text())["metrics"]["test"]["n"]
    assert re.match(
        r"^\*    1  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d  160px  \d\.\d{4} on "
        + str(test_n)
        + " +— +litert ",
        lines[1],
    )
    assert lines[1].endswith(f"  litert   {trained.models / '0001'}")
    assert lines[0].endswith(f"  litert   {BUILTIN_DIR}")


HEADER = ["ver", "created", "size", "test", "accuracy", "promoted", "runtime", "path"]
# What the retrain gate writes as a rejected version's note (trainer/retrain/gate.py judge()).
REJECTED = (
    "not promoted: gate-set accuracy 0.9500 → 1.0000 on 1 images (within tolerance 0.01); "
    "held-out corrections right 1 → 1 of 1 (must improve)"
)
PROMOTED = (
    "promoted: gate-set accuracy 0.9500 → 1.0000 on 1 images (within tolerance 0.01); "
    "held-out corrections right 0 → 1 of 1"
)


@pytest.fixture
def judged(make_config, tiny_model, tiny_card) -> Path:
    """A registry: version 1 trained and active, 2 rejected by the gate on a gate set of one
    image, 3 promoted by it (since rolled back); registered directly, as retrain registers."""
    config_path = make_config()
    config = load_config(config_path)
    litert = (tiny_model / LITERT_FILE).read_bytes()
    gate_card = {**tiny_card, "metrics": {"test": {"accuracy": 1.0, "n": 1, "correct": 1}}}
    with open_database(config.database.url) as db:
        store = ModelStore(config.paths.models, db)
        model = SavedModelFile(tiny_model / "model.keras")
        store.register(
            model, tiny_card, parent=None, activate=True, note="inboxsort train", litert=litert
        )
        for promoted, note in ((False, REJECTED), (True, PROMOTED)):
            store.register(
                model,
                gate_card,
                parent=1,
                activate=False,
                promoted=promoted,
                note=note,
                litert=litert,
            )
    return config_path


def test_models_list_shows_each_accuracy_with_its_set_size_and_the_gates_verdict(
    judged, run_cli, tiny_card
):
    result = run_cli("--config", judged, "models", "list", cwd=judged.parent)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == HEADER
    assert len(lines) == 4
    builtin, trained, rejected, promoted = lines
    shipped = json.loads((BUILTIN_DIR / "card.json").read_text())["metrics"]["test"]
    assert f"  {shipped['accuracy']:.4f} on {shipped['n']}  " in builtin
    test = tiny_card["metrics"]["test"]
    assert re.search(rf"  {test['accuracy']:.4f} on {test['n']} +— +litert ", trained), trained
    assert trained.startswith("*    1  ")
    # A perfect score on one image, and the reason the gate gave for not promoting it.
    assert re.search(r"  1\.0000 on 1 +no +litert +\S+  gate: not promoted: ", rejected), rejected
    assert rejected.startswith("     2  ") and rejected.endswith(f"  gate: {REJECTED}")
    assert re.search(r"  1\.0000 on 1 +yes +litert ", promoted), promoted
    assert promoted.endswith(f"  gate: {PROMOTED}")

    listed = run_cli("--config", judged, "models", "list", "--json", cwd=judged.parent)
    entries = {e["version"]: e for e in json.loads(listed.stdout)}
    assert [entries[n]["promoted"] for n in (0, 1, 2, 3)] == [None, None, False, True]
    assert (entries[0]["test_accuracy"], entries[0]["test_n"]) == (
        shipped["accuracy"],
        shipped["n"],
    )
    assert (entries[1]["test_n"], entries[1]["validation_n"]) == (
        test["n"],
        tiny_card["metrics"]["validation"]["n"],
    )
    assert (entries[2]["test_accuracy"], entries[2]["test_n"]) == (1.0, 1)
    assert (entries[2]["validation_accuracy"], entries[2]["validation_n"]) == (None, None)
    assert entries[2]["note"] == REJECTED


def test_activating_a_version_the_gate_rejected_needs_force(judged, run_cli):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", judged, "models", *args, cwd=judged.parent)

    def active() -> list[int]:
        return [e["version"] for e in json.loads(cli("list", "--json").stdout) if e["active"]]

    refused = cli("activate", "2")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"inboxsort: models activate: version 2 was not promoted ({REJECTED}); "
        "pass --force to activate it anyway\n"
    )
    assert active() == [1]
    for version in ("3", "0", "1"):  # promoted, or never judged by a gate: no question asked
        done = cli("activate", version)
        assert (done.returncode, done.stdout) == (0, f"version {version} is active\n"), done.stderr
    forced = cli("activate", "2", "--force")
    assert (forced.returncode, forced.stdout) == (0, "version 2 is active\n"), forced.stderr
    assert active() == [2]


def test_card_json_records_the_whole_recipe(cli, trained, tiny_data):
    card = json.loads((trained.models / "0001" / "card.json").read_text())
    assert card["classes"] == ["cats", "dogs"]
    assert card["image_size"] == 160
    assert card["version"] == 1 and card["parent"] is None
    assert card["output"] == "logit"
    splits = discover(tiny_data)
    data = card["data"]
    assert data["fingerprint"] == splits.fingerprint()
    assert (data["train"], data["validation"], data["test"]) == (
        len(splits.train),
        len(splits.validation),
        len(splits.test),
    )
    assert data["train"] + data["validation"] + data["test"] == 40
    assert data["source"] == str(tiny_data) and data["skipped"] == []
    recipe = card["recipe"]
    assert recipe["seed"] == 1337
    assert (recipe["image_size"], recipe["epochs"], recipe["fine_tune_epochs"]) == (160, 1, 1)
    assert "verbose" not in recipe
    metrics = card["metrics"]
    assert metrics["train_n"] == data["train"]
    for split in ("validation", "test"):
        m = metrics[split]
        assert m["n"] == data[split]
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["loss"] >= 0.0
        assert len(m["confusion"]) == 2 and sum(map(sum, m["confusion"])) == m["n"]
        assert set(m["per_class"]) == {"cats", "dogs"}
        assert sum(c["support"] for c in m["per_class"].values()) == m["n"]
    assert len(card["history"]["loss"]) == 2  # one epoch per phase
    litert = card["litert"]  # checked on the test split, as every version is
    assert litert["agreement"]["probe"] == f"the {data['test']} test images"
    assert litert["agrees"] is True and litert["file"] == "model.tflite"
    assert set(card["wall_seconds"]) == {"load", "phase1", "phase2", "total"}
    assert card["wall_seconds"]["total"] >= card["wall_seconds"]["phase1"]
    assert card["peak_rss_mb"] > 100
    assert card["backbone"]["name"] == "mobilenet_v2_1.0"
    assert card["backbone"]["file"].endswith("_1.0_160_no_top.h5")
    assert set(card["versions"]) == {"tensorflow", "keras", "python"}


@pytest.fixture(scope="module")
def evaluated(trained, run_cli, eval_dir) -> subprocess.CompletedProcess[str]:
    """`evaluate eval_dir --json` with the active version 1, run once for the module."""
    return run_cli("--config", trained.config, "evaluate", eval_dir, "--json", cwd=trained.root)


def test_evaluate_json(cli, evaluated, eval_dir):
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    out = json_out(evaluated)
    assert {"accuracy", "n", "errors", "model_version", "per_class", "confusion"} <= set(out)
    assert out["n"] == 2 * EVAL_PER_CLASS
    assert out["model_version"] == 1
    assert out["classes"] == ["cats", "dogs"]
    assert sum(map(sum, out["confusion"])) == out["n"]
    assert out["correct"] == out["confusion"][0][0] + out["confusion"][1][1]
    assert out["accuracy"] == pytest.approx(1 - len(out["errors"]) / out["n"])
    assert {k: v["support"] for k, v in out["per_class"].items()} == {
        "cats": EVAL_PER_CLASS,
        "dogs": EVAL_PER_CLASS,
    }
    for error in out["errors"]:
        assert error["predicted"] != error["label"]
        assert Path(error["path"]).parent.name == error["label"]
        assert 0.5 <= error["score"] <= 1.0
    assert out["unreadable"] == [
        {"path": str(eval_dir / "cats" / "zz_notes.jpg"), "error": "not an image: text"}
    ]


def test_classify_json_agrees_with_evaluate(cli, evaluated, eval_dir):
    images = sorted(p for p in eval_dir.glob("*/*.jpg") if p.name != "zz_notes.jpg")
    assert len(images) == 2 * EVAL_PER_CLASS
    classified = cli("classify", *images, "--json")
    assert classified.returncode == 0, classified.stderr[-3000:]
    rows = json_out(classified)
    assert [row["path"] for row in rows] == [str(p) for p in images]
    for row in rows:
        assert row["label"] in ("cats", "dogs")
        assert 0.5 <= row["score"] <= 1.0
        assert row["model_version"] == 1
        assert "error" not in row
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    wrong = {e["path"]: e for e in json_out(evaluated)["errors"]}
    for row in rows:
        truth = Path(row["path"]).parent.name
        assert (row["path"] in wrong) == (row["label"] != truth), row
        if row["path"] in wrong:
            assert row["score"] == pytest.approx(wrong[row["path"]]["score"], abs=2e-4)


def test_classify_reports_a_bad_file_and_exits_1(cli, eval_dir, tmp_path):
    good = eval_dir / "dogs" / "dog.2000.jpg"
    text = tmp_path / "b.jpg"
    text.write_bytes(TEXT_BYTES)
    result = cli("classify", good, text, "--json")
    assert result.returncode == 1
    rows = json_out(result)
    assert len(rows) == 2
    assert rows[0]["label"] in ("cats", "dogs") and 0.5 <= rows[0]["score"] <= 1.0
    assert rows[1] == {"path": str(text), "error": "not an image: text", "model_version": 1}


def test_rollback_and_activate(cli):
    try:
        rolled = cli("models", "rollback")
        assert rolled.returncode == 0, rolled.stderr
        assert rolled.stdout == "rolled back: version 0 is active\n"
        entries = listing(cli)
        assert entries[0]["active"] is True and entries[1]["active"] is False

        again = cli("models", "rollback")
        assert again.returncode == 1
        assert again.stderr == (
            "inboxsort: the shipped model is active; there is nothing to roll back to\n"
        )

        unknown = cli("models", "activate", "7")
        assert unknown.returncode == 1
        assert unknown.stderr == "inboxsort: model version 7 is not registered\n"
    finally:
        restored = cli("models", "activate", "1")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "version 1 is active\n"
    entries = listing(cli)
    assert entries[0]["active"] is False and entries[1]["active"] is True


def test_train_without_data_is_a_config_error(run_cli, make_config, tmp_path):
    result = run_cli("--config", make_config(), "train", "--quiet", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "inboxsort: config: train.data is not set: pass --data DIR\n"


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"inboxsort {__version__}\n"


def test_evaluate_text_output_on_a_folder_without_readable_images(cli, tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "bad.jpg").write_bytes(TEXT_BYTES)
    (tmp_path / "dogs").mkdir()
    result = cli("evaluate", tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode in (0, 1)
    assert "0 images" in result.stdout + result.stderr
    assert f"unreadable: {tmp_path / 'cats' / 'bad.jpg'}: not an image: text" in result.stdout
