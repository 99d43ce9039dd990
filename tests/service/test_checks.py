"""Environment checks (service/checks.py) on real folders, real SQLite files and a real model.

The healthy site they start from is tests/helpers/checksite.py, shared with the doctor tests.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from alembic import command

from inboxsort.config import Config, load_config
from inboxsort.db import ModelVersion, head_revision, open_database
from inboxsort.db.session import _alembic_config
from inboxsort.service.checks import (
    Check,
    check_cpu,
    check_database,
    check_folders,
    check_inotify,
    check_model,
    check_same_filesystem,
    doctor_checks,
    failures,
    startup_checks,
)
from tests.helpers.checksite import FOLDER_KEYS, healthy_setup, limit_file, make_unwritable
from tests.helpers.disklimits import refusing_writes


@pytest.fixture
def config(make_config) -> Config:
    return load_config(make_config())


@pytest.fixture
def healthy(tmp_path, tiny_model, config_writer) -> Config:
    return load_config(healthy_setup(tmp_path / "site", tiny_model, config_writer))


def _set_row(config: Config, **values) -> None:
    with open_database(config.database.url) as db, db.begin() as session:
        row = session.get(ModelVersion, 1)
        for key, value in values.items():
            setattr(row, key, value)


# ---------------------------------------------------------------------------------- folders


def test_folders_are_created_and_reported_once(config: Config) -> None:
    first = check_folders(config)
    assert first.ok and first.status == "OK"
    for key in FOLDER_KEYS:
        assert getattr(config.paths, key).is_dir()
        assert f"paths.{key}" in first.detail
    second = check_folders(config)
    assert second.ok and "created" not in second.detail


def test_only_missing_folders_are_reported_as_created(config: Config) -> None:
    config.paths.inbox.mkdir()
    config.paths.library.mkdir()
    check = check_folders(config)
    assert check.ok
    assert "paths.inbox" not in check.detail and "paths.library" not in check.detail
    assert "paths.failed" in check.detail and "paths.duplicates" in check.detail


def test_unwritable_folder_fails_with_its_key_and_a_fix(config: Config) -> None:
    make_unwritable(config.paths.library)
    try:
        check = check_folders(config)
    finally:
        if config.paths.library.is_dir():
            config.paths.library.chmod(0o700)
    assert check.status == "FAIL" and not check.warning
    assert f"paths.library = {config.paths.library} " in check.detail
    assert "not a folder" in check.detail or "not writable" in check.detail
    assert "paths.inbox =" not in check.detail  # only the broken one is named
    assert "install -d" in check.fix


def test_folder_below_a_file_cannot_be_created(make_config, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    config = load_config(make_config(failed="blocker/failed"))
    check = check_folders(config)
    assert not check.ok
    assert "paths.failed" in check.detail and "cannot be created" in check.detail


# ---------------------------------------------------------------------- same filesystem


def test_same_filesystem_ok(config: Config) -> None:
    check_folders(config)
    assert check_same_filesystem(config).ok


def test_library_on_another_filesystem_is_a_warning(make_config, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than tmp_path's")
    other = Path(tempfile.mkdtemp(dir=shm))
    try:
        config = load_config(make_config(library=other / "library"))
        check_folders(config)
        check = check_same_filesystem(config)
    finally:
        shutil.rmtree(other)
    assert check.status == "WARN" and check.warning
    assert "paths.library" in check.detail and "paths.failed" not in check.detail
    assert failures([check]) == []


def test_missing_inbox_cannot_be_compared_and_warns(config: Config) -> None:
    check = check_same_filesystem(config)
    assert check.status == "WARN" and "cannot compare" in check.detail


# ------------------------------------------------------------------------------ inotify


@pytest.fixture
def six_folders(config: Config) -> Config:
    """inbox, inbox/a, inbox/a/b, library, library/cats, library/dogs (plus files, not counted)."""
    (config.paths.inbox / "a" / "b").mkdir(parents=True)
    (config.paths.inbox / "a" / "photo.jpg").write_bytes(b"x")
    for label in ("cats", "dogs"):
        (config.paths.library / label).mkdir(parents=True)
    return config


def test_inotify_limit_of_1_warns_with_the_sysctl_fix(six_folders: Config, tmp_path: Path) -> None:
    check = check_inotify(six_folders, limit_path=limit_file(tmp_path, "1"))
    assert check.status == "WARN" and check.warning
    assert check.detail == "max_user_watches = 1, but inbox and library have 6 folders"
    assert check.fix.startswith("sudo sysctl fs.inotify.max_user_watches=")
    assert "watch.polling = true" in check.fix


@pytest.mark.parametrize(("limit", "ok"), [("11", False), ("12", True), ("192536", True)])
def test_inotify_wants_twice_the_folder_count(six_folders, tmp_path, limit, ok) -> None:
    check = check_inotify(six_folders, limit_path=limit_file(tmp_path, limit))
    assert check.ok is ok
    if ok:
        assert check.detail == f"max_user_watches = {limit} for 6 folders"


def test_inotify_is_not_needed_when_polling(make_config, tmp_path: Path) -> None:
    config = load_config(make_config("[watch]\npolling = true\n"))
    check = check_inotify(config, limit_path=limit_file(tmp_path, "1"))
    assert check.ok and "polling" in check.detail


def test_inotify_limit_missing_or_garbage(config: Config, tmp_path: Path) -> None:
    assert check_inotify(config, limit_path=tmp_path / "absent").ok
    garbage = check_inotify(config, limit_path=limit_file(tmp_path, "lots"))
    assert garbage.status == "WARN" and "cannot read" in garbage.detail


# ---------------------------------------------------------------------------------- cpu


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
    return path


def test_cpu_with_avx_is_ok(tmp_path: Path) -> None:
    check = check_cpu(cpuinfo_path=_cpuinfo(tmp_path, "fpu sse2 avx avx2"), machine="x86_64")
    assert check.ok and check.detail == "x86_64 with avx, avx2"


def test_cpu_without_avx_fails(tmp_path: Path) -> None:
    check = check_cpu(cpuinfo_path=_cpuinfo(tmp_path, "fpu sse2 sse4_2"), machine="x86_64")
    assert check.status == "FAIL" and "AVX" in check.detail and check.fix


def test_cpu_other_arches_need_nothing(tmp_path: Path) -> None:
    assert check_cpu(cpuinfo_path=tmp_path / "absent", machine="aarch64").ok
    unreadable = check_cpu(cpuinfo_path=tmp_path / "absent", machine="x86_64")
    assert unreadable.status == "WARN"


def test_this_machine_passes_the_cpu_check() -> None:
    # TensorFlow runs the rest of the suite here, so the real check must agree.
    assert check_cpu().ok


# ----------------------------------------------------------------------------- database


def test_missing_database_is_created_at_head(config: Config, tmp_path: Path) -> None:
    check = check_database(config)
    assert check.ok and check.detail.startswith("created ")
    assert (tmp_path / "db.sqlite3").is_file()
    again = check_database(config)
    assert again.ok and again.detail.endswith(f"at revision {head_revision()}")


def test_database_at_an_older_revision_fails(config: Config) -> None:
    with open_database(config.database.url) as db, db.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "base")
    check = check_database(config)
    assert check.status == "FAIL"
    assert f"schema revision none, this code needs {head_revision()}" in check.detail
    assert check.fix == "inboxsort db upgrade"


def test_database_at_an_unknown_revision_fails(config: Config, tmp_path: Path) -> None:
    open_database(config.database.url).close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    check = check_database(config)
    assert check.status == "FAIL" and "9999" in check.detail and "newer" in check.detail
    assert check.fix == "upgrade inboxsort"


def test_read_only_database_fails_with_the_path_and_the_fix(make_config, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = load_config(make_config(database_url=f"sqlite:///{state / 'db.sqlite3'}"))
    open_database(config.database.url).close()
    with refusing_writes(state) as how:
        check = check_database(config)
    assert check.status == "FAIL", (how, check)
    assert str(state / "db.sqlite3") in check.detail and "not writable" in check.detail
    assert str(state) in check.fix and "writable" in check.fix
    assert check_database(config).ok  # writable again


# -------------------------------------------------------------------------------- model


def test_active_model_loads_and_predicts(healthy: Config, tiny_card: dict) -> None:
    check = check_model(healthy)
    assert check.ok, check
    assert check.detail.startswith(f"version 1 ({healthy.paths.models / '0001'}): ")
    assert f"{tiny_card['image_size']}px, classes cats, dogs" in check.detail


def test_missing_model_file_fails(healthy: Config) -> None:
    (healthy.paths.models / "0001" / "model.keras").unlink()
    check = check_model(healthy)
    assert check.status == "FAIL" and "has no model.keras" in check.detail
    assert "inboxsort models activate" in check.fix


@pytest.mark.parametrize(
    "change", [{"image_size": 224}, {"classes": ["birds", "cats", "dogs"]}], ids=["size", "classes"]
)
def test_card_that_does_not_match_the_model_fails(healthy: Config, change: dict) -> None:
    card_path = healthy.paths.models / "0001" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, **change}))
    _set_row(healthy, **change)  # the registry agrees with the card: only the model differs
    check = check_model(healthy)
    assert check.status == "FAIL" and "does not match its card" in check.detail


def test_registry_row_that_disagrees_with_the_card_fails(healthy: Config) -> None:
    _set_row(healthy, classes=["apples", "pears"])
    check = check_model(healthy)
    assert check.status == "FAIL"
    assert "registry says" in check.detail and "apples" in check.detail


def test_model_check_on_a_database_without_schema_fails(healthy: Config) -> None:
    with open_database(healthy.database.url) as db, db.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "base")
    check = check_model(healthy)
    assert check.status == "FAIL" and check.fix == "inboxsort db upgrade"
    assert "no such table" in check.detail and "\n" not in check.detail


# ---------------------------------------------------------------------------- the lists


def test_startup_checks_are_folders_filesystem_inotify(config: Config, tmp_path: Path) -> None:
    checks = startup_checks(config, inotify_limit_path=limit_file(tmp_path, "1"))
    assert [c.name for c in checks] == ["folders", "same filesystem", "inotify"]
    assert [c.status for c in checks] == ["OK", "OK", "WARN"]
    assert failures(checks) == []  # warnings never stop the daemon


def test_failures_keep_only_outright_failures() -> None:
    ok, warn, fail = (
        Check("a", True, ""),
        Check("b", False, "", warning=True),
        Check("c", False, ""),
    )
    assert failures([ok, warn, fail]) == [fail]


def test_doctor_skips_the_model_on_a_cpu_without_avx(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    checks = doctor_checks(
        config,
        inotify_limit_path=limit_file(tmp_path, "100000"),
        cpuinfo_path=_cpuinfo(tmp_path, "fpu sse2"),
    )
    assert [c.name for c in checks] == [
        "config",
        "folders",
        "same filesystem",
        "inotify",
        "cpu",
        "database",
        "records",
        "model",
    ]
    by_name = {c.name: c for c in checks}
    assert by_name["config"].detail == str(tmp_path / "config.toml")
    assert by_name["cpu"].status == by_name["model"].status == "FAIL"
    assert "not loaded" in by_name["model"].detail
    assert [c.name for c in failures(checks)] == ["cpu", "model"]
