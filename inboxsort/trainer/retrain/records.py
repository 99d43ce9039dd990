"""What a retrain writes down, as frozen records with their JSON.

The job and the result travel between the parent and the worker process as JSON files; the
metrics go into the candidate's card.json and its model_versions.metrics column, where
`inboxsort models list`, `stats` and users' own queries read them. The JSON keys and shapes are
those of the dicts these records replaced, so cards already on disk read the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inboxsort.trainer.evaluate import Scores

# One labelled image file for the worker: (path, index of the label in the job's classes).
LabelledPath = tuple[str, int]


def _scores_or_none(data: Mapping[str, Any] | None) -> Scores | None:
    return Scores.from_json(data) if data else None


def _json_or_none(scores: Scores | None) -> dict[str, Any] | None:
    return None if scores is None else scores.to_json()


@dataclass(frozen=True)
class Judged:
    """One model's figures on the images that judge a candidate (None: no such images)."""

    gate_set: Scores | None  # the test split of train.data, or held-out confirmed images
    corrections: Scores | None  # the held-out corrections

    def to_json(self) -> dict[str, Any]:
        """{"set": scores or null, "corrections": scores or null}."""
        return {"set": _json_or_none(self.gate_set), "corrections": _json_or_none(self.corrections)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Judged:
        """Read what to_json wrote (a missing key reads as null)."""
        return cls(_scores_or_none(data.get("set")), _scores_or_none(data.get("corrections")))


@dataclass(frozen=True)
class RetrainJob:
    """What the worker process is to do: written by the parent as job.json."""

    model_dir: Path  # the active version's folder
    version: int
    classes: tuple[str, ...]
    train: tuple[LabelledPath, ...]
    gate: tuple[LabelledPath, ...]
    held_out: tuple[LabelledPath, ...]
    epochs: int
    batch_size: int
    fine_tune_at: int
    learning_rate: float
    label_smoothing: float
    seed: int
    nice: int
    out_model: Path  # where the worker saves the candidate
    result: Path  # where the worker writes its result

    @property
    def out_litert(self) -> Path:
        """Where the worker writes the candidate's LiteRT flatbuffer: beside the .keras file."""
        return self.out_model.with_suffix(".tflite")

    def to_json(self) -> dict[str, Any]:
        """The job file's JSON."""
        return {
            "model_dir": str(self.model_dir),
            "version": self.version,
            "classes": list(self.classes),
            "train": [list(row) for row in self.train],
            "gate": [list(row) for row in self.gate],
            "held_out": [list(row) for row in self.held_out],
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "fine_tune_at": self.fine_tune_at,
            "learning_rate": self.learning_rate,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
            "nice": self.nice,
            "out_model": str(self.out_model),
            "result": str(self.result),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetrainJob:
        """Read what to_json wrote."""

        def rows(values: Sequence[Sequence[Any]]) -> tuple[LabelledPath, ...]:
            return tuple((str(path), int(label)) for path, label in values)

        return cls(
            model_dir=Path(data["model_dir"]),
            version=int(data["version"]),
            classes=tuple(str(c) for c in data["classes"]),
            train=rows(data["train"]),
            gate=rows(data["gate"]),
            held_out=rows(data["held_out"]),
            epochs=int(data["epochs"]),
            batch_size=int(data["batch_size"]),
            fine_tune_at=int(data["fine_tune_at"]),
            learning_rate=float(data["learning_rate"]),
            label_smoothing=float(data["label_smoothing"]),
            seed=int(data["seed"]),
            nice=int(data["nice"]),
            out_model=Path(data["out_model"]),
            result=Path(data["result"]),
        )


@dataclass(frozen=True)
class WorkerResult:
    """A worker that trained: both models judged, and what the candidate's card records."""

    active: Judged
    candidate: Judged
    history: Mapping[str, list[float]]  # Keras's per-epoch figures
    seconds: Mapping[str, float]  # load, fit, total
    peak_rss_mb: float
    versions: Mapping[str, str]  # tensorflow, keras, python
    # The card's "litert" entry of the flatbuffer written to the job's out_litert, or None
    # with the reason the conversion failed (the candidate then serves with Keras).
    litert: Mapping[str, Any] | None = None
    litert_error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The result file's JSON, `ok` true."""
        return {
            "ok": True,
            "active": self.active.to_json(),
            "candidate": self.candidate.to_json(),
            "history": {k: list(v) for k, v in self.history.items()},
            "seconds": dict(self.seconds),
            "peak_rss_mb": self.peak_rss_mb,
            "versions": dict(self.versions),
            "litert": None if self.litert is None else dict(self.litert),
            "litert_error": self.litert_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerResult:
        """Read what to_json wrote."""
        return cls(
            active=Judged.from_json(data["active"]),
            candidate=Judged.from_json(data["candidate"]),
            history={str(k): [float(v) for v in vals] for k, vals in data["history"].items()},
            seconds={str(k): float(v) for k, v in data["seconds"].items()},
            peak_rss_mb=float(data["peak_rss_mb"]),
            versions={str(k): str(v) for k, v in data["versions"].items()},
            litert=data.get("litert"),
            litert_error=str(data.get("litert_error") or ""),
        )


@dataclass(frozen=True)
class WorkerFailure:
    """A worker that could not train, and why."""

    error: str

    def to_json(self) -> dict[str, Any]:
        """The result file's JSON, `ok` false."""
        return {"ok": False, "error": self.error}


def result_from_json(data: Mapping[str, Any]) -> WorkerResult | WorkerFailure:
    """Read a result file's JSON: a WorkerResult if `ok`, else a WorkerFailure."""
    if not data.get("ok"):
        return WorkerFailure(str(data.get("error", "no reason given")))
    return WorkerResult.from_json(data)


@dataclass(frozen=True)
class PlanSummary:
    """How many images of each kind one attempt used, and which it ignored (by reason)."""

    corrections: int
    replay: int
    held_out_corrections: int
    gate_set: int
    gate_source: str
    ignored: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        """The counts as a card's `data` and the metrics' `retrain` hold them."""
        return {
            "corrections": self.corrections,
            "replay": self.replay,
            "held_out_corrections": self.held_out_corrections,
            "gate_set": self.gate_set,
            "gate_source": self.gate_source,
            "ignored": dict(self.ignored),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanSummary:
        """Read what to_json wrote (extra keys, such as started_at, are left alone)."""
        return cls(
            corrections=int(data["corrections"]),
            replay=int(data["replay"]),
            held_out_corrections=int(data["held_out_corrections"]),
            gate_set=int(data["gate_set"]),
            gate_source=str(data["gate_source"]),
            ignored={str(k): int(v) for k, v in data["ignored"].items()},
        )


@dataclass(frozen=True)
class RetrainMetrics:
    """The metrics of a retrained version: its card's `metrics` and its model_versions row's."""

    active: Judged
    candidate: Judged
    gate_source: str
    tolerance: float
    started_at: dt.datetime  # when the attempt read the corrections (new_corrections' cutoff)
    plan: PlanSummary
    # The worker's wall seconds (load, fit, total): /metrics's retrain durations read "total".
    wall_seconds: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """{"gate": {...}, "test": the candidate's gate-set scores, "retrain": {...}}."""
        return {
            "gate": {
                "active": self.active.to_json(),
                "candidate": self.candidate.to_json(),
                "set": self.gate_source,
                "tolerance": self.tolerance,
            },
            "test": _json_or_none(self.candidate.gate_set),
            "retrain": {
                "started_at": self.started_at.isoformat(),
                "wall_seconds": dict(self.wall_seconds),
                **self.plan.to_json(),
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetrainMetrics:
        """Read what to_json wrote (`test` repeats the candidate's gate-set scores)."""
        gate, retrain = data["gate"], data["retrain"]
        return cls(
            active=Judged.from_json(gate["active"]),
            candidate=Judged.from_json(gate["candidate"]),
            gate_source=str(gate["set"]),
            tolerance=float(gate["tolerance"]),
            started_at=dt.datetime.fromisoformat(retrain["started_at"]),
            plan=PlanSummary.from_json(retrain),
            wall_seconds={str(k): float(v) for k, v in retrain.get("wall_seconds", {}).items()},
        )
