"""inboxsort installed in the container as README's "Running it as a service" says, and what the
tests ask of it: systemctl, the journal, dropped images, the SQLite rows and the files on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.systemd.machine import WHEELHOUSE_IN_CONTAINER, Machine

UNIT = "inboxsort"
STATE = "/var/lib/inboxsort"
CONFIG = "/etc/inboxsort/config.toml"
VENV_BIN = "/opt/inboxsort/venv/bin"
SOURCE = "/usr/local/src/inboxsort"
INSTALL_SECONDS = 900
FILED_SECONDS = 120
FOLDERS = ("inbox", "library", "failed", "duplicates")
T = TypeVar("T")

# What differs from a user's install, and why (README, "Tested under a real systemd"):
# - no network in the container, so pip installs from a wheelhouse of the same releases;
# - minbase has no sudo: runuser does what `sudo -u` does;
# - `enable` and then `start --no-block`, so the test sees the unit while it is activating.
README_SUBSTITUTIONS = (
    (
        "pip install /path/to/inboxsort",
        f"pip install --no-index --find-links {WHEELHOUSE_IN_CONTAINER} {SOURCE}",
    ),
    ("sudo -u inboxsort ", "runuser -u inboxsort -- "),
    ("systemd/inboxsort.service", f"{SOURCE}/systemd/inboxsort.service"),
    ("systemctl enable --now inboxsort", "systemctl enable inboxsort"),
)


def readme_install_script(readme: Path) -> str:
    """README's service steps 1-4, as a script for the container (see README_SUBSTITUTIONS)."""
    text = readme.read_text()
    m = re.search(r"Step by step, as root:\s*```sh\n(.*?)```", text, re.S)
    if m is None:
        raise AssertionError("README.md has no 'Step by step, as root:' sh block to install from")
    steps = m.group(1).split("# 5.")[0]
    for old, new in README_SUBSTITUTIONS:
        if old not in steps:
            raise AssertionError(
                f"README's service steps no longer contain {old!r}: update tests/systemd/service.py"
            )
        steps = steps.replace(old, new)
    return "set -eux\n" + steps


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Row:
    """One `images` row, the fields the tests look at."""

    original_name: str
    status: str
    path: str | None
    label: str | None
    model_version: int | None


class Service:
    """The installed service inside a booted Machine."""

    def __init__(self, machine: Machine, log: Callable[[str], None]) -> None:
        self.machine = machine
        self.log = log
        self.dropped: dict[str, Path] = {}  # name -> the source file it is a copy of
        self._uid = self._gid = -1

    # -- install -------------------------------------------------------------------------

    def install(self, repo: Path) -> None:
        """Copy the repo's files to SOURCE and follow README's steps 1-4 inside the container."""
        files = (
            subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=repo,
                capture_output=True,
                check=True,
                timeout=60,
            )
            .stdout.decode()
            .split("\0")
        )
        target = self.machine.root / SOURCE.lstrip("/")
        for name in filter(None, files):
            if (repo / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, target / name)
        script = self.machine.root / "root/install-inboxsort.sh"
        script.write_text(readme_install_script(repo / "README.md"))
        started = time.monotonic()
        done = self.machine.run("bash", "/root/install-inboxsort.sh", timeout=INSTALL_SECONDS)
        self.log(f"installed as README says in {time.monotonic() - started:.0f} s")
        if "FAIL" in done.stdout:
            raise AssertionError(f"`inboxsort doctor` after the install:\n{done.stdout}")
        for line in (self.machine.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "inboxsort":
                self._uid, self._gid = int(fields[2]), int(fields[3])
        assert self._uid > 0, "README's useradd made no inboxsort user"

    @property
    def uid(self) -> int:
        """The service user's uid in the container."""
        return self._uid

    @property
    def gid(self) -> int:
        """The service user's gid in the container."""
        return self._gid

    # -- systemd -------------------------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """`systemctl ARGS` in the container; its stdout."""
        return self.machine.run("systemctl", *args, check=check, timeout=timeout).stdout.strip()

    def show(self, *props: str) -> dict[str, str]:
        """`systemctl show inboxsort -p ...` as a dict."""
        argv = ["show", UNIT, *(f"--property={p}" for p in props)]
        out = self.systemctl(*argv)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self) -> str:
        """The journal's current position, for `journal(after=...)`."""
        out = self.machine.run("journalctl", "-b", "-n", "0", "--show-cursor").stdout
        m = re.search(r"-- cursor: (\S+)", out)
        assert m, f"journalctl printed no cursor: {out!r}"
        return m.group(1)

    def journal(self, *, after: str | None = None, unit_only: bool = True) -> str:
        """This boot's journal (of the unit, by default), from after a cursor if given."""
        argv = ["journalctl", "-b", "--no-pager", "-o", "short-precise"]
        argv += ["-u", UNIT] if unit_only else []
        argv += [f"--after-cursor={after}"] if after else []
        return self.machine.run(*argv).stdout

    def cli(self, *args: str, timeout: float = 120) -> str:
        """`inboxsort --config CONFIG ARGS` as the service user; its stdout (must exit 0)."""
        env = {"HOME": STATE, "TF_CPP_MIN_LOG_LEVEL": "2"}
        argv = ["runuser", "-u", "inboxsort", "--", f"{VENV_BIN}/inboxsort", "--config", CONFIG]
        return self.machine.run(*argv, *args, timeout=timeout, env=env).stdout

    def wait_for(self, what: str, ok: Callable[[], T], *, timeout: float) -> T:
        """Poll `ok` until it returns something true; that value (AssertionError at `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            value = ok()
            if value:
                return value
            if time.monotonic() > deadline:
                unit = self.show("ActiveState", "SubState", "NRestarts")
                tail = "\n".join(self.journal().splitlines()[-25:])
                raise AssertionError(f"{what}: not within {timeout:.0f} s; {unit}\n{tail}")
            time.sleep(0.3)

    def wait_active(self, *, timeout: float = 180) -> dict[str, str]:
        """Wait for ActiveState=active (the daemon sent READY=1); the unit's properties."""
        props = ("ActiveState", "SubState", "MainPID", "NRestarts")

        def active() -> dict[str, str] | None:
            state = self.show(*props)
            return state if state["ActiveState"] == "active" else None

        return self.wait_for("the unit to be active", active, timeout=timeout)

    # -- files and rows ------------------------------------------------------------------

    def host_path(self, inside: str) -> Path:
        """Where a path of the container lies on the host."""
        return self.machine.root / inside.lstrip("/")

    def drop(self, sources: Sequence[Path]) -> list[str]:
        """Drop copies of `sources` into the inbox as the service user would find a user's file.

        Each is written under a hidden name beside the inbox, owned by the service user, and
        renamed into the inbox: the daemon sees whole files only, by inotify's moved-to event.
        """
        staging = self.host_path(f"{STATE}/.staging")
        staging.mkdir(exist_ok=True)
        names = []
        for source in sources:
            assert source.name not in self.dropped, f"{source.name} was dropped before"
            tmp = staging / source.name
            shutil.copy2(source, tmp)
            os.chown(tmp, self.uid, self.gid)
            tmp.rename(self.host_path(f"{STATE}/inbox/{source.name}"))
            self.dropped[source.name] = source
            names.append(source.name)
        return names

    def rows(self) -> list[Row]:
        """Every `images` row, read from the host (the daemon may be writing: WAL allows it)."""
        db = self.host_path(f"{STATE}/inboxsort.db")
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            cur = con.execute(
                "SELECT original_name, status, path, label, model_version FROM images"
            )
            return [Row(*r) for r in cur.fetchall()]

    def daemon_state(self) -> tuple[str, int | None, int | None]:
        """The heartbeat row: (state, pid, model_version)."""
        db = self.host_path(f"{STATE}/inboxsort.db")
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            row = con.execute("SELECT state, pid, model_version FROM daemon_state").fetchone()
        assert row is not None, "no daemon_state row"
        return row[0], row[1], row[2]

    def files(self) -> dict[str, list[str]]:
        """Every non-hidden file under inbox, library, failed and duplicates: name -> paths."""
        found: dict[str, list[str]] = {}
        for folder in FOLDERS:
            top = self.host_path(f"{STATE}/{folder}")
            for path in top.rglob("*") if top.is_dir() else ():
                if path.is_file() and not path.name.startswith("."):
                    inside = "/" + str(path.relative_to(self.machine.root))
                    found.setdefault(path.name, []).append(inside)
        return found

    def filed(self, names: Sequence[str]) -> list[Row]:
        """Rows of `names` once every one of them is filed (else an empty list)."""
        rows = [r for r in self.rows() if r.original_name in set(names)]
        done = [r for r in rows if r.status == "filed"]
        return done if len({r.original_name for r in done}) == len(set(names)) else []

    def wait_filed(self, names: Sequence[str], *, timeout: float = FILED_SECONDS) -> list[Row]:
        """Wait until every one of `names` has a filed row; those rows."""
        return self.wait_for(
            f"{len(names)} dropped image(s) filed", lambda: self.filed(names), timeout=timeout
        )

    def assert_exact_accounting(self) -> None:
        """Every image dropped so far: one row, filed, and one file, in the library, unchanged."""
        rows = self.rows()
        files = self.files()
        problems = []
        by_name: dict[str, list[Row]] = {}
        for row in rows:
            by_name.setdefault(row.original_name, []).append(row)
        for name in sorted(set(by_name) - set(self.dropped)):
            problems.append(f"a row for {name}, which was never dropped")
        for name in sorted(set(files) - set(self.dropped)):
            problems.append(f"a file {files[name]} that was never dropped")
        for name, source in sorted(self.dropped.items()):
            named = by_name.get(name, [])
            paths = files.get(name, [])
            if len(named) != 1 or len(paths) != 1:
                problems.append(f"{name}: {len(named)} row(s) {named}, file(s) {paths}")
                continue
            row, path = named[0], paths[0]
            if row.status != "filed" or row.path != path:
                problems.append(f"{name}: row {row} but the file is at {path}")
            elif path != f"{STATE}/library/{row.label}/{name}":
                problems.append(f"{name}: filed at {path}, not under library/{row.label}/")
            elif sha256(self.host_path(path)) != sha256(source):
                problems.append(f"{name}: {path} differs from what was dropped")
        assert not problems, "accounting is not exact:\n" + "\n".join(problems)
