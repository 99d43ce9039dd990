"""`inboxsort doctor`: one OK/WARN/FAIL line per check, exit 1 on any FAIL, 0 otherwise.

The healthy setup (tiny_model active as version 1) runs end to end as a subprocess once; each
broken setup runs the command handler in-process, which is much faster than starting Python.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inboxsort.cli import build_parser
from inboxsort.config import load_config
from inboxsort.errors import InboxsortError
from inboxsort.service.checks import doctor_checks
from tests.helpers.checksite import healthy_setup, limit_file, make_unwritable

NAMES = ["config", "folders", "same filesystem", "inotify", "cpu", "database", "records", "model"]
LINE = re.compile(r"(OK|WARN|FAIL) +([a-z][a-z ]*): (.+)")


@pytest.fixture
def site(tmp_path, tiny_model, config_writer) -> Path:
    """The config path of a healthy setup under tmp_path/site."""
    return healthy_setup(tmp_path / "site", tiny_model, config_writer)


def doctor(config_path: Path, capsys) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run doctor in-process; return the exit code and {check name: (status, rest of line)}."""
    config = load_config(config_path)
    args = build_parser().parse_args(["doctor"])
    try:
        code = args.handler(config, args)
    except InboxsortError as exc:  # pragma: no cover - doctor reports, it does not raise
        pytest.fail(f"doctor raised {exc!r}")
    lines = capsys.readouterr().out.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    result = {m[2]: (m[1], m[3]) for m in parsed if m}
    assert list(result) == NAMES
    return code, result


def test_healthy_setup_end_to_end(site: Path, run_cli) -> None:
    result = run_cli("--config", site, "doctor", cwd=site.parent)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [LINE.fullmatch(line)[1] for line in lines] == ["OK"] * len(NAMES), lines
    assert [LINE.fullmatch(line)[2] for line in lines] == NAMES
    assert lines[0] == f"OK    config: {site}"
    assert lines[-1].startswith(f"OK    model: version 1 ({site.parent / 'models' / '0001'}): ")


def test_missing_model_file_end_to_end_exits_1(site: Path, run_cli) -> None:
    (site.parent / "models" / "0001" / "model.keras").unlink()
    result = run_cli("--config", site, "doctor", cwd=site.parent)
    assert result.returncode == 1, result.stderr[-3000:]
    model = result.stdout.splitlines()[-1]
    assert model.startswith("FAIL  model: model version 1: ")
    assert "has no model.keras; fix: inboxsort models activate VERSION" in model


def test_broken_config_exits_2_before_any_check(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[batch]\nmax_size = 0\n")
    result = run_cli("--config", bad, "doctor")
    assert result.returncode == 2
    assert result.stdout == "" and "batch.max_size" in result.stderr


def test_unwritable_folder_fails(site: Path, capsys) -> None:
    config = load_config(site)
    failed = config.paths.failed
    failed.rmdir()
    make_unwritable(failed)
    try:
        code, lines = doctor(site, capsys)
    finally:
        if failed.is_dir():
            failed.chmod(0o700)
    assert code == 1
    status, text = lines["folders"]
    assert status == "FAIL" and f"paths.failed = {failed}" in text and "; fix: " in text
    assert lines["model"][0] == "OK"  # one broken folder does not hide the other checks


def test_card_mismatch_fails(site: Path, capsys) -> None:
    card_path = site.parent / "models" / "0001" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "image_size": 96}))
    code, lines = doctor(site, capsys)
    assert code == 1
    status, text = lines["model"]
    assert status == "FAIL" and "does not match its card" in text


def test_database_at_an_unknown_revision_fails(site: Path, capsys) -> None:
    with sqlite3.connect(site.parent / "db.sqlite3") as raw:
        raw.execute("UPDATE alembic_version SET version_num = 'abcdef'")
    code, lines = doctor(site, capsys)
    assert code == 1
    assert lines["database"][0] == "FAIL" and "abcdef" in lines["database"][1]
    assert lines["database"][1].endswith("; fix: upgrade inboxsort")


def test_database_at_an_old_revision_fails(site: Path, capsys) -> None:
    from alembic import command

    from inboxsort.db import head_revision, open_database
    from inboxsort.db.session import _alembic_config

    url = load_config(site).database.url
    with open_database(url) as db, db.engine.connect() as conn, conn.begin():
        command.downgrade(_alembic_config(conn), "base")
    code, lines = doctor(site, capsys)
    assert code == 1
    assert lines["database"] == (
        "FAIL",
        f"sqlite:///{site.parent / 'db.sqlite3'} is at schema revision none, this code needs "
        f"{head_revision()}; fix: inboxsort db upgrade",
    )
    # Doctor reports an old schema; it does not migrate it behind the user's back.
    assert doctor(site, capsys)[1]["database"][0] == "FAIL"


def test_low_inotify_limit_warns_but_exits_0(
    site: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = limit_file(tmp_path, "1")
    monkeypatch.setattr(
        "inboxsort.service.checks.doctor_checks",
        functools.partial(doctor_checks, inotify_limit_path=limit),
    )
    (site.parent / "library" / "cats").mkdir()
    code, lines = doctor(site, capsys)
    assert code == 0
    status, text = lines["inotify"]
    assert status == "WARN"
    assert text.startswith("max_user_watches = 1, but inbox and library have 3 folders; fix: ")
    assert "sudo sysctl fs.inotify.max_user_watches=" in text


def test_checks_and_the_parser_import_no_tensorflow() -> None:
    # The daemon imports the checks at start and every command builds the parser: only the
    # model check may pay for TensorFlow, when it runs.
    code = (
        "import sys\nimport inboxsort.service.checks, inboxsort.cli\ninboxsort.cli.build_parser()\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_version_that_serves_with_keras_warns_with_the_export_fix(site: Path, capsys) -> None:
    # Registered before LiteRT serving: model.keras and a card without a flatbuffer.
    folder = site.parent / "models" / "0001"
    (folder / "model.tflite").unlink()
    card = json.loads((folder / "card.json").read_text())
    del card["litert"]
    (folder / "card.json").write_text(json.dumps(card))
    code, lines = doctor(site, capsys)
    assert code == 0  # it still serves
    status, text = lines["model"]
    assert status == "WARN"
    assert "; serves with keras; loaded and predicted in " in text
    assert "(it has no LiteRT artifact" in text
    assert text.endswith("; fix: inboxsort models export 1")
