"""Fixtures of the end-to-end tests: a site with the tiny model active, and daemon subprocesses.

Everything is real: watchdog observers, files under tmp_path, a SQLite file, the tiny Keras model
(copied in as version 1: the session's folder is shared). Helpers live in daemonkit.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemonkit import DaemonProcess, Site, make_site, spawn_daemon


@pytest.fixture
def new_site(tmp_path: Path, tiny_model: Path, config_writer) -> Callable[..., Site]:
    """new_site(name="site", database_url=None, **{section: {key: value}}) -> a Site with
    tiny_model active as v1 (database_url: another database than the site's SQLite file)."""

    def make(
        name: str = "site", database_url: str | None = None, **overrides: dict[str, Any]
    ) -> Site:
        return make_site(
            tmp_path / name, tiny_model, config_writer, database_url=database_url, **overrides
        )

    return make


@pytest.fixture
def spawn(cli_env: dict[str, str]) -> Iterator[Callable[..., DaemonProcess]]:
    """spawn(site, *run_args) -> an `inboxsort run` subprocess; SIGKILLed by pid at the end."""
    started: list[DaemonProcess] = []

    def start(
        site: Site, *args: str, log_name: str = "daemon", prefix: Sequence[str] = ()
    ) -> DaemonProcess:
        process = spawn_daemon(site, cli_env, *args, log_name=log_name, prefix=prefix)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.alive():
            process.signal(signal.SIGKILL)
        process.process.wait(30)


@pytest.fixture(scope="session")
def validation_jpegs(dataset_root: Path) -> dict[str, list[Path]]:
    """The shared dataset's validation JPEGs by class, sorted by name (read-only)."""
    return {
        name: sorted((dataset_root / "validation" / name).glob("*.jpg"))
        for name in ("cats", "dogs")
    }
