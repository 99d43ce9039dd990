"""Shared test setup: offline Keras weights, a thread-leak guard, tiny data and a tiny model.

Everything here is real: files under tmp folders, a real Keras model trained once per session,
real SQLite files, real subprocesses. Helpers that build image files live in `imagegen.py`
beside this file (importable as `from imagegen import ...` from any test folder, because pytest
puts this conftest's folder on sys.path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inboxsort.config import PathsConfig
from inboxsort.db import Database, open_database
from inboxsort.intake.filing import REVIEW_FOLDER
from tests.helpers import pgdb
from tests.helpers.filedrows import CLASSES
from tests.helpers.imagegen import copy_first_images

# Before anything imports TensorFlow: read the ImageNet weights from the shared offline cache
# ($KERAS_HOME/models) and keep TensorFlow's C++ logging down.
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
SHARED_KERAS_HOME = SHARED_DIR / "keras"
if SHARED_KERAS_HOME.is_dir():
    os.environ["KERAS_HOME"] = str(SHARED_KERAS_HOME)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

DATASET_ROOT = SHARED_DIR / "datasets" / "cats_and_dogs_filtered"
TINY_PER_CLASS = 20
TINY_IMAGE_SIZE = 160
THREAD_GRACE_SECONDS = 5.0
CLI_TIMEOUT_SECONDS = 280

# Environment variables of the calling shell that would change what a CLI subprocess does.
_CLI_ENV_DROP = ("INBOXSORT_CONFIG", "JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC")


# --------------------------------------------------------------------------------------------
# Thread-leak guard
# --------------------------------------------------------------------------------------------
#
# Checked empirically (TF 2.21 / Keras 3): importing TensorFlow, training with tf.data, saving
# and loading .keras files start no *Python* threads (TF's own pools are C++ threads that
# threading.enumerate() never lists), and a ThreadPoolExecutor used as a context manager has
# joined its workers when the `with` block ends. So no thread name is exempt: any Python thread a
# test starts must be gone within THREAD_GRACE_SECONDS after the test and its fixtures finish.


def _new_live_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    current = threading.current_thread()
    return [
        t for t in threading.enumerate() if t not in before and t is not current and t.is_alive()
    ]


@pytest.fixture(autouse=True)
def no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves Python threads running (daemon or not) after it has finished."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leaked = _new_live_threads(before)
    while leaked and time.monotonic() < deadline:
        # Threads may start others while they wind down: join, then look again.
        leaked[0].join(timeout=max(0.0, min(0.25, deadline - time.monotonic())))
        leaked = _new_live_threads(before)
    if leaked:
        names = ", ".join(
            f"{t.name!r} ({'daemon' if t.daemon else 'non-daemon'})"
            for t in sorted(leaked, key=lambda t: t.name)
        )
        pytest.fail(
            f"{request.node.nodeid} leaked {len(leaked)} thread(s) still running "
            f"{THREAD_GRACE_SECONDS:.0f} s after it ended: {names}",
            pytrace=False,
        )


# --------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite file under tmp_path, migrated."""
    database = open_database(f"sqlite:///{tmp_path / 'inboxsort.db'}")
    yield database
    database.close()


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A database of its own on the PostgreSQL test server for this test module, dropped after."""
    url = pgdb.create_database()
    yield url
    pgdb.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once for each backend: a SQLite file under tmp_path, or
    the module's PostgreSQL database, its tables emptied after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inboxsort.db'}"
        return
    url: str = request.getfixturevalue("pg_module_url")
    yield url
    pgdb.empty_tables(url)


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A new, empty database on the PostgreSQL test server (no schema), dropped after the test."""
    url = pgdb.create_database()
    yield url
    pgdb.drop_database(url)


# --------------------------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dataset_root() -> Path:
    """The shared, read-only cats_and_dogs_filtered folder (train/ and validation/)."""
    missing = [
        DATASET_ROOT / split / name
        for split in ("train", "validation")
        for name in ("cats", "dogs")
        if not (DATASET_ROOT / split / name).is_dir()
    ]
    if missing:
        pytest.fail(
            f"the test dataset is required but missing: {', '.join(map(str, missing))} "
            f"(expected cats_and_dogs_filtered under {DATASET_ROOT.parent})",
            pytrace=False,
        )
    return DATASET_ROOT


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, dataset_root: Path) -> Path:
    """A flat dataset: cats/ and dogs/ with 20 training images each. Shared: do not modify."""
    root = tmp_path_factory.mktemp("tiny_data")
    for name in ("cats", "dogs"):
        copy_first_images(dataset_root / "train" / name, root / name, TINY_PER_CLASS)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A model folder (model.keras, model.tflite, card.json) trained once per session at 160 px.

    1 frozen-base epoch + 1 fine-tune epoch on tiny_data: about 20-30 s on 2 cores, then its
    LiteRT flatbuffer, converted and checked as `inboxsort train` does (a few seconds), so it
    serves with LiteRT by default as users' models do. Classes are ("cats", "dogs"). Shared:
    copy the folder before changing anything in it.
    """
    from inboxsort.config import TrainConfig
    from inboxsort.model.artifact import write_version_folder
    from inboxsort.trainer.train import train

    options = TrainConfig(image_size=TINY_IMAGE_SIZE, epochs=1, fine_tune_epochs=1)
    result = train(tiny_data, options, verbose=0)
    assert result.litert is not None, f"LiteRT conversion failed: {result.litert_error}"
    folder = tmp_path_factory.mktemp("tiny_model") / "model"
    return write_version_folder(result.model, result.card, folder, litert=result.litert)


@pytest.fixture(scope="session")
def tiny_card(tiny_model: Path) -> dict:
    """The card.json of tiny_model."""
    return json.loads((tiny_model / "card.json").read_text())


# --------------------------------------------------------------------------------------------
# Configuration files
# --------------------------------------------------------------------------------------------

ConfigWriter = Callable[..., Path]


def write_config(
    folder: Path,
    extra: str = "",
    *,
    name: str = "config.toml",
    database_url: str = "sqlite:///db.sqlite3",
    **paths: str | Path,
) -> Path:
    """Write `folder/name`: every path under `folder` (relative, so it resolves there).

    Keyword arguments override [paths] entries (inbox, library, failed, models, duplicates);
    `extra` is appended verbatim (other sections, e.g. "[watch]\\npolling = true\\n").
    """
    values: dict[str, str] = {
        "inbox": "inbox",
        "library": "library",
        "failed": "failed",
        "models": "models",
        "duplicates": "duplicates",
    }
    unknown = set(paths) - set(values)
    if unknown:
        raise TypeError(f"write_config: unknown [paths] keys {sorted(unknown)}")
    values.update({k: str(v) for k, v in paths.items()})
    # JSON string syntax is valid TOML basic-string syntax for any path.
    lines = ["[paths]", *(f"{k} = {json.dumps(v)}" for k, v in values.items()), ""]
    lines += ["[database]", f"url = {json.dumps(database_url)}", ""]
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigWriter:
    """Factory: make_config(extra="", *, name=..., database_url=..., **paths) -> config path.

    The file is written in tmp_path with inbox, library, failed, models and duplicates under
    tmp_path and the database at tmp_path/db.sqlite3 (folders are not created).
    """

    def make(extra: str = "", **kwargs: str | Path) -> Path:
        return write_config(tmp_path, extra, **kwargs)

    return make


@pytest.fixture(scope="session")
def config_writer() -> ConfigWriter:
    """write_config(folder, extra="", **kwargs) for fixtures wider than a function."""
    return write_config


# --------------------------------------------------------------------------------------------
# The command line as a subprocess
# --------------------------------------------------------------------------------------------

CliRunner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment for `python -m inboxsort` subprocesses."""
    env = {k: v for k, v in os.environ.items() if k not in _CLI_ENV_DROP}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if SHARED_KERAS_HOME.is_dir():
        env["KERAS_HOME"] = str(SHARED_KERAS_HOME)
    return env


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> CliRunner:
    """run_cli(*args, cwd=None, env=None, timeout=...) -> CompletedProcess (text, captured).

    Runs `sys.executable -m inboxsort *args`; the default cwd is an empty folder, so no stray
    ./config.toml is picked up; `env` adds to (or, with None values, removes from) cli_env.
    """
    default_cwd = tmp_path_factory.mktemp("cli_cwd")

    def run(
        *args: str | Path,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = CLI_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(cli_env)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        return subprocess.run(
            [sys.executable, "-m", "inboxsort", *map(str, args)],
            cwd=cwd or default_cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    """The daemon's folders under tmp_path, each class folder and _review included."""
    paths = PathsConfig(
        inbox=tmp_path / "inbox",
        library=tmp_path / "library",
        failed=tmp_path / "failed",
        models=tmp_path / "models",
        duplicates=tmp_path / "duplicates",
    )
    for folder in (paths.inbox, paths.failed, paths.duplicates):
        folder.mkdir(parents=True)
    for name in (*CLASSES, REVIEW_FOLDER):
        (paths.library / name).mkdir(parents=True)
    return paths


@pytest.fixture
def library(paths: PathsConfig) -> Path:
    """The library folder of `paths`."""
    return paths.library


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path (/dev/shm), removed afterwards."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("/dev/shm is not available")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as tmp_path")
    folder = Path(tempfile.mkdtemp(prefix="inboxsort-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
