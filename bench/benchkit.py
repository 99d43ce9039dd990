"""Helpers for benchmarks that run the real daemon: a site config, the subprocess, its log.

The daemon is `python -m inboxsort --config CONFIG run`, its log (stderr) goes to a file, and its
database is read through read-only sqlite3 connections, never through the daemon's own code.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from inboxsort.service.lock import INBOX_LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# "2026-11-29 08:42:13,123 INFO inboxsort.intake.inference: batch of 3 in 41 ms: ..."
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
_BATCH = re.compile(r"^batch of (\d+) in (\d+) ms")


def offline_env() -> dict[str, str]:
    """This environment plus what the Makefile exports: offline ImageNet weights, quiet TF."""
    env = dict(os.environ)
    shared = REPO.parent / "shared" / "keras"
    if "KERAS_HOME" not in env and (shared / "models").is_dir():
        env["KERAS_HOME"] = str(shared)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def toml_text(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML of {section: {key: value}} for strings, numbers and booleans."""
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                shown = "true" if value else "false"
            else:
                shown = repr(value) if isinstance(value, (int, float)) else json.dumps(str(value))
            lines.append(f"{key} = {shown}")
        lines.append("")
    return "\n".join(lines)


def write_site(root: Path, **sections: Mapping[str, Any]) -> Path:
    """root/config.toml with every folder and the database under root, plus `sections`."""
    settings: dict[str, Mapping[str, Any]] = {
        "paths": {n: n for n in ("inbox", "library", "failed", "models", "duplicates")},
        "database": {"url": "sqlite:///inboxsort.db"},
        **sections,
    }
    path = root / "config.toml"
    path.write_text(toml_text(settings))
    for name in settings["paths"].values():
        (root / str(name)).mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class LogLine:
    """One timestamped log line: seconds since the epoch (local clock), logger, message."""

    at: float
    level: str
    name: str
    message: str


def parse_log(text: str) -> list[LogLine]:
    """The timestamped lines of a daemon log (tracebacks and other continuations dropped)."""
    found = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            at = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append(LogLine(at, m[2], m[3], m[4]))
    return found


def batches(lines: list[LogLine]) -> list[tuple[float, int, float]]:
    """(time logged, images, milliseconds) of every "batch of N in X ms" line."""
    found = []
    for line in lines:
        m = _BATCH.match(line.message) if line.name == "inboxsort.intake.inference" else None
        if m:
            found.append((line.at, int(m[1]), float(m[2])))
    return found


class Daemon:
    """`inboxsort run` as a child process; waits fail at once if it exits."""

    def __init__(self, config: Path, env: Mapping[str, str]) -> None:
        self.root = config.parent
        self.db = self.root / "inboxsort.db"
        self.log_path = self.root / "daemon.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inboxsort", "--config", str(config), "run"],
                cwd=self.root,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[LogLine]:
        return parse_log(self.log())

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (none while the database or table does not exist)."""
        if not self.db.exists():
            return []
        uri = f"file:{self.db}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError:
                return []

    def until(
        self, condition: Callable[[], T | None], what: str, timeout: float, interval: float = 0.1
    ) -> T:
        """Poll condition() until it returns something truthy (returned); fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                tail = "\n".join(self.log().splitlines()[-30:])
                raise SystemExit(f"daemon exited {self.proc.returncode} before {what}:\n{tail}")
            if time.monotonic() >= deadline:
                raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def wait_log(self, text: str, what: str, timeout: float) -> LogLine:
        """The first timestamped line containing `text`, once it appears."""

        def seen() -> LogLine | None:
            return next((line for line in self.lines() if text in line.message), None)

        return self.until(seen, what, timeout, interval=0.2)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait, return the exit code (SIGKILL after `timeout`, then -9)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def serving_gaps(lines: list[LogLine], start: float, end: float) -> dict[str, Any]:
    """Gaps between consecutive batch lines, and batch times, logged between start and end."""
    window = [b for b in batches(lines) if start <= b[0] <= end]
    gaps = [(b[0] - a[0], a[0]) for a, b in itertools.pairwise(window)]
    if not gaps:
        return {"n": len(window)}
    longest, at = max(gaps)
    return {
        "n": len(window),
        "images": sum(b[1] for b in window),
        "max_gap": longest,
        "max_gap_at": at,
        "median_gap": statistics.median(g for g, _ in gaps),
        "max_ms": max(b[2] for b in window),
        "median_ms": statistics.median(b[2] for b in window),
    }


def account(daemon: Daemon, library: Path, dropped: list[str]) -> tuple[bool, str]:
    """Every dropped file has exactly one row and is a file in the library; nothing else is."""
    rows = daemon.query("select original_name, status, path from images")
    count: dict[str, int] = {}
    for name, _status, _path in rows:
        count[name] = count.get(name, 0) + 1
    bad_rows = [n for n in dropped if count.get(n) != 1]
    paths = {Path(p) for _n, s, p in rows if s == "filed"}
    outside = [p for p in paths if library not in p.parents or not p.is_file()]
    files = [p for p in library.rglob("*") if p.is_file()]
    inbox = [
        p
        for p in (daemon.root / "inbox").rglob("*")
        if p.is_file() and p.name != INBOX_LOCK_NAME  # the running daemon's lock file
    ]
    ok = not bad_rows and not outside and not inbox and len(rows) == len(files) == len(dropped)
    text = (
        f"{len(dropped)} dropped, {len(rows)} rows ({len(bad_rows)} names without exactly one), "
        f"{len(files)} files in library/ ({len(outside)} rows pointing elsewhere), "
        f"{len(inbox)} left in the inbox: {'ok' if ok else 'MISMATCH'}"
    )
    return ok, text


def write_results(out: Path, lines: list[str], figures: Mapping[str, Any]) -> None:
    """Write the report's lines to `out` and the figures beside it as `out` with .json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
