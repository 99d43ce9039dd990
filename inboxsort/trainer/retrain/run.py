"""Learning from corrections: decide, plan and judge here; train in a niced, killable child.

This process never imports TensorFlow. It counts new corrections, picks the images (corrected,
replayed, held out), runs `python -m inboxsort.trainer.retrain.worker` on them with a deadline
(child.py), reads its small JSON result, applies the promotion gate and registers the candidate.
A worker that crashes, runs out of memory or overruns retrain.max_minutes costs one attempt,
never the daemon, and leaves the active model as it was.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inboxsort.config import Config
from inboxsort.db import (
    SOURCE_RECLASSIFY,
    Correction,
    Database,
    ModelVersion,
    open_database,
    utcnow,
)
from inboxsort.db.locks import fleet_lock
from inboxsort.db.queries import corrections_since
from inboxsort.db.training import mark_corrections_used, pool_looks
from inboxsort.errors import InboxsortError
from inboxsort.model.artifact import read_card
from inboxsort.model.registry import ModelStore, VersionInfo
from inboxsort.trainer.progress import PeriodicLines, Sink
from inboxsort.trainer.retrain.child import run_worker
from inboxsort.trainer.retrain.gate import judge
from inboxsort.trainer.retrain.plan import RetrainPlan, make_plan
from inboxsort.trainer.retrain.records import Judged, RetrainJob, RetrainMetrics, WorkerResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """One attempt: `ran` once a training process started; `failed` if no candidate came out."""

    ran: bool
    reason: str
    active: int
    candidate: int | None = None
    promoted: bool = False
    failed: bool = False
    new_corrections: int = 0
    active_metrics: Judged | None = None
    candidate_metrics: Judged | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (`inboxsort retrain --json`)."""
        return {
            "ran": self.ran,
            "reason": self.reason,
            "active": self.active,
            "candidate": self.candidate,
            "promoted": self.promoted,
            "failed": self.failed,
            "new_corrections": self.new_corrections,
            "active_metrics": None
            if self.active_metrics is None
            else self.active_metrics.to_json(),
            "candidate_metrics": (
                None if self.candidate_metrics is None else self.candidate_metrics.to_json()
            ),
            "seconds": self.seconds,
        }


class SavedModelFile:
    """Stands in for a Keras model in ModelStore.register: the file is already saved."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, dest: Path) -> None:
        """Copy the saved .keras file to dest (what keras.Model.save would have written)."""
        shutil.copyfile(self.path, dest)


def _started_at(row: ModelVersion) -> dt.datetime | None:
    # Any version's row: one `inboxsort train` registered has no "retrain" metrics.
    stamp = ((row.metrics or {}).get("retrain") or {}).get("started_at")
    return dt.datetime.fromisoformat(stamp) if stamp else None


def new_corrections(db: Database, active: int) -> tuple[list[Correction], int]:
    """Corrections the active model has not learnt from, and how many of them are new.

    The pool is corrections_since(active): unused ones plus those used only by versions newer
    than the active one (a rejected candidate, or one rolled back). A correction is *new* if it
    arrived after the last retrain attempt that looked at the pool: the start of an attempt
    from the active version, or of the attempt that produced it. So a rejected attempt does not
    rerun on the same corrections every interval, yet still trains on them next time.
    `reclassify` rows are left out: they record a model's own predictions, not the user's word.
    """
    with db.session() as session:
        pool = [c for c in corrections_since(session, active) if c.source != SOURCE_RECLASSIFY]
        looks = pool_looks(session, active)
    stamps = [s for s in (_started_at(r) for r in looks) if s is not None]
    if not stamps:
        return pool, len(pool)
    cutoff = max(stamps)
    return pool, sum(1 for c in pool if c.created_at > cutoff)


@contextmanager
def _exclusive(models_dir: Path) -> Iterator[bool]:
    """Hold models/.retrain.lock; yields False if another retrain (daemon or CLI) holds it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".retrain.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _job(config: Config, plan: RetrainPlan, store: ModelStore, workdir: Path) -> RetrainJob:
    t, r = config.train, config.retrain
    return RetrainJob(
        model_dir=store.local(plan.active),
        version=plan.active,
        classes=plan.classes,
        train=tuple(i.labelled() for i in plan.train),
        gate=tuple(i.labelled() for i in plan.gate),
        held_out=tuple(i.labelled() for i in plan.held_out),
        epochs=r.epochs,
        batch_size=t.batch_size,
        fine_tune_at=t.fine_tune_at,
        learning_rate=t.fine_tune_learning_rate,
        label_smoothing=t.label_smoothing,
        seed=t.seed,
        nice=r.nice,
        out_model=workdir / "candidate.keras",
        result=workdir / "result.json",
    )


def _card(
    active_card: dict[str, Any], metrics: RetrainMetrics, result: WorkerResult
) -> dict[str, Any]:
    """The candidate's card.json: the active card's model facts, then this attempt's."""
    keep = ("format", "classes", "image_size", "output", "backbone")
    return {
        **{k: active_card[k] for k in keep if k in active_card},
        "data": {"source": "corrections", **metrics.plan.to_json()},
        "metrics": metrics.to_json(),
        "history": {k: list(v) for k, v in result.history.items()},
        "wall_seconds": dict(result.seconds),
        "peak_rss_mb": result.peak_rss_mb,
        "versions": dict(result.versions),
    }


def retrain(
    config: Config,
    *,
    force: bool = False,
    stop: threading.Event | None = None,
    progress: Sink | None = None,
) -> RetrainOutcome:
    """Fine-tune the active model on new corrections if there are enough (or `force`).

    Never raises for a failed training (see `failed` and `reason`); setting `stop` kills a
    running worker within child.POLL_SECONDS. Only an unusable database raises (StoreError).
    `progress` gets the training's ticks (default: a log line per epoch and every 30 s).
    """
    started = time.monotonic()
    db = open_database(config.database.url)
    sink = progress or PeriodicLines(label="retrain")
    try:
        outcome = _retrain(config, db, force=force, stop=stop, progress=sink)
    finally:
        db.close()
    outcome = replace(outcome, seconds=round(time.monotonic() - started, 1))
    (log.warning if outcome.failed else log.info)(
        "retrain: %s (%.1f s)", outcome.reason, outcome.seconds
    )
    return outcome


def _retrain(
    config: Config, db: Database, *, force: bool, stop: threading.Event | None, progress: Sink
) -> RetrainOutcome:
    store = ModelStore(config.paths.models, db)
    # Lock first: the active version and the pool must not be read before another attempt
    # (daemon or CLI) has finished promoting and marking what it used.
    with _exclusive(config.paths.models) as mine, fleet_lock(db, "retrain") as fleet_wide:
        active = store.active_version()
        if not mine:
            return RetrainOutcome(
                ran=False, reason="skipped: another retrain is running", active=active
            )
        if not fleet_wide:
            # Another node of the fleet trains now, on the corrections of every node.
            return RetrainOutcome(
                ran=False,
                reason="skipped: a retrain is running elsewhere in the fleet",
                active=active,
            )
        # Holding the lock, no attempt is running: work folders left here are from one killed
        # with its parent (the daemon SIGKILLed), whose `finally` never ran.
        for stale in config.paths.models.glob(".retrain-*"):
            shutil.rmtree(stale, ignore_errors=True)
        planned_at = utcnow()  # before reading: a correction arriving meanwhile counts later
        pool, new = new_corrections(db, active)
        need = config.retrain.min_new_corrections
        if new < need and not force:
            return RetrainOutcome(
                ran=False,
                reason=f"skipped: {new} new correction(s) for version {active}, {need} needed",
                active=active,
                new_corrections=new,
            )
        try:
            return _train_and_judge(
                config, db, store, active, pool, new, planned_at, stop, progress
            )
        except InboxsortError as exc:
            return RetrainOutcome(
                ran=False, failed=True, reason=f"failed: {exc}", active=active, new_corrections=new
            )


def _train_and_judge(
    config: Config,
    db: Database,
    store: ModelStore,
    active: int,
    pool: list[Correction],
    new: int,
    planned_at: dt.datetime,
    stop: threading.Event | None,
    progress: Sink,
) -> RetrainOutcome:
    active_card = read_card(store.local(active))
    plan = make_plan(config, db, pool, active=active, classes=active_card["classes"])
    if not plan.used_ids:
        return RetrainOutcome(
            ran=False,
            reason=f"skipped: no usable corrections to train on ({plan.describe()})",
            active=active,
            new_corrections=new,
        )
    log.info("retrain: fine-tuning version %d on %s", active, plan.describe())
    workdir = Path(tempfile.mkdtemp(prefix=".retrain-", dir=config.paths.models))
    try:
        job = _job(config, plan, store, workdir)
        result, why = run_worker(
            job,
            workdir,
            max_seconds=config.retrain.max_minutes * 60,
            stop=stop,
            progress=progress,
        )
        if result is None:
            return RetrainOutcome(
                ran=True, failed=True, reason=f"failed: {why}", active=active, new_corrections=new
            )
        info, promote, reason = _judge_and_register(
            config, store, plan, active_card, result, job, planned_at
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # Marked whether promoted or not: corrections_since(active) still returns corrections used
    # only by a newer (rejected) version, so the next attempt from `active` trains on them again.
    with db.session() as session, session.begin():
        mark_corrections_used(session, plan.used_ids, info.version)
    return RetrainOutcome(
        ran=True,
        reason=f"version {info.version} from {active}: {reason}",
        active=active,
        candidate=info.version,
        promoted=promote,
        new_corrections=new,
        active_metrics=result.active,
        candidate_metrics=result.candidate,
    )


def _judge_and_register(
    config: Config,
    store: ModelStore,
    plan: RetrainPlan,
    active_card: dict[str, Any],
    result: WorkerResult,
    job: RetrainJob,
    planned_at: dt.datetime,
) -> tuple[VersionInfo, bool, str]:
    """Apply the gate and register the candidate, promoted or not; (its info, promoted, why)."""
    promote, reason = judge(result.active, result.candidate, tolerance=config.retrain.tolerance)
    now_active = store.active_version()
    if promote and now_active != plan.active:
        # Someone chose a version while this trained; their choice stands.
        promote = False
        reason += f"; kept inactive: version {now_active} was activated meanwhile"
    metrics = RetrainMetrics(
        active=result.active,
        candidate=result.candidate,
        gate_source=plan.gate_source,
        tolerance=config.retrain.tolerance,
        started_at=planned_at,
        plan=plan.summary(),
        wall_seconds=result.seconds,
    )
    card = _card(active_card, metrics, result)
    litert = _flatbuffer(job, result)
    if litert is not None:
        card["litert"] = dict(result.litert or {})
    info = store.register(
        SavedModelFile(job.out_model),
        card,
        parent=plan.active,
        activate=promote,
        promoted=promote,
        note=reason,
        litert=litert,
    )
    return info, promote, reason


def _flatbuffer(job: RetrainJob, result: WorkerResult) -> bytes | None:
    """The candidate's flatbuffer the worker wrote, or None (logged): it then serves with Keras."""
    if result.litert is None:
        log.warning(
            "retrain: the candidate has no LiteRT flatbuffer and will serve with Keras: %s",
            result.litert_error or "the worker made none",
        )
        return None
    try:
        return job.out_litert.read_bytes()
    except OSError as exc:
        log.warning(
            "retrain: cannot read the candidate's flatbuffer %s (%s); it will serve with Keras",
            job.out_litert,
            exc.strerror or exc,
        )
        return None


def describe_outcome(outcome: RetrainOutcome) -> str:
    """One human line about an outcome, for the CLI."""
    if not outcome.ran or outcome.failed:
        return outcome.reason
    state = "active now" if outcome.promoted else "kept inactive"
    return f"{outcome.reason} ({state}; {outcome.seconds:.0f} s)"
