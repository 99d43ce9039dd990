"""Environment checks shared by the daemon's start and `inboxsort doctor`; each returns a Check."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from inboxsort.config import Config
from inboxsort.errors import InboxsortError
from inboxsort.files import Ignore, scan

if TYPE_CHECKING:
    from inboxsort.db import Database

INOTIFY_LIMIT_PATH = Path("/proc/sys/fs/inotify/max_user_watches")
CPUINFO_PATH = Path("/proc/cpuinfo")
FOLDERS = ("inbox", "library", "failed", "models", "duplicates")
# Folders the daemon moves files into from the inbox: a rename only works on one filesystem.
MOVE_TARGETS = ("library", "failed", "duplicates")
_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class Check:
    """The outcome of one check; a failed check with warning=True does not stop anything."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False

    @property
    def status(self) -> str:
        """OK, WARN or FAIL."""
        return "OK" if self.ok else "WARN" if self.warning else "FAIL"


def failures(checks: Iterable[Check]) -> list[Check]:
    """The checks that failed outright (not the warnings)."""
    return [c for c in checks if c.status == "FAIL"]


def _user() -> str:
    """The effective user's name (or uid when it has no passwd entry, as in some containers)."""
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_config(config: Config) -> Check:
    """The configuration loaded (a broken one never gets this far: main() exits 2)."""
    where = str(config.source) if config.source else "built-in defaults (no config file)"
    return Check("config", True, where)


def _prepare_folder(path: Path) -> tuple[bool, str]:
    """Create `path` if missing; return (created, problem or "")."""
    created = False
    if not path.is_dir():
        try:
            path.mkdir(parents=True)
            created = True
        except FileExistsError:
            return False, "exists but is not a folder"
        except OSError as exc:
            return False, f"cannot be created ({exc.strerror or exc})"
    # access() rather than a probe file: writing into the watched inbox would wake the daemon.
    # It still reports read-only mounts (EROFS), which is what systemd sandboxing produces.
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        return created, "is not writable" + _read_only_note(path)
    return created, ""


def _read_only_note(path: Path) -> str:
    """Say so when the folder's filesystem is mounted read-only: no chown or chmod helps then."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return ""
    # Under the shipped unit (ProtectSystem=strict) this is a folder outside ReadWritePaths=.
    return " (its filesystem is mounted read-only to this process)" if read_only else ""


def check_folders(config: Config) -> Check:
    """Every configured folder exists (missing ones are created) and is writable."""
    created: list[str] = []
    problems: list[str] = []
    for name in FOLDERS:
        path = getattr(config.paths, name)
        made, problem = _prepare_folder(path)
        if made:
            created.append(f"paths.{name}")
        if problem:
            problems.append(f"paths.{name} = {path} {problem}")
    made_text = f" (created {', '.join(created)})" if created else ""
    if problems:
        user = _user()
        return Check(
            "folders",
            False,
            "; ".join(problems) + made_text,
            fix=f"make each one a folder that user {user} can write, "
            f"e.g. `install -d -o {user} PATH`; under systemd, list it in the unit's "
            "ReadWritePaths= (`systemctl edit inboxsort`)",
        )
    return Check("folders", True, f"{len(FOLDERS)} folders writable{made_text}")


def check_same_filesystem(config: Config) -> Check:
    """The inbox shares a filesystem with the folders files move to (else moves copy)."""
    try:
        inbox_dev = config.paths.inbox.stat().st_dev
        apart = [
            f"paths.{name}"
            for name in MOVE_TARGETS
            if getattr(config.paths, name).stat().st_dev != inbox_dev
        ]
    except OSError as exc:
        return Check("same filesystem", False, f"cannot compare: {exc}", warning=True)
    if apart:
        return Check(
            "same filesystem",
            False,
            f"{', '.join(apart)} not on the filesystem of paths.inbox: "
            "moves become copy + delete (slower, and not atomic)",
            fix="put the inbox and the library on one filesystem",
            warning=True,
        )
    return Check("same filesystem", True, "inbox and its move targets share one filesystem")


def _count_folders(root: Path) -> int:
    """Folders under `root`, itself included: each needs one inotify watch."""
    if not root.is_dir():
        return 0
    return sum(1 for _ in os.walk(root))


def check_inotify(config: Config, *, limit_path: Path = INOTIFY_LIMIT_PATH) -> Check:
    """The inotify watch limit leaves room for one watch per folder of inbox and library."""
    if config.watch.polling:
        return Check("inotify", True, "watch.polling = true: no inotify watches needed")
    try:
        limit = int(limit_path.read_text().strip())
    except FileNotFoundError:
        return Check("inotify", True, f"no {limit_path}: no inotify limit on this system")
    except (OSError, ValueError) as exc:
        return Check("inotify", False, f"cannot read {limit_path}: {exc}", warning=True)
    needed = _count_folders(config.paths.inbox) + _count_folders(config.paths.library)
    # The limit is per user and shared with every other program of that user (editors, sync
    # clients), and the library grows: ask for twice what is needed now.
    if limit < 2 * needed:
        suggested = max(524288, 4 * needed)
        return Check(
            "inotify",
            False,
            f"max_user_watches = {limit}, but inbox and library have {needed} folders",
            fix=f"sudo sysctl fs.inotify.max_user_watches={suggested} (and the same line in "
            "/etc/sysctl.d/90-inboxsort.conf to keep it), or set watch.polling = true",
            warning=True,
        )
    return Check("inotify", True, f"max_user_watches = {limit} for {needed} folders")


def check_cpu(*, cpuinfo_path: Path = CPUINFO_PATH, machine: str | None = None) -> Check:
    """The CPU has what TensorFlow's wheels are built for (AVX on x86)."""
    arch = (machine or platform.machine()).lower()
    if arch not in _X86:
        return Check("cpu", True, f"{arch}: no x86 instruction set extensions needed")
    try:
        text = cpuinfo_path.read_text(errors="replace")
    except OSError as exc:
        return Check("cpu", False, f"cannot read {cpuinfo_path}: {exc}", warning=True)
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    have = [f for f in ("avx", "avx2", "fma") if f in flags]
    if "avx" not in flags:
        # TensorFlow built with AVX dies with SIGILL on import: no Python error to report.
        return Check(
            "cpu",
            False,
            f"{arch} CPU without AVX: TensorFlow will crash on import",
            fix="run on a CPU with AVX, or install a TensorFlow build without AVX",
        )
    return Check("cpu", True, f"{arch} with {', '.join(have)}")


def check_database(config: Config) -> Check:
    """The database is writable and its schema at the revision this code expects (a missing
    file is created)."""
    from inboxsort.db import (
        current_revision,
        database_write_problem,
        head_revision,
        open_database,
        safe_url,
    )
    from inboxsort.db.session import sqlite_path

    url = config.database.url
    head = head_revision()
    path = sqlite_path(url)
    unwritable = database_write_problem(url)
    if unwritable:  # the daemon would refuse to start (and the CLI could not record anything)
        return Check("database", False, unwritable[0], fix=unwritable[1])
    try:
        if path is not None and not path.exists():
            # Like a missing folder: create what the daemon would create at its start.
            open_database(url).close()
            return Check("database", True, f"created {path} at revision {head}")
        with open_database(url, readonly=True, migrate=False) as db:
            revision = current_revision(db)
    except InboxsortError as exc:  # e.g. a revision newer than this code, or a corrupt file
        fix = "upgrade inboxsort" if "newer" in str(exc) else "check database.url"
        return Check("database", False, str(exc), fix=fix)
    if revision != head:
        return Check(
            "database",
            False,
            f"{safe_url(url)} is at schema revision {revision or 'none'}, this code needs {head}",
            fix="inboxsort db upgrade",
        )
    return Check("database", True, f"{safe_url(url)} at revision {head}")


# The README section that says how to rebuild the records of a library (README.md, "Using it").
RECORDS_SECTION = "A library without records"


def _library_files(config: Config) -> int:
    """Files in the library the daemon would file or track (ignored names not counted)."""
    library = config.paths.library
    return sum(
        1 for _ in scan(library, recursive=True, ignore=Ignore(library, config.watch.ignore))
    )


def check_records(config: Config, db: Database | None = None) -> Check:
    """The database has records of the library's images; none beside a library full of files
    means it was deleted or emptied (it is created anew, empty, at the next start).

    `db`: the daemon's open database; without it (doctor) the file is opened read-only.
    """
    from inboxsort.db import open_database
    from inboxsort.db.counts import count_by_status

    try:
        with contextlib.ExitStack() as stack:
            if db is None:
                db = stack.enter_context(
                    open_database(config.database.url, readonly=True, migrate=False)
                )
            with db.session() as session:
                rows = sum(count_by_status(session).values())
    except (InboxsortError, SQLAlchemyError):
        rows = 0  # no schema at all (a zero-length file): no rows either
    if rows:
        return Check("records", True, f"{rows} images recorded")
    files = _library_files(config)
    if not files:
        return Check("records", True, "no images recorded, and none in the library")
    return Check(
        "records",
        False,
        f"the database has no image rows but the library holds {files} files "
        "(was the database file deleted or emptied?)",
        fix=f'read README section "{RECORDS_SECTION}" to rebuild them',
        warning=True,
    )


def check_model(config: Config) -> Check:
    """The active model loads, agrees with its card and registry row, and predicts a batch."""
    import numpy as np

    from inboxsort.db import open_database
    from inboxsort.model.registry import ModelStore, require_model

    try:
        # Read-only: doctor reports an old schema rather than silently migrating it.
        with open_database(config.database.url, readonly=True, migrate=False) as db:
            store = ModelStore(config.paths.models, db)
            version = store.active_version()
            info = store.info(version)
            started = time.monotonic()
            classifier = require_model(store, runtime=config.serving.runtime)
    except InboxsortError as exc:
        return Check("model", False, str(exc), fix="inboxsort models activate VERSION (0: shipped)")
    except SQLAlchemyError as exc:
        # The driver's message, without SQLAlchemy's multi-line SQL and background link.
        why = getattr(exc, "orig", None) or exc
        return Check(
            "model", False, f"cannot read model versions: {why}", fix="inboxsort db upgrade"
        )
    size, classes = classifier.image_size, list(classifier.classes)
    where = f"version {version} ({info.path})"
    # Rows written before the registry recorded these columns hold NULL: nothing to compare.
    row_size = size if info.image_size is None else info.image_size
    row_classes = classes if info.classes is None else list(info.classes)
    if (row_size, row_classes) != (size, classes):
        return Check(
            "model",
            False,
            f"{where}: registry says {info.image_size}px {info.classes}, "
            f"card says {size}px {classes}",
            fix="re-register the model (inboxsort train) or activate another version",
        )
    out = np.asarray(classifier.model.predict_on_batch(np.zeros((1, size, size, 3), np.float32)))
    expected = (1, 1 if len(classes) == 2 else len(classes))
    if out.shape != expected or not np.isfinite(out).all():
        return Check(
            "model",
            False,
            f"{where}: a batch of zeros gave shape {out.shape} (expected {expected})"
            + ("" if np.isfinite(out).all() else " with non-finite values"),
            fix="retrain the model or activate another version",
        )
    ms = (time.monotonic() - started) * 1000
    runtime, why = store.serving(version, config.serving.runtime)
    detail = (
        f"{where}: {size}px, classes {', '.join(classes)}; serves with {runtime}; "
        f"loaded and predicted in {ms:.0f} ms"
    )
    if runtime == "keras" and config.serving.runtime != "keras":
        # It works, but loads TensorFlow into the daemon and runs slower than LiteRT would.
        fix = f"inboxsort models export {version}"
        return Check("model", False, f"{detail} ({why})", fix=fix, warning=True)
    return Check("model", True, detail)


def startup_checks(config: Config, *, inotify_limit_path: Path = INOTIFY_LIMIT_PATH) -> list[Check]:
    """What the daemon checks before it starts: folders, filesystems, inotify."""
    return [
        check_folders(config),
        check_same_filesystem(config),
        check_inotify(config, limit_path=inotify_limit_path),
    ]


def doctor_checks(
    config: Config,
    *,
    inotify_limit_path: Path = INOTIFY_LIMIT_PATH,
    cpuinfo_path: Path = CPUINFO_PATH,
) -> list[Check]:
    """Every check, in the order `inboxsort doctor` prints them."""
    cpu = check_cpu(cpuinfo_path=cpuinfo_path)
    checks = [
        check_config(config),
        *startup_checks(config, inotify_limit_path=inotify_limit_path),
        cpu,
        check_database(config),
        check_records(config),
    ]
    if cpu.status == "FAIL":
        # Importing TensorFlow on such a CPU kills the process (SIGILL) before any report.
        checks.append(Check("model", False, "not loaded: TensorFlow cannot run on this CPU"))
    else:
        checks.append(check_model(config))
    return checks
