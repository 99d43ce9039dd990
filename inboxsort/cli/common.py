"""Helpers every command shares: opening the database and the model store, times, output."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from inboxsort.config import Config

if TYPE_CHECKING:
    from inboxsort.db import Database
    from inboxsort.model.registry import ModelStore

TIME_HELP = (
    "an ISO date or datetime (local time unless it has an offset) or an age: 30m, 2h, 7d, 1w"
)
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, now: dt.datetime, end: bool = False) -> dt.datetime:
    """An aware datetime from ISO text or an age like 2h or 1.5d; ValueError names the forms.

    A date alone means the user's local midnight, or with `end` the midnight after it.
    """
    stripped = text.strip()
    match = _AGE.fullmatch(stripped.lower())
    if match:
        return now - dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        day = dt.date.fromisoformat(stripped)
    except ValueError:
        pass
    else:
        # astimezone() on a naive datetime reads it as local time: the user's midnight.
        start = dt.datetime.combine(day, dt.time()).astimezone()
        return start + dt.timedelta(days=1) if end else start
    try:
        moment = dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text!r}: expected {TIME_HELP}") from None
    return moment.astimezone() if moment.tzinfo is None else moment


def open_store(config: Config) -> ModelStore:
    """The model registry on the configured database (migrated) and models folder."""
    from inboxsort.db import open_database
    from inboxsort.model.registry import ModelStore

    return ModelStore(config.paths.models, open_database(config.database.url))


def open_readonly(config: Config) -> Database:
    """The configured database, read-only and unmigrated."""
    from inboxsort.db import open_database

    # Read-only and unmigrated: never takes a write lock from the daemon, never alters schema.
    return open_database(config.database.url, readonly=True, migrate=False)


def json_value(value: Any) -> Any:
    """A column value for JSON or CSV: datetimes as ISO text."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def write_out(text: str) -> None:
    """Write to stdout; a reader that went away (head, xargs) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
