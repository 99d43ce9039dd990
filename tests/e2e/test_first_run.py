"""A new user's first run: `inboxsort run` in a fresh project, one image and one folder dropped
in. Nothing it prints may look like an error, every image gets its line, and the emptied folder
goes (issue 15)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.daemonkit import WAIT_SECONDS, DaemonProcess

REPO = Path(__file__).resolve().parents[2]
# What a user reads as trouble: TensorFlow's and absl's native lines, a traceback, an ERROR,
# the tf.function retracing warning, APScheduler's narration, a raw dataclass repr.
ALARMING = re.compile(
    r"[EWI]0000 |CUDA|cuInit|cuda|absl|oneDNN|XNNPACK|Traceback|retracing|tentatively"
    r"|\bERROR\b|\bCRITICAL\b|\bWARNING\b|Report\(",
)


def command() -> list[str]:
    """The installed `inboxsort` command, as `make run` runs it (else python -m inboxsort)."""
    script = Path(sys.executable).with_name("inboxsort")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "inboxsort"]


@pytest.mark.parametrize("runtime", ["auto", "keras"])
def test_first_run_prints_nothing_that_looks_like_an_error(
    tmp_path: Path, cli_env: dict[str, str], dataset_root: Path, runtime: str
):
    project = tmp_path / "project"
    project.mkdir()
    config = (REPO / "config.toml").read_text()  # the shipped config, as `make run` uses it
    config = config.replace('runtime = "auto"', f'runtime = "{runtime}"', 1)
    (project / "config.toml").write_text(config)
    # The installed command must be quiet by itself: no variable the Makefile or tests set.
    env = {k: v for k, v in cli_env.items() if not k.startswith(("TF_CPP", "ABSL", "GLOG"))}
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*command(), "run"],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    daemon = DaemonProcess(process, log_path)
    try:
        daemon.wait_ready(timeout=180)
        var = project / "var"
        validation = dataset_root / "validation"
        shutil.copyfile(validation / "cats" / "cat.2000.jpg", var / "inbox" / "cat.2000.jpg")
        trip = var / "inbox" / "trip" / "day1"
        trip.mkdir(parents=True)
        shutil.copyfile(validation / "dogs" / "dog.2000.jpg", trip / "dog.2000.jpg")
        filed = [
            var / "library" / "cats" / "cat.2000.jpg",
            var / "library" / "dogs" / "dog.2000.jpg",
        ]
        daemon.until(lambda: all(p.is_file() for p in filed), "both images filed", timeout=60)
        # The emptied folders go once still (5 settle times), the inbox itself stays.
        daemon.until(lambda: not (var / "inbox" / "trip").exists(), "trip/ removed", timeout=30)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(WAIT_SECONDS) == 0, daemon.log()
    finally:
        daemon.kill9()

    log = daemon.log()
    assert [line for line in log.splitlines() if ALARMING.search(line)] == [], log
    assert re.search(r"INFO inboxsort\.intake\.filing: cat\.2000\.jpg → cats \([01]\.\d{3}\)", log)
    assert re.search(r"filing: trip/day1/dog\.2000\.jpg → dogs \([01]\.\d{3}\)", log), log
    assert "removed the emptied folder trip/day1" in log and "emptied folder trip\n" in log
    assert (var / "inbox").is_dir()
