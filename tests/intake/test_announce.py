"""One log line per image, saying where it went; a flood is summarised, nothing is dropped."""

from __future__ import annotations

import logging

import pytest

from inboxsort.config import FilingConfig
from inboxsort.db import Database
from inboxsort.intake.announce import Announcer
from inboxsort.intake.filing import Filer
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Decoded
from tests.helpers.filedrows import classified

FILING_LOG = "inboxsort.intake.filing"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == FILING_LOG]


def test_each_image_gets_a_line_saying_where_it_went_and_failures_say_why(
    db: Database, paths, caplog
):
    sub = paths.inbox / "trip"
    sub.mkdir()
    cat = classified(sub, "cat.2000.jpg")
    dog = classified(paths.inbox, "dog.jpg", label="dogs")
    taken = classified(paths.inbox, "taken.jpg")
    (paths.library / "cats" / "taken.jpg").write_bytes(b"another image, same name")
    broken = classified(paths.inbox, "broken.jpg")
    broken = Decoded(broken.claim, broken.sha256, None, "cannot decode: truncated")
    caplog.set_level(logging.INFO, logger=FILING_LOG)

    Filer(paths, FilingConfig(), Ledger(db)).file_batch([cat, dog, taken, broken])

    assert sorted(lines(caplog)) == sorted(
        [
            (logging.INFO, "trip/cat.2000.jpg → cats (0.900)"),
            (logging.INFO, "dog.jpg → dogs (0.900)"),
            # Renamed to keep the other file: the new name is what the user looks for.
            (logging.INFO, "taken.jpg → cats/taken (1).jpg (0.900)"),
            (logging.WARNING, "broken.jpg → failed: cannot decode: truncated"),
        ]
    )


def test_a_copy_says_which_image_it_copies(db: Database, paths, caplog):
    filer = Filer(paths, FilingConfig(duplicates="move"), Ledger(db))
    same = b"the same photo" * 100
    filer.file_batch([classified(paths.inbox, "first.jpg", data=same)])
    caplog.set_level(logging.INFO, logger=FILING_LOG)
    caplog.clear()
    filer.file_batch([classified(paths.inbox, "again.jpg", data=same)])

    assert lines(caplog) == [
        (logging.INFO, "again.jpg → duplicates (0.900), same content as image 1")
    ]


def test_a_file_that_vanished_says_so(db: Database, paths, caplog):
    item = classified(paths.inbox, "gone.jpg")
    item.claim.path.unlink()
    caplog.set_level(logging.INFO, logger=FILING_LOG)
    Filer(paths, FilingConfig(), Ledger(db)).file_batch([item])

    [(level, text)] = lines(caplog)
    assert level == logging.WARNING
    assert text == "gone.jpg: not filed: vanished from the inbox before it was filed"


def test_a_flood_gets_the_first_lines_of_each_second_and_a_summary_of_the_rest(caplog):
    clock = Clock()
    announcer = Announcer(per_second=3, clock=clock)
    caplog.set_level(logging.INFO, logger=FILING_LOG)
    for n in range(7):
        announcer.image(logging.INFO, "filed", "img%d.jpg → cats", n)
    announcer.image(logging.WARNING, "failed", "bad.jpg → failed: not an image")
    announcer.flush()  # the second has not ended: the summary waits for it
    assert [t for _, t in lines(caplog)] == [f"img{n}.jpg → cats" for n in range(3)]

    clock.now += 1.0
    announcer.flush()
    summary = lines(caplog)[3]
    # A failure among the held lines makes the summary a warning, so it is not missed.
    assert summary[0] == logging.WARNING
    assert summary[1].startswith("… and 5 more in 1 s: 1 failed, 4 filed")

    announcer.image(logging.INFO, "filed", "next.jpg → dogs")  # a new second: its own line
    announcer.flush(force=True)  # nothing held: no empty summary
    assert [t for _, t in lines(caplog)][4:] == ["next.jpg → dogs"]


def test_the_last_summary_of_a_flood_comes_when_the_workers_stop(caplog):
    announcer = Announcer(per_second=1, clock=Clock())
    caplog.set_level(logging.INFO, logger=FILING_LOG)
    for n in range(3):
        announcer.image(logging.INFO, "filed", "img%d.jpg → cats", n)
    announcer.flush(force=True)
    assert [t for _, t in lines(caplog)][1].startswith("… and 2 more in 1 s: 2 filed")
