"""The worker as a child process: started, watched against a deadline and a stop, read back.

The child runs in a session of its own, so a terminal's Ctrl-C does not reach it: the parent
alone decides when it dies. Its environment leaves out what would let it speak for the daemon
to systemd.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from inboxsort.trainer.progress import Sink, Tick
from inboxsort.trainer.retrain.records import (
    RetrainJob,
    WorkerFailure,
    WorkerResult,
    result_from_json,
)

WORKER_MODULE = "inboxsort.trainer.retrain.worker"
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 15
# The child must not speak for the daemon to systemd (sd_notify) or inherit its watchdog.
_CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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
    try:
        name: str | int = signal.Signals(-code).name
    except ValueError:  # not a signal this Python knows by name
        name = -code
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    return f"signal {name}{hint}"


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


class TickReader:
    """Reads the progress ticks the child writes among its output, as they come."""

    def __init__(self, path: Path, sink: Sink | None) -> None:
        self.path, self.sink = path, sink
        self._offset = 0
        self._partial = b""

    def read(self) -> None:
        """Pass every whole tick line written since the last read to the sink."""
        if self.sink is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            tick = Tick.from_line(line.decode("utf-8", "replace"))
            if tick is not None:
                self.sink(tick)


def _wait(
    proc: subprocess.Popen[bytes],
    max_seconds: float,
    stop: threading.Event | None,
    ticks: TickReader | None = None,
) -> str:
    """Wait for the child to exit; kill it at the deadline or on `stop` and say why, else ""."""
    deadline = time.monotonic() + max_seconds
    why = ""
    try:
        while proc.poll() is None:
            if ticks is not None:
                ticks.read()
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
    return why


def run_worker(
    job: RetrainJob,
    workdir: Path,
    *,
    max_seconds: float,
    stop: threading.Event | None,
    progress: Sink | None = None,
) -> tuple[WorkerResult | None, str]:
    """Run the worker on a job; returns (its result, "") or (None, why it produced none).

    `progress` gets the training's ticks while it runs.
    """
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps(job.to_json()))
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
    ticks = TickReader(log_file, progress)
    why = _wait(proc, max_seconds, stop, ticks)
    ticks.read()  # the last epoch's, written just before the child exited
    if why:
        return None, why
    try:
        result = result_from_json(json.loads(job.result.read_text()))
    except (OSError, ValueError):
        tail = _log_tail(log_file)
        return None, f"the training process died with {_exit_text(proc.returncode)}" + (
            f"; its last output:\n{tail}" if tail else ""
        )
    if isinstance(result, WorkerFailure):
        return None, f"training failed: {result.error}"
    return result, ""
