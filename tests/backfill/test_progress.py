"""The progress display and the summary, with a clock the test moves."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from inboxsort.backfill.progress import Progress, summary
from inboxsort.backfill.writer import Tally
from inboxsort.cli import main


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_a_bar_with_rate_and_eta() -> None:
    """On a terminal: one line redrawn in place, images/s and the time left."""
    clock, out = Clock(), io.StringIO()
    progress = Progress(400, out=out, tty=True, clock=clock)
    clock.now += 10
    progress.update(100)
    assert out.getvalue() == (
        "\r[#######-----------------------] 100/400 images (25%), 10.0 images/s, "
        "elapsed 0:00:10, ETA 0:00:30\x1b[K"
    )
    clock.now += 0.1  # too soon to redraw
    progress.update(101)
    assert out.getvalue().count("\r") == 1
    clock.now += 29.9
    progress.update(400, final=True)
    assert out.getvalue().endswith(
        "400/400 images (100%), 10.0 images/s, elapsed 0:00:40, ETA 0:00:00\x1b[K\n"
    )


def test_elsewhere_a_plain_line_every_period() -> None:
    """Not a terminal (a log, a pipe): a whole line now and then, no control characters."""
    clock, out = Clock(), io.StringIO()
    progress = Progress(1000, out=out, tty=False, every=10.0, clock=clock)
    for _ in range(30):
        clock.now += 1
        progress.update(int((clock.now - 100) * 20))
    lines = out.getvalue().splitlines()
    assert lines == [
        "backfill: 20/1000 images (2%), 20.0 images/s, elapsed 0:00:01, ETA 0:00:49",
        "backfill: 220/1000 images (22%), 20.0 images/s, elapsed 0:00:11, ETA 0:00:39",
        "backfill: 420/1000 images (42%), 20.0 images/s, elapsed 0:00:21, ETA 0:00:29",
    ]


def test_the_summary_counts_labels_skips_and_reasons() -> None:
    """Classified per label, skipped, moved and failed with each reason's count."""
    tally = Tally(
        labels=Counter(cats=3, dogs=5),
        failures=Counter({"not an image: text": 2, "empty file (0 bytes)": 1}),
        skipped=7,
        moved=1,
    )
    assert summary(tally, elapsed=4.0) == (
        "backfill done in 0:00:04: 8 classified (2.0 images/s), 7 skipped (already on record), "
        "1 found moved, 3 failed\n"
        "  cats: 3\n  dogs: 5\n"
        "  failed: 2 × not an image: text\n  failed: 1 × empty file (0 bytes)\n"
    )
    assert summary(tally, elapsed=4.0, interrupted=True).splitlines()[-1] == (
        "  run it again to go on where it stopped"
    )


def test_a_path_that_is_not_a_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing folder: one line naming it, exit 2, before Ray or the model is touched."""
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "db.sqlite3"}"\n')
    code = main(["--config", str(config), "backfill", str(tmp_path / "nowhere")])
    assert code == 2
    assert (
        capsys.readouterr().err == f"inboxsort: backfill: {tmp_path / 'nowhere'} is not a folder\n"
    )
