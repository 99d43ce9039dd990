"""`inboxsort backfill` as a subprocess: Ctrl-C and kill -9 mid-run, then a rerun that finishes.

Each run starts its own local Ray, as a user's does. A driver killed with SIGKILL leaves some
of Ray's helper processes behind (its dashboard and runtime-env agents); they run in this
test's own working folder and are killed by it.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backfill.conftest import copy_images, kill_processes_in, site_config
from tests.helpers.daemonkit import wait_for

pytestmark = pytest.mark.slow

IMAGES_PER_CLASS = 150


def count(database: Path) -> int:
    """Rows in the images table (0 before the database exists)."""
    try:
        with sqlite3.connect(database) as con:
            return int(con.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def start(config: Path, archive: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`inboxsort backfill ARCHIVE` in the background, its output piped (not a terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "inboxsort", "--config", str(config), "backfill", str(archive)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_ctrl_c_then_kill_9_then_a_rerun_accounts_for_every_image(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Each interrupted run keeps what it committed; the last run does exactly the rest."""
    archive = tmp_path / "archive"
    files = copy_images(archive, cats=IMAGES_PER_CLASS, dogs=IMAGES_PER_CLASS)
    config_file, config = site_config(tmp_path)
    database = Path(config.database.url.removeprefix("sqlite:///"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(cli_env)

    try:
        # Ctrl-C: the batch in hand is committed, the summary says so, exit 130.
        proc = start(config_file, archive, env, cwd)
        wait_for(lambda: count(database) >= 32, "a first committed batch", timeout=180)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, out
        assert "backfill interrupted" in out and "run it again" in out
        after_ctrl_c = count(database)
        assert 32 <= after_ctrl_c < len(files)

        # kill -9 of the driver: whatever it committed stays, nothing half-written.
        proc = start(config_file, archive, env, cwd)
        wait_for(lambda: count(database) >= after_ctrl_c + 32, "another batch", timeout=180)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        kill_processes_in(cwd)
    after_kill = count(database)
    assert after_ctrl_c < after_kill < len(files)

    done = subprocess.run(
        [sys.executable, "-m", "inboxsort", "--config", str(config_file), "backfill", str(archive)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    kill_processes_in(cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(r"(\d+) classified .* (\d+) skipped", done.stdout)
    assert summary, done.stdout
    assert int(summary[1]) == len(files) - after_kill
    assert int(summary[2]) == after_kill
    with sqlite3.connect(database) as con:
        paths = [r[0] for r in con.execute("SELECT path FROM images")]
    assert sorted(paths) == sorted(str(p) for p in files)  # each image once, none missing
