"""Query parameters of the review grid, checked: a bad value is a 400 naming it, never a guess."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass

from inboxsort.db.review import ReviewFilter
from inboxsort.layout import REVIEW_FOLDER
from inboxsort.web.security import Refused

MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class GridQuery:
    """The filter, the page number (from 1) and the query string that reproduces them."""

    filter: ReviewFilter
    page: int
    args: dict[str, str]


def _text(params: Mapping[str, str], key: str) -> str | None:
    value = params.get(key, "").strip()
    return value or None


def _number(params: Mapping[str, str], key: str, *, low: float, high: float) -> float | None:
    text = _text(params, key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Refused(400, f"{key} = {text!r}: expected a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise Refused(400, f"{key} = {text!r}: expected a number from {low:g} to {high:g}")
    return value


def _integer(params: Mapping[str, str], key: str, *, low: int, high: int) -> int | None:
    text = _text(params, key)
    if text is None:
        return None
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise Refused(400, f"{key} = {text!r}: expected an integer from {low} to {high}")
    return int(text)


def _moment(params: Mapping[str, str], key: str) -> dt.datetime | None:
    text = _text(params, key)
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        expected = "expected a date (2026-01-31) or a date and time"
        raise Refused(400, f"{key} = {text!r}: {expected}") from None
    # A date alone or a time without zone: UTC, as the database stores times.
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    # `until` a date alone includes that day, as the date field on the page reads.
    if key == "until" and len(text) == 10:
        moment += dt.timedelta(days=1)
    return moment


def _flag(params: Mapping[str, str], key: str) -> bool:
    text = params.get(key, "")
    if text not in ("", "0", "1", "on", "true", "false"):
        raise Refused(400, f"{key} = {text!r}: expected 1 or 0")
    return text in ("1", "on", "true")


def grid_query(params: Mapping[str, str], *, library: str, status: str | None) -> GridQuery:
    """The review grid's filter from a query string; `status` is the default status."""
    review = _flag(params, "review")
    status_text = params.get("status")
    f = ReviewFilter(
        label=_text(params, "label"),
        status=status if status_text is None else (status_text.strip() or None),
        model=_integer(params, "model", low=0, high=2**31 - 1),
        min_score=_number(params, "min_score", low=0, high=1),
        max_score=_number(params, "max_score", low=0, high=1),
        since=_moment(params, "since"),
        until=_moment(params, "until"),
        node=_text(params, "node"),
        under=f"{library.rstrip('/')}/{REVIEW_FOLDER}/" if review else None,
        uncertain=_flag(params, "uncertain"),
    )
    page = _integer(params, "page", low=1, high=MAX_PAGE) or 1
    keys = ("label", "model", "min_score", "max_score", "since", "until", "node")
    args = {k: params[k] for k in keys if params.get(k, "").strip()}
    if status_text is not None:
        args["status"] = status_text
    args.update({k: "1" for k in ("review", "uncertain") if _flag(params, k)})
    return GridQuery(filter=f, page=page, args=args)
