"""The helpers every command shares: time parsing (one rule for query and reclassify)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from inboxsort.cli.common import parse_time
from inboxsort.cli.query import parse_query
from inboxsort.errors import ConfigError
from tests.helpers.querysite import AGE, NOW


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30m", AGE(minutes=30)),
        ("2h", AGE(hours=2)),
        ("7d", AGE(days=7)),
        ("1w", AGE(weeks=1)),
        ("45s", AGE(seconds=45)),
        (" 3D ", AGE(days=3)),
        ("1.5h", AGE(minutes=90)),
    ],
)
def test_relative_times_mean_that_long_ago(text: str, ago: dt.timedelta) -> None:
    assert parse_time(text, now=NOW) == NOW - ago


def test_iso_times() -> None:
    local_midnight = dt.datetime(2024, 6, 1).astimezone()
    assert parse_time("2024-06-01", now=NOW) == local_midnight
    # An end bound given as a date includes that whole day.
    until = parse_time("2024-06-01", now=NOW, end=True)
    assert until == dt.datetime(2024, 6, 2).astimezone()
    assert parse_time("2024-06-01T08:30:00Z", now=NOW) == dt.datetime(
        2024, 6, 1, 8, 30, tzinfo=dt.UTC
    )
    offset = parse_time("2024-06-01T10:30+02:00", now=NOW)
    assert offset == dt.datetime(2024, 6, 1, 8, 30, tzinfo=dt.UTC)
    naive = parse_time("2024-06-01 08:30", now=NOW)
    assert naive.tzinfo is not None and naive == dt.datetime(2024, 6, 1, 8, 30).astimezone()


@pytest.mark.parametrize("text", ["yesterday", "3x", "2 fortnights", "-2h", "2024-13-01", ""])
def test_bad_times_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(repr(text))}: expected an ISO date"):
        parse_time(text, now=NOW)


@pytest.mark.parametrize("text", ["yesterday", "3x", "2 fortnights", "-2h", "2024-13-01", ""])
def test_bad_times_in_a_query_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_query(until=text, now=NOW)
    assert str(info.value).startswith(f"query: --until {text!r}: expected an ISO date")
    assert info.value.exit_code == 2
