"""Helpers of the daemon's integration tests: a site on disk, waits with deadlines, inventories.

Import as `from daemonkit import ...` (pytest puts this folder on sys.path). Fixtures that use
these helpers live in conftest.py beside this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from inboxsort.config import Config, load_config
from inboxsort.db import (
    STATUS_PENDING,
    DaemonState,
    Image,
    ModelVersion,
    open_database,
    utcnow,
)
from inboxsort.service.lock import INBOX_LOCK_NAME

T = TypeVar("T")

# Settings that keep a test fast: a short settle, no periodic rescan unless a test wants one
# (so that what gets filed was seen by the watcher), small batches for a small model.
FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "watch": {"settle_seconds": 0.2, "rescan_seconds": 0},
    "batch": {"max_size": 16, "max_delay_ms": 50, "queue_size": 64, "decode_workers": 2},
    "logging": {"level": "INFO"},
}
# Generous: two cores shared with other test runs; a wait returns as soon as it is satisfied.
WAIT_SECONDS = 120.0
READY_SECONDS = 180.0


def wait_for(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = WAIT_SECONDS,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{state}")
        time.sleep(interval)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    """Every non-directory entry under folder (files, symlinks, FIFOs), sorted; [] if missing."""
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for dirpath, dirs, names in os.walk(folder):
        here = Path(dirpath)
        found += [here / n for n in names] + [here / d for d in dirs if (here / d).is_symlink()]
    return sorted(found)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_sections(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of {section: {key: value}}."""
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def merged(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """FAST_SETTINGS with per-section overrides applied."""
    result = {section: dict(values) for section, values in FAST_SETTINGS.items()}
    for section, values in overrides.items():
        result.setdefault(section, {}).update(values)
    return result


@dataclass
class Site:
    """One installation under a tmp folder: config, folders, SQLite file, model versions."""

    root: Path
    config_path: Path
    config: Config = field(init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)

    @property
    def inbox(self) -> Path:
        return self.config.paths.inbox

    @property
    def library(self) -> Path:
        return self.config.paths.library

    @property
    def failed(self) -> Path:
        return self.config.paths.failed

    @property
    def duplicates(self) -> Path:
        return self.config.paths.duplicates

    @property
    def models(self) -> Path:
        return self.config.paths.models

    # -- the database, read from outside the daemon -----------------------------------------

    @property
    def database_file(self) -> Path:
        url = self.config.database.url
        assert url.startswith("sqlite:///"), url
        return Path(url.removeprefix("sqlite:///"))

    @property
    def on_sqlite(self) -> bool:
        return self.config.database.url.startswith("sqlite:")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of raw SQL (`?` parameters) on a read-only connection of the site's database,
        plain sqlite3 or psycopg: cheap enough to poll often. JSON columns come back as text,
        as SQLite has them."""
        if not self.on_sqlite:
            return pg_query(self.config.database.url, sql, *args)
        uri = f"file:{self.database_file}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            return conn.execute(sql, args).fetchall()

    def rows(self) -> list[Image]:
        """Every images row, by id (a fresh read-only connection each call)."""
        with open_database(self.config.database.url, readonly=True) as db, db.session() as s:
            return list(s.scalars(select(Image).order_by(Image.id)))

    def heartbeat(self) -> DaemonState | None:
        with open_database(self.config.database.url, readonly=True) as db, db.session() as s:
            return s.get(DaemonState, self.config.node.name)

    def register(self, model_folder: Path, *, corrupt: bool = False) -> int:
        """Copy a model folder in as the next version and record it (inactive); its number.

        `corrupt` replaces model.keras with bytes Keras cannot load and flips bytes of its
        LiteRT flatbuffer, whose SHA-256 then no longer matches (the card stays valid): the
        version falls back to Keras, which cannot load it either.
        """
        with open_database(self.config.database.url) as db:
            with db.session() as session:
                taken = list(session.scalars(select(ModelVersion.version)))
            version = max([0, *taken]) + 1
            folder = self.models / f"{version:04d}"
            shutil.copytree(model_folder, folder)
            if corrupt:
                (folder / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras archive")
                flatbuffer = folder / "model.tflite"
                if flatbuffer.exists():
                    data = flatbuffer.read_bytes()
                    flatbuffer.write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])
            card = json.loads((folder / "card.json").read_text())
            with db.begin() as session:
                session.add(
                    ModelVersion(
                        version=version,
                        created_at=utcnow(),
                        path=str(folder),
                        metrics=card.get("metrics") or {},
                        active=False,
                        image_size=card["image_size"],
                        classes=card["classes"],
                    )
                )
        return version

    def activate(self, version: int) -> None:
        """Make a version the active one, as `inboxsort models activate` does."""
        from inboxsort.model.registry import ModelStore

        with open_database(self.config.database.url) as db:
            ModelStore(self.models, db).activate(version)

    # -- what is where -----------------------------------------------------------------------

    def inbox_files(self) -> list[Path]:
        """Every entry in the inbox but the running daemon's lock file (service/lock.py)."""
        return [p for p in files_under(self.inbox) if p != self.inbox / INBOX_LOCK_NAME]

    def outputs(self) -> list[Path]:
        """Every entry in the library, failed/ and duplicates/."""
        folders = (self.library, self.failed, self.duplicates)
        return sorted(p for folder in folders for p in files_under(folder))

    def settled(self, expected_rows: int) -> bool:
        """The inbox is empty, and the database holds `expected_rows` rows, none pending."""
        if self.inbox_files():
            return False
        rows = self.rows()
        return len(rows) == expected_rows and all(r.status != STATUS_PENDING for r in rows)

    def describe(self) -> str:
        rows = self.rows()
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        return (
            f"inbox holds {len(self.inbox_files())} files, outputs {len(self.outputs())}, "
            f"{len(rows)} rows {statuses}"
        )

    def row_by_name(self, name: str) -> Image:
        """The only row whose original_name is `name`."""
        matches = [r for r in self.rows() if r.original_name == name]
        assert len(matches) == 1, f"{len(matches)} rows for {name}: {matches}"
        return matches[0]


def pg_query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Site.query on PostgreSQL: a read-only psycopg connection, JSON loaded as text."""
    import psycopg
    from psycopg.types.string import TextLoader

    from tests.helpers.pgdb import _conninfo

    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.read_only = True
        conn.adapters.register_loader("json", TextLoader)
        return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), args).fetchall()]


def make_site(
    root: Path,
    model_folder: Path,
    writer: Callable[..., Path],
    *,
    database_url: str | None = None,
    **overrides: Mapping[str, Any],
) -> Site:
    """Folders, the config (FAST_SETTINGS + overrides), a migrated database, model v1 active.

    `writer` is the session's write_config (the config_writer fixture); `database_url` replaces
    its SQLite file (e.g. a PostgreSQL test database).
    """
    extra = {"database_url": database_url} if database_url else {}
    config_path = writer(root, toml_sections(merged(overrides)), **extra)
    site = Site(root, config_path)
    for folder in (site.inbox, site.library, site.failed, site.duplicates, site.models):
        folder.mkdir(parents=True, exist_ok=True)
    version = site.register(model_folder)
    site.activate(version)
    return site


# ---------------------------------------------------------------------------------------------
# The daemon in this process: the same pieces service.run builds, minus the signal handlers
# ---------------------------------------------------------------------------------------------


@contextmanager
def running_daemon(site: Site, *, once: bool = False) -> Iterator[Any]:
    """Start a Daemon (start() scans the inbox), supervise it in a thread; stop and close it."""
    from inboxsort.service.daemon import Daemon
    from inboxsort.service.run import prepare

    db, store, classifier = prepare(site.config)
    daemon = Daemon(site.config, db=db, store=store, classifier=classifier, once=once)
    errors: list[BaseException] = []
    thread: threading.Thread | None = None

    def supervise() -> None:
        try:
            daemon.supervise(tick=0.05)
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    try:
        daemon.start()
        thread = threading.Thread(target=supervise, name="supervise")
        thread.start()
        yield daemon
    finally:
        daemon.stop()
        if thread is not None:
            thread.join(30)
        daemon.close()
        db.close()
    assert thread is None or not thread.is_alive(), "supervise() did not return after stop()"
    assert not errors, f"supervise() raised {errors[0]!r}"


# ---------------------------------------------------------------------------------------------
# The daemon as a subprocess: `python -m inboxsort --config X run`
# ---------------------------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    """One `inboxsort run` subprocess; its stderr (the log) goes to a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def until(self, condition: Callable[[], T], what: str, **kwargs: Any) -> T:
        """wait_for(condition, ...) that fails at once if this process exits meanwhile."""

        def check() -> T:
            value = condition()
            if not value and not self.alive():
                raise AssertionError(
                    f"daemon exited {self.process.returncode} before {what}:\n{self.log()}"
                )
            return value

        return wait_for(check, what, **kwargs)

    def wait_log(self, text: str, what: str, *, timeout: float = WAIT_SECONDS) -> None:
        """Wait for `text` in the log; fail at once if the process exits meanwhile."""
        self.until(lambda: text in self.log(), what, timeout=timeout, interval=0.1)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Wait for the "watching ..." line start() logs once recovery and the scan are queued."""
        self.wait_log("inboxsort.service.daemon: watching ", "the daemon to start", timeout=timeout)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL this process (by its pid) and reap it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(30)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


def spawn_daemon(
    site: Site,
    env: Mapping[str, str],
    *args: str,
    log_name: str = "daemon",
    prefix: Sequence[str] = (),
) -> DaemonProcess:
    """Start `python -m inboxsort --config CONFIG run ARGS` with its log in site.root/logs.

    `prefix` goes before the command (e.g. setpriv to run it as another user).
    """
    logs = site.root / "logs"
    logs.mkdir(exist_ok=True)
    index = len(list(logs.iterdir()))
    log_path = logs / f"{index:02d}-{log_name}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "inboxsort",
                "--config",
                str(site.config_path),
                "run",
                *args,
            ],
            cwd=site.root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return DaemonProcess(process, log_path)
