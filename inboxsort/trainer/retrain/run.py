"""Learning from corrections: decide, plan and judge here; train in a niced, killable child.

This process never imports TensorFlow. It counts new corrections, picks the images (corrected,
replayed, held out), writes a job file, runs `python -m inboxsort.trainer.retrain.worker` with a
deadline, reads its small JSON result, applies the promotion gate and registers the candidate.
A worker that crashes, runs out of memory or overruns retrain.max_minutes costs one attempt,
never the daemon, and leaves the active model as it was.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update

from inboxsort.config import Config
from inboxsort.db import (
    SOURCE_RECLASSIFY,
    Correction,
    Database,
    ModelVersion,
    open_database,
    utcnow,
)
from inboxsort.db.queries import corrections_since
from inboxsort.errors import InboxsortError
from inboxsort.model.artifact import read_card
from inboxsort.model.registry import ModelStore
from inboxsort.trainer.retrain.gate import judge
from inboxsort.trainer.retrain.plan import RetrainPlan, make_plan

log = logging.getLogger(__name__)

WORKER_MODULE = "inboxsort.trainer.retrain.worker"
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 15
# The child must not speak for the daemon to systemd (sd_notify) or inherit its watchdog.
_CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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
    active_metrics: dict[str, Any] | None = None
    candidate_metrics: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class SavedModelFile:
    """Stands in for a Keras model in ModelStore.register: the file is already saved."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, dest: Path) -> None:
        """Copy the saved .keras file to dest (what keras.Model.save would have written)."""
        shutil.copyfile(self.path, dest)


def _started_at(row: ModelVersion) -> dt.datetime | None:
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
        looks = session.scalars(
            select(ModelVersion).where(
                or_(ModelVersion.parent == active, ModelVersion.version == active)
            )
        ).all()
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


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The child must run this very inboxsort, installed or not.
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    return f"signal {name}{hint}"


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def run_worker(
    job: dict[str, Any], workdir: Path, *, max_seconds: float, stop: threading.Event | None
) -> tuple[dict[str, Any] | None, str]:
    """Run the worker on a job; returns (its result, "") or (None, why it produced none)."""
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps(job))
    log_file = workdir / "worker.log"
    with open(log_file, "wb") as out:
        # A new session keeps a Ctrl-C meant for the CLI from reaching the child directly:
        # the parent then kills it in `finally`, the one place that decides.
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(job_file)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            cwd=workdir,
            start_new_session=True,
        )
    deadline = time.monotonic() + max_seconds
    why = ""
    try:
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                why = "the training process ran longer than retrain.max_minutes and was stopped"
                break
            if stop is not None and stop.is_set():
                why = "the training process was stopped: shutting down"
                break
            if stop is not None:
                stop.wait(POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if why:
        return None, why
    result_file = workdir / "result.json"
    try:
        result: dict[str, Any] = json.loads(result_file.read_text())
    except (OSError, ValueError):
        tail = _log_tail(log_file)
        return None, f"the training process died with {_exit_text(proc.returncode)}" + (
            f"; its last output:\n{tail}" if tail else ""
        )
    if not result.get("ok"):
        return None, f"training failed: {result.get('error', 'no reason given')}"
    return result, ""


def _job(config: Config, plan: RetrainPlan, store: ModelStore, workdir: Path) -> dict[str, Any]:
    t, r = config.train, config.retrain

    def rows(items: Any) -> list[list[Any]]:
        return [[i.path, i.label] for i in items]

    return {
        "model_dir": str(store.folder(plan.active)),
        "version": plan.active,
        "classes": list(plan.classes),
        "train": rows(plan.train),
        "gate": rows(plan.gate),
        "held_out": rows(plan.held_out),
        "epochs": r.epochs,
        "batch_size": t.batch_size,
        "fine_tune_at": t.fine_tune_at,
        "learning_rate": t.fine_tune_learning_rate,
        "label_smoothing": t.label_smoothing,
        "seed": t.seed,
        "nice": r.nice,
        "out_model": str(workdir / "candidate.keras"),
        "result": str(workdir / "result.json"),
    }


def _card(
    active_card: dict[str, Any], plan: RetrainPlan, result: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    keep = ("format", "classes", "image_size", "output", "backbone")
    return {
        **{k: active_card[k] for k in keep if k in active_card},
        "data": {"source": "corrections", **plan.summary()},
        "metrics": metrics,
        "history": result.get("history", {}),
        "wall_seconds": result.get("seconds", {}),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "versions": result.get("versions", {}),
    }


def retrain(
    config: Config, *, force: bool = False, stop: threading.Event | None = None
) -> RetrainOutcome:
    """Fine-tune the active model on new corrections if there are enough (or `force`).

    Never raises for a failed training (see `failed` and `reason`); setting `stop` kills a
    running worker within POLL_SECONDS. Only an unusable database raises (StoreError).
    """
    started = time.monotonic()
    db = open_database(config.database.url)
    try:
        outcome = _retrain(config, db, force=force, stop=stop)
    finally:
        db.close()
    outcome = replace(outcome, seconds=round(time.monotonic() - started, 1))
    (log.warning if outcome.failed else log.info)(
        "retrain: %s (%.1f s)", outcome.reason, outcome.seconds
    )
    return outcome


def _retrain(
    config: Config, db: Database, *, force: bool, stop: threading.Event | None
) -> RetrainOutcome:
    store = ModelStore(config.paths.models, db)
    # Lock first: the active version and the pool must not be read before another attempt
    # (daemon or CLI) has finished promoting and marking what it used.
    with _exclusive(config.paths.models) as mine:
        active = store.active_version()
        if not mine:
            return RetrainOutcome(
                ran=False, reason="skipped: another retrain is running", active=active
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
            return _train_and_judge(config, db, store, active, pool, new, planned_at, stop)
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
) -> RetrainOutcome:
    active_card = read_card(store.folder(active))
    plan = make_plan(config, db, pool, active=active, card=active_card)
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
            job, workdir, max_seconds=config.retrain.max_minutes * 60, stop=stop
        )
        if result is None:
            return RetrainOutcome(
                ran=True, failed=True, reason=f"failed: {why}", active=active, new_corrections=new
            )
        promote, reason = judge(
            result["active"], result["candidate"], tolerance=config.retrain.tolerance
        )
        now_active = store.active_version()
        if promote and now_active != active:
            # Someone chose a version while this trained; their choice stands.
            promote = False
            reason += f"; kept inactive: version {now_active} was activated meanwhile"
        metrics = {
            "gate": {
                "active": result["active"],
                "candidate": result["candidate"],
                "set": plan.gate_source,
                "tolerance": config.retrain.tolerance,
            },
            "test": result["candidate"].get("set"),
            "retrain": {"started_at": planned_at.isoformat(), **plan.summary()},
        }
        card = _card(active_card, plan, result, metrics)
        info = store.register(
            SavedModelFile(Path(job["out_model"])),
            card,
            parent=active,
            activate=promote,
            promoted=promote,
            note=reason,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # Marked whether promoted or not: corrections_since(active) still returns corrections used
    # only by a newer (rejected) version, so the next attempt from `active` trains on them again.
    with db.session() as session, session.begin():
        session.execute(
            update(Correction)
            .where(Correction.id.in_(plan.used_ids))
            .values(used_in_version=info.version)
        )
    return RetrainOutcome(
        ran=True,
        reason=f"version {info.version} from {active}: {reason}",
        active=active,
        candidate=info.version,
        promoted=promote,
        new_corrections=new,
        active_metrics=result["active"],
        candidate_metrics=result["candidate"],
    )


def describe_outcome(outcome: RetrainOutcome) -> str:
    """One human line about an outcome, for the CLI."""
    if not outcome.ran or outcome.failed:
        return outcome.reason
    state = "active now" if outcome.promoted else "kept inactive"
    return f"{outcome.reason} ({state}; {outcome.seconds:.0f} s)"
