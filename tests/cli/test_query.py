"""`inboxsort query` against a real SQLite file written through the ORM, as the daemon does.

The module database holds eight images spread over 40 days, with every status, two labels,
three model versions and two corrections. Most tests call the pure functions or the command
handlers in-process; a few run `python -m inboxsort` end to end.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inboxsort.cli.query import parse_query
from inboxsort.config import load_config
from inboxsort.db import (
    SOURCE_LABEL,
    Image,
    open_database,
)
from inboxsort.db.search import build_select
from inboxsort.errors import ConfigError
from inboxsort.library.relabel import relabel
from tests.helpers.filedrows import CLASSES, file_image
from tests.helpers.querysite import AGE, BY_AGE, NOW, ROWS, Site, build_site, run

COLUMNS = [c.key for c in Image.__table__.columns]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory, config_writer) -> Site:
    """The eight rows, in a SQLite file or in the module's PostgreSQL database."""
    url = request.getfixturevalue("pg_module_url") if request.param == "postgresql" else None
    return build_site(tmp_path_factory.mktemp("query"), config_writer, url)


def ids(site: Site, **filters: Any) -> list[int]:
    query = parse_query(now=site.now, **filters)
    url = site.config.database.url
    with open_database(url, readonly=True, migrate=False) as db, db.session() as session:
        return [image.id for image in session.scalars(build_select(query))]


# ----------------------------------------------------------------------- filter building


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, BY_AGE),
        ({"label": "cats"}, [5, 3, 1]),
        ({"label": "birds"}, []),
        ({"status": "filed"}, [7, 8, 3, 2, 1]),
        ({"status": "failed"}, [4]),
        ({"status": "duplicate"}, [5]),
        ({"status": "pending"}, [6]),
        ({"status": "deleted"}, []),
        ({"since": "1h"}, [1, 6]),
        ({"since": "3d"}, [3, 2, 1, 6]),
        ({"until": "3d"}, [7, 8, 5, 4]),
        ({"since": "30d", "until": "1d"}, [8, 5, 4, 3]),
        ({"since": "1w", "until": "2h"}, [4, 3, 2]),
        ({"model": "1"}, [5, 2, 1]),
        ({"model": "0"}, [3]),
        ({"model": "7"}, []),
        ({"min_score": "0.9"}, [7, 5, 1]),
        ({"max_score": "0.6"}, [2]),
        ({"min_score": "0.7", "max_score": "0.95"}, [8, 5, 3, 1]),
        ({"name": "img_*"}, [5, 2, 1]),
        ({"name": "*.PNG"}, [3]),
        ({"name": "100%_*"}, [7]),  # % and _ are literal, not LIKE wildcards
        ({"name": "100?_sure.jpg"}, [7]),
        ({"name": "100??sure.jpg"}, [7, 8]),
        ({"corrected": True}, [7, 3]),
        ({"status": "filed", "label": "dogs", "min_score": "0.6"}, [7, 8]),
        ({"corrected": True, "label": "cats"}, [3]),
        ({"sort": "id"}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"sort": "-id"}, [8, 7, 6, 5, 4, 3, 2, 1]),
        ({"sort": "-score"}, [7, 5, 1, 3, 8, 2, 6, 4]),  # ties by id, descending too
        ({"sort": "original_name"}, [7, 8, 5, 1, 4, 3, 2, 6]),
        ({"sort": "-received_at", "limit": "2"}, [6, 1]),
        ({"limit": "3"}, [7, 8, 5]),
    ],
)
def test_filters_select_exact_ids(site: Site, filters: dict, expected: list[int]) -> None:
    assert ids(site, **filters) == expected


def test_iso_datetime_filters(site: Site) -> None:
    since = (site.now - AGE(days=6)).isoformat()
    until = (site.now - AGE(minutes=5)).isoformat()
    assert ids(site, since=since, until=until) == [4, 3, 2, 1]


@pytest.mark.parametrize(
    ("filters", "option"),
    [
        ({"status": "done"}, "--status"),
        ({"since": "yesterday"}, "--since"),
        ({"until": "soon"}, "--until"),
        ({"model": "v2"}, "--model"),
        ({"model": "-1"}, "--model"),
        ({"min_score": "high"}, "--min-score"),
        ({"min_score": "1.5"}, "--min-score"),
        ({"max_score": "-0.1"}, "--max-score"),
        ({"max_score": "nan"}, "--max-score"),
        ({"min_score": "0.8", "max_score": "0.2"}, "--min-score"),
        ({"sort": "nope"}, "--sort"),
        ({"sort": "-"}, "--sort"),
        ({"limit": "0"}, "--limit"),
        ({"limit": "ten"}, "--limit"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_option(filters: dict, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_query(now=NOW, **filters)
    message = str(info.value)
    assert message.startswith(f"query: {option} ") and "expected" in message
    assert "\n" not in message and info.value.exit_code == 2


# ------------------------------------------------------------------------ query formats


def test_json_format_has_every_column(site: Site, capsys) -> None:
    assert run(site.config, "query", "--status", "filed", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [7, 8, 3, 2, 1]
    assert all(list(r) == COLUMNS for r in rows)
    first = rows[0]
    assert (first["original_name"], first["label"], first["score"]) == (
        "100%_sure.jpg",
        "dogs",
        0.99,
    )
    received = dt.datetime.fromisoformat(first["received_at"])
    assert received == site.now - ROWS[7][5]


def test_csv_format_has_a_header_and_empty_nulls(site: Site, capsys) -> None:
    assert run(site.config, "query", "--label", "cats", "--format", "csv") == 0
    out = capsys.readouterr().out
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == COLUMNS
    rows = list(reader)
    assert [int(r["id"]) for r in rows] == [5, 3, 1]
    assert rows[0]["duplicate_of"] == "1" and rows[1]["duplicate_of"] == ""
    assert float(rows[2]["score"]) == 0.95
    assert dt.datetime.fromisoformat(rows[2]["received_at"]) == site.now - ROWS[1][5]


def test_paths_format_prints_one_current_path_per_line(site: Site, capsys) -> None:
    assert run(site.config, "query", "--name", "img_*", "--format", "paths") == 0
    assert capsys.readouterr().out.splitlines() == [
        "/site/duplicate/IMG_0001 (1).JPG",
        "/site/library/dogs/img_0002.jpg",
        "/site/library/cats/IMG_0001.JPG",
    ]


def test_table_format_is_the_default(site: Site, capsys) -> None:
    assert run(site.config, "query", "--sort=-score", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "id",
        "received_at",
        "status",
        "label",
        "score",
        "model_version",
        "path",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["7", "5"]
    assert "0.9900" in lines[1] and lines[1].endswith("/site/library/dogs/100%_sure.jpg")


def test_a_corrected_image_shows_the_score_of_its_new_label(make_config, capsys) -> None:
    """Issue 14: after dogs → cats, score is P(cats); what the model said has its own columns."""
    config = load_config(make_config())
    library = config.paths.library
    (library / "cats").mkdir(parents=True)
    with open_database(config.database.url) as db:
        moved = file_image(db, library / "dogs" / "a.jpg", "dogs", score=0.7578, model_version=1)
        kept = file_image(db, library / "dogs" / "b.jpg", "dogs", score=0.6, model_version=1)
        relabel(
            db,
            image_path=library / "dogs" / "a.jpg",
            new_label="cats",
            source=SOURCE_LABEL,
            library=library,
            classes=CLASSES,
        )
    assert run(config, "query", "--format", "json") == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    picked = ("label", "score", "model_label", "model_score")
    assert tuple(rows[moved][k] for k in picked) == ("cats", pytest.approx(0.2422), "dogs", 0.7578)
    assert tuple(rows[kept][k] for k in picked) == ("dogs", 0.6, "dogs", 0.6)

    assert run(config, "query", "--format", "csv", "--sort", "score") == 0
    first = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # The least confident first: the corrected image, by the probability of its label.
    assert (int(first["id"]), first["label"], first["model_label"]) == (moved, "cats", "dogs")
    assert (float(first["score"]), float(first["model_score"])) == (pytest.approx(0.2422), 0.7578)

    assert run(config, "query", "--label", "cats") == 0
    [line] = capsys.readouterr().out.splitlines()[1:]
    assert line.split()[4:6] == ["cats", "0.2422"]


def test_no_match(site: Site, capsys) -> None:
    assert run(site.config, "query", "--label", "birds") == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "no images match\n"
    assert run(site.config, "query", "--label", "birds", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(site.config, "query", "--label", "birds", "--format", "paths") == 0
    assert capsys.readouterr().out == ""


def test_bad_value_exits_2_in_process(site: Site, capsys) -> None:
    assert run(site.config, "query", "--min-score", "2") == 2
    assert (
        capsys.readouterr().err
        == "inboxsort: query: --min-score '2': expected a score from 0 to 1\n"
    )


def test_missing_database_is_an_error_not_a_new_file(make_config, tmp_path: Path, capsys) -> None:
    config = load_config(make_config())
    assert run(config, "query") == 1
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite3").exists()  # read-only: nothing created


# -------------------------------------------------------------------- end to end (subprocess)


def test_cli_query_csv(site: Site, run_cli) -> None:
    result = run_cli("--config", site.config_path, "query", "--status", "filed", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(result.stdout))] == [7, 8, 3, 2, 1]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--since", "3x"), "--since"),
        (("--sort", "colour"), "--sort"),
        (("--limit", "-"), "--limit"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(site: Site, run_cli, args, option) -> None:
    result = run_cli("--config", site.config_path, "query", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"inboxsort: query: {option} "), result.stderr


def test_query_and_stats_never_import_tensorflow(site: Site, cli_env) -> None:
    code = (
        "import sys\n"
        "from inboxsort.cli import main\n"
        f"cfg = {str(site.config_path)!r}\n"
        "assert main(['--config', cfg, 'query', '--format', 'json']) == 0\n"
        "assert main(['--config', cfg, 'stats', '--json']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
