"""`inboxsort query`: list recorded images by label, status, time, model, score or name.

It opens the database read-only, so it runs beside a daemon writing in WAL mode, and it never
imports TensorFlow. Heavy imports stay inside functions: every CLI command builds this parser.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from inboxsort.cli.common import TIME_HELP, json_value, open_readonly, parse_time, write_out
from inboxsort.config import Config
from inboxsort.errors import ConfigError

if TYPE_CHECKING:
    from inboxsort.db import Image
    from inboxsort.db.search import ImageQuery

FORMATS = ("table", "csv", "json", "paths")
# `error` last: it is free text, and the columns before it stay aligned.
TABLE_COLUMNS = ("id", "received_at", "status", "label", "score", "model_version", "path", "error")
# parse_query's keyword arguments, named as argparse stores the options.
_OPTIONS = (
    "label",
    "status",
    "since",
    "until",
    "model",
    "min_score",
    "max_score",
    "name",
    "corrected",
    "sort",
    "limit",
)


def add_commands(sub: Any) -> None:
    """Register query on the CLI's subparsers."""
    query = sub.add_parser("query", help="list recorded images matching filters")
    # Values are validated by parse_query, not argparse: one clear line per mistake, exit 2.
    query.add_argument("--label", help="predicted (or corrected) label")
    query.add_argument("--status", help="pending, filed, failed, deleted, duplicate or classified")
    query.add_argument("--since", help=f"received at or after: {TIME_HELP}")
    query.add_argument("--until", help=f"received before (a date: to its end): {TIME_HELP}")
    query.add_argument("--model", metavar="VERSION", help="classified by this model version")
    query.add_argument("--min-score", help="score at least this (0 to 1)")
    query.add_argument("--max-score", help="score at most this (0 to 1)")
    query.add_argument("--name", metavar="GLOB", help="original file name, * and ?, any case")
    query.add_argument("--corrected", action="store_true", help="only images with a correction")
    query.add_argument("--sort", metavar="FIELD", help="a column; --sort=-FIELD for descending")
    query.add_argument("--limit", metavar="N", help="at most N images")
    query.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (local times), csv and json (UTC times), or paths: one per line, for "
        "xargs -r -d '\\n'",
    )
    query.set_defaults(handler=cmd_query)


# --------------------------------------------------------------------------------------------
# query: validating the options (inboxsort.db.search builds the SELECT they describe)
# --------------------------------------------------------------------------------------------


def _bad(option: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"query: {option} {value!r}: expected {expected}")


def _time(text: str, *, option: str, now: dt.datetime, end: bool = False) -> dt.datetime:
    try:
        return parse_time(text, now=now, end=end)
    except ValueError:
        raise _bad(option, text, TIME_HELP) from None


def _number(option: str, text: str | None, kind: type, low: float, high: float) -> Any:
    if text is None:
        return None
    expected = "a score from 0 to 1" if kind is float else f"an integer of at least {low}"
    try:
        value = kind(text)
    except ValueError:
        raise _bad(option, text, expected) from None
    if not low <= value <= high:  # also refuses nan
        raise _bad(option, text, expected)
    return value


def parse_query(
    *,
    label: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    model: str | None = None,
    min_score: str | None = None,
    max_score: str | None = None,
    name: str | None = None,
    corrected: bool = False,
    sort: str | None = None,
    limit: str | None = None,
    now: dt.datetime | None = None,
) -> ImageQuery:
    """Validate command-line strings into an ImageQuery; ConfigError names the bad option."""
    from inboxsort.db import schema
    from inboxsort.db.search import ImageQuery

    statuses = (
        schema.STATUS_PENDING,
        schema.STATUS_FILED,
        schema.STATUS_FAILED,
        schema.STATUS_DELETED,
        schema.STATUS_DUPLICATE,
        schema.STATUS_CLASSIFIED,
    )
    if status is not None and status not in statuses:
        raise _bad("--status", status, "one of " + ", ".join(statuses))
    now = now or dt.datetime.now(dt.UTC)
    start = None if since is None else _time(since, option="--since", now=now)
    stop = None if until is None else _time(until, option="--until", now=now, end=True)
    low = _number("--min-score", min_score, float, 0, 1)
    high = _number("--max-score", max_score, float, 0, 1)
    if low is not None and high is not None and low > high:
        raise _bad("--min-score", str(min_score), f"at most --max-score ({max_score})")
    field = sort or "received_at"
    descending = field.startswith("-")
    field = field.removeprefix("-")
    columns = _columns()
    if field not in columns:
        raise _bad("--sort", str(sort), "an images column, - for descending: " + ", ".join(columns))
    return ImageQuery(
        label=label,
        status=status,
        since=start,
        until=stop,
        model=_number("--model", model, int, 0, math.inf),
        min_score=low,
        max_score=high,
        name=name,
        corrected=corrected,
        sort=field,
        descending=descending,
        limit=_number("--limit", limit, int, 1, math.inf),
    )


# --------------------------------------------------------------------------------------------
# query: output
# --------------------------------------------------------------------------------------------


def _columns() -> list[str]:
    from inboxsort.db import Image

    return [c.key for c in Image.__table__.columns]


def image_rows(images: list[Image]) -> list[dict[str, Any]]:
    """Every column of each image, datetimes as ISO text (UTC)."""
    keys = _columns()
    return [{k: json_value(getattr(image, k)) for k in keys} for image in images]


def _table_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "score":
        return f"{value:.4f}"
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def render_images(images: list[Image], fmt: str) -> str:
    """The images as text in one of FORMATS."""
    if fmt == "paths":
        return "".join(f"{image.path}\n" for image in images)
    if fmt == "json":
        return json.dumps(image_rows(images), indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        columns = _columns()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[json_value(getattr(i, k)) for k in columns] for i in images])
        return out.getvalue()
    cells = [[_table_cell(k, getattr(i, k)) for k in TABLE_COLUMNS] for i in images]
    widths = [
        max(len(row[n]) for row in [list(TABLE_COLUMNS), *cells]) for n in range(len(TABLE_COLUMNS))
    ]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(TABLE_COLUMNS), *cells]
    ]
    return "\n".join(lines) + "\n"


def cmd_query(config: Config, args: argparse.Namespace) -> int:
    """Print the recorded images matching the filters."""
    from inboxsort.db.search import search_images

    query = parse_query(**{name: getattr(args, name) for name in _OPTIONS})
    with open_readonly(config) as db, db.session() as session:
        images = search_images(session, query)
    if not images and args.format == "table":
        print("no images match", file=sys.stderr)
        return 0
    write_out(render_images(images, args.format))
    return 0
