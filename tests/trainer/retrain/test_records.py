"""The retrain's records and their JSON: the shapes cards and model_versions.metrics have held."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import numpy as np

from inboxsort.trainer.evaluate import Scores, score
from inboxsort.trainer.retrain.records import (
    Judged,
    PlanSummary,
    RetrainJob,
    RetrainMetrics,
    WorkerFailure,
    WorkerResult,
    result_from_json,
)

CLASSES = ("cats", "dogs")


def through_json(data: dict) -> dict:
    """What a reader of the file or the column gets back."""
    return json.loads(json.dumps(data))


def figures() -> Scores:
    # Three cats (one called a dog), one dog called a dog.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    return score(probs, np.array([0, 0, 0, 1]), CLASSES)


def test_scores_json_is_the_cards_shape_and_reads_back():
    scores = figures()
    data = scores.to_json()
    assert list(data) == ["n", "correct", "accuracy", "loss", "confusion", "per_class"]
    assert (data["n"], data["correct"], data["accuracy"]) == (4, 3, 0.75)
    assert data["confusion"] == [[2, 1], [0, 1]]
    assert data["per_class"] == {
        "cats": {"precision": 1.0, "recall": 2 / 3, "support": 3},
        "dogs": {"precision": 0.5, "recall": 1.0, "support": 1},
    }
    expected_loss = -np.log([0.9, 0.8, 0.3, 0.6]).mean()
    assert abs(data["loss"] - expected_loss) < 1e-12
    assert Scores.from_json(through_json(data)) == scores


def test_scores_of_nothing_have_no_accuracy_and_no_precision():
    empty = score(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), CLASSES)
    data = empty.to_json()
    assert data == {
        "n": 0,
        "correct": 0,
        "accuracy": None,
        "loss": None,
        "confusion": [[0, 0], [0, 0]],
        "per_class": {
            "cats": {"precision": None, "recall": None, "support": 0},
            "dogs": {"precision": None, "recall": None, "support": 0},
        },
    }
    assert Scores.from_json(through_json(data)) == empty


def test_judged_json_names_the_gate_set_set_and_reads_a_missing_key_as_none():
    judged = Judged(gate_set=figures(), corrections=None)
    assert judged.to_json() == {"set": figures().to_json(), "corrections": None}
    assert Judged.from_json(through_json(judged.to_json())) == judged
    assert Judged.from_json({"set": None}) == Judged(gate_set=None, corrections=None)


def test_job_json_round_trips_with_paths_and_labelled_rows(tmp_path):
    job = RetrainJob(
        model_dir=tmp_path / "0001",
        version=1,
        classes=CLASSES,
        train=(("/lib/dogs/a.jpg", 1), ("/lib/cats/b.jpg", 0)),
        gate=(),
        held_out=(("/lib/cats/c.jpg", 0),),
        epochs=3,
        batch_size=32,
        fine_tune_at=100,
        learning_rate=1e-5,
        label_smoothing=0.0,
        seed=1337,
        nice=10,
        out_model=tmp_path / "candidate.keras",
        result=tmp_path / "result.json",
    )
    data = through_json(job.to_json())
    assert data["train"] == [["/lib/dogs/a.jpg", 1], ["/lib/cats/b.jpg", 0]]
    assert data["model_dir"] == str(tmp_path / "0001") and data["classes"] == ["cats", "dogs"]
    assert RetrainJob.from_json(data) == job
    assert job.out_litert == tmp_path / "candidate.tflite"  # beside the .keras file


def test_worker_results_and_failures_read_back_from_the_result_file_json():
    result = WorkerResult(
        active=Judged(figures(), None),
        candidate=Judged(figures(), None),
        history={"loss": [0.5, 0.25], "accuracy": [0.75, 1.0]},
        seconds={"load": 1.5, "fit": 3.0, "total": 5.2},
        peak_rss_mb=812.4,
        versions={"tensorflow": "2.21.0", "keras": "3.12.0", "python": "3.12.3"},
    )
    data = through_json(result.to_json())
    assert data["ok"] is True and data["active"]["set"]["n"] == 4
    assert data["litert"] is None and data["litert_error"] == ""
    assert result_from_json(data) == result
    entry = {"file": "model.tflite", "sha256": "ab" * 32, "agreement": {"n": 4}, "agrees": True}
    converted = replace(result, litert=entry)
    assert result_from_json(through_json(converted.to_json())) == converted
    failed_conversion = replace(result, litert_error="RuntimeError: no")
    assert result_from_json(through_json(failed_conversion.to_json())) == failed_conversion
    # A result written before workers converted reads as one without a flatbuffer.
    older = {k: v for k, v in data.items() if k not in ("litert", "litert_error")}
    assert result_from_json(older) == result
    failed = through_json(WorkerFailure("cannot load x").to_json())
    assert failed == {"ok": False, "error": "cannot load x"}
    assert result_from_json(failed) == WorkerFailure("cannot load x")
    assert result_from_json({"ok": False}) == WorkerFailure("no reason given")


def test_retrain_metrics_json_is_the_model_versions_shape(tmp_path):
    started = dt.datetime(2026, 5, 1, 12, 30, 5, 123456, tzinfo=dt.UTC)
    plan = PlanSummary(
        corrections=16,
        replay=0,
        held_out_corrections=4,
        gate_set=24,
        gate_source=f"held-out confirmed images in {tmp_path}",
        ignored={"file gone": 1},
    )
    metrics = RetrainMetrics(
        active=Judged(figures(), figures()),
        candidate=Judged(figures(), None),
        gate_source=plan.gate_source,
        tolerance=0.01,
        started_at=started,
        plan=plan,
        wall_seconds={"load": 1.5, "fit": 20.0, "total": 24.5},
    )
    data = through_json(metrics.to_json())
    assert data == {
        "gate": {
            "active": {"set": figures().to_json(), "corrections": figures().to_json()},
            "candidate": {"set": figures().to_json(), "corrections": None},
            "set": plan.gate_source,
            "tolerance": 0.01,
        },
        "test": figures().to_json(),
        "retrain": {
            "started_at": "2026-05-01T12:30:05.123456+00:00",
            "wall_seconds": {"load": 1.5, "fit": 20.0, "total": 24.5},
            "corrections": 16,
            "replay": 0,
            "held_out_corrections": 4,
            "gate_set": 24,
            "gate_source": plan.gate_source,
            "ignored": {"file gone": 1},
        },
    }
    assert RetrainMetrics.from_json(data) == metrics
    # Versions retrained before wall seconds were recorded read with none.
    del data["retrain"]["wall_seconds"]
    assert RetrainMetrics.from_json(data) == replace(metrics, wall_seconds={})
