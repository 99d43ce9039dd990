"""A database deleted or emptied beside a library full of filed images is noticed and named.

Real folders, real SQLite files: a deleted file is created anew (empty) by the daemon's start,
a zero-length one is migrated into an empty one; either way the library's files have no rows.
`inboxsort doctor` shows a WARN, and the daemon's start logs a WARNING with the count and the
README section that says how to rebuild the records.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inboxsort.config import Config, load_config
from inboxsort.db import open_database
from inboxsort.service.checks import RECORDS_SECTION, check_database, check_records
from tests.helpers.filedrows import file_image, write_file

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def config(make_config) -> Config:
    config = load_config(make_config())
    for name in ("inbox", "library", "failed", "models", "duplicates"):
        getattr(config.paths, name).mkdir(parents=True, exist_ok=True)
    return config


def database_file(config: Config) -> Path:
    return Path(config.database.url.removeprefix("sqlite:///"))


def fill_library(config: Config, count: int) -> None:
    for i in range(count):
        write_file(config.paths.library / ("cats" if i % 2 else "dogs") / f"{i}.jpg")
    write_file(config.paths.library / "cats" / ".hidden.jpg")  # ignored: not counted


def assert_names_the_loss(check, count: int) -> None:
    assert check.status == "WARN"
    assert f"the database has no image rows but the library holds {count} files" in check.detail
    assert RECORDS_SECTION in check.fix


def test_the_readme_has_the_section_the_warning_names() -> None:
    assert f"\n### {RECORDS_SECTION}\n" in README.read_text(encoding="utf-8")


def test_a_deleted_database_beside_a_full_library_warns(config: Config) -> None:
    fill_library(config, 3)
    assert not database_file(config).exists()
    assert check_database(config).status == "OK"  # doctor creates it, as the daemon would
    assert_names_the_loss(check_records(config), 3)


def test_a_zero_length_database_beside_a_full_library_warns(config: Config) -> None:
    fill_library(config, 2)
    database_file(config).write_bytes(b"")
    assert_names_the_loss(check_records(config), 2)  # read-only, as doctor opens it
    with open_database(config.database.url) as db:  # as the daemon opens it: migrated, empty
        assert_names_the_loss(check_records(config, db), 2)


def test_records_beside_the_library_are_fine(config: Config) -> None:
    with open_database(config.database.url) as db:
        file_image(db, config.paths.library / "cats" / "a.jpg", "cats")
        check = check_records(config, db)
    assert (check.status, check.detail) == ("OK", "1 images recorded")


def test_an_empty_library_with_an_empty_database_is_a_fresh_start(config: Config) -> None:
    with open_database(config.database.url) as db:
        check = check_records(config, db)
    assert check.status == "OK"


def test_the_daemon_start_logs_a_warning_with_the_count(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """prepare() (the start of `inboxsort run`) with the shipped model: the real start-up path."""
    from inboxsort.service.run import prepare

    fill_library(config, 4)
    database_file(config).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="inboxsort.service.run"):
        db, _store, _classifier = prepare(config)
    db.close()
    [warning] = [r for r in caplog.records if "no image rows" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "the library holds 4 files" in message and RECORDS_SECTION in message
