"""What the backfill tests share: one local Ray per test module, archives of real images."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxsort.config import Config, load_config
from tests.conftest import DATASET_ROOT, write_config


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard, a small object store) for every test of a module.

    Starting Ray takes about 10 s here: one per module, not per test. `backfill` finds it
    running and leaves it so.
    """
    import ray

    ray.init(
        address="local",  # never a cluster someone started on this machine
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def copy_images(dest: Path, *, cats: int, dogs: int, split: str = "validation") -> list[Path]:
    """The first `cats` and `dogs` images of the shared dataset, under dest/cats and dest/dogs."""
    copied = []
    for name, count in (("cats", cats), ("dogs", dogs)):
        source = DATASET_ROOT / split / name
        (dest / name).mkdir(parents=True, exist_ok=True)
        for jpg in sorted(source.iterdir())[:count]:
            copied.append(Path(shutil.copy2(jpg, dest / name / jpg.name)))
    return copied


def site_config(folder: Path) -> tuple[Path, Config]:
    """A config file under `folder` (SQLite, the shipped model) and the Config it gives."""
    path = write_config(folder)
    return path, load_config(path)


def kill_processes_in(folder: Path) -> list[int]:
    """SIGKILL the processes whose working folder is `folder`: a killed run's Ray, left behind.

    Ray's helpers rewrite their command line and environment (their process title), but keep
    the working folder of the driver that started them; the tests start each run in a folder
    of their own.
    """
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if cwd == folder.resolve():
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed
