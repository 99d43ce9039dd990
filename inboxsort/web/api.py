"""JSON endpoints (what the dashboard's charts draw, and what scripts can use), thumbnails and
/metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inboxsort.db import STATUS_FILED
from inboxsort.db.counts import received_since
from inboxsort.db.review import corrections_since, image_row
from inboxsort.files import display_path
from inboxsort.web.app import WebContext, context
from inboxsort.web.metrics import collect, exposition
from inboxsort.web.pages import page_of
from inboxsort.web.params import grid_query
from inboxsort.web.security import Refused
from inboxsort.web.thumbs import thumbnail

MAX_SERIES_DAYS = 90
ROW_KEYS: tuple[str, ...] = ("id", "original_name", "path", "label", "score", "model_label")
ROW_KEYS += ("model_score", "model_version", "status", "error", "node", "received_at", "filed_at")


def collect_stats(ctx: WebContext) -> dict[str, Any]:
    """The dashboard's numbers (the same as /api/stats)."""
    return collect(ctx.db, ctx.store, now=dt.datetime.now(dt.UTC), node=ctx.config.node)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def thumb(request: Request) -> Response:
    """The thumbnail of one filed image, by id."""
    ctx = context(request)
    image_id = int(request.path_params["image_id"])
    with ctx.db.session() as session:
        row = image_row(session, image_id)
        if row is None:
            raise Refused(404, f"no image {image_id}")
        session.expunge(row)
    data = thumbnail(row, library=ctx.config.paths.library, cache=ctx.config.web.thumbnails)
    headers = {"Cache-Control": "private, max-age=86400"}
    return Response(data, media_type="image/jpeg", headers=headers)


def images(request: Request) -> Response:
    """One page of the review grid as JSON: the same filters and pages as /review."""
    ctx = context(request)
    library = display_path(ctx.config.paths.library)
    query = grid_query(request.query_params, library=library, status=STATUS_FILED)
    rows, total, pages, _ = page_of(ctx, query, ctx.config.web.page_size)
    out = [{k: _json_value(getattr(r, k)) for k in ROW_KEYS} for r in rows]
    return JSONResponse({"total": total, "page": query.page, "pages": pages, "images": out})


def stats(request: Request) -> Response:
    """Counts by status, label and failure reason, corrections, the model, the daemon."""
    return JSONResponse(collect_stats(context(request)))


def _buckets(times: list[dt.datetime], start: dt.datetime, step: dt.timedelta, n: int) -> list[int]:
    counts = [0] * n
    for moment in times:
        index = int((moment - start) / step)
        if 0 <= index < n:
            counts[index] += 1
    return counts


def series(request: Request) -> Response:
    """Images received per hour and corrections per day over the last `days` days (default 7)."""
    text = request.query_params.get("days", "7")
    if not text.isdigit() or not 1 <= int(text) <= MAX_SERIES_DAYS:
        raise Refused(400, f"days = {text!r}: expected an integer from 1 to {MAX_SERIES_DAYS}")
    days = int(text)
    ctx = context(request)
    now = dt.datetime.now(dt.UTC)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=24 * days - 1)
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days - 1)
    with ctx.db.session() as session:
        received = received_since(session, first_hour)
        corrected = corrections_since(session, first_day)
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    return JSONResponse(
        {
            "hours": [int((first_hour + n * hour).timestamp()) for n in range(24 * days)],
            "images_per_hour": _buckets(received, first_hour, hour, 24 * days),
            "days": [int((first_day + n * day).timestamp()) for n in range(days)],
            "corrections_per_day": _buckets(corrected, first_day, day, days),
        }
    )


def version_rows(ctx: WebContext) -> list[dict[str, Any]]:
    """Every model version with its figures, newest first, as the models page lists them."""
    out = []
    for info in reversed(ctx.store.versions()):
        row = info.to_json()
        gate = (info.metrics or {}).get("gate") or {}
        row["gate"] = gate
        row["gate_figures"] = gate_figures(gate)
        row["runtime"], row["runtime_why"] = ctx.store.serving(info.version)
        out.append(row)
    return out


def _right(scores: Any) -> str | None:
    if not isinstance(scores, dict) or not scores.get("n"):
        return None
    return f"{scores.get('correct', 0)}/{scores['n']}"


def gate_figures(gate: dict[str, Any]) -> list[str]:
    """The gate's figures in words: each set, the active model's score, then the candidate's."""
    if not gate:
        return []
    active, candidate = gate.get("active") or {}, gate.get("candidate") or {}
    out = []
    for key, name in (
        ("set", f"gate set ({gate.get('set', '?')})"),
        ("corrections", "held-out corrections"),
    ):
        before, after = _right(active.get(key)), _right(candidate.get(key))
        if before or after:
            out.append(f"{name}: {before or '—'} right before, {after or '—'} after")
    if "tolerance" in gate:
        out.append(f"tolerance {gate['tolerance']}")
    return out


def models(request: Request) -> Response:
    """Every model version with its metrics, parent, gate outcome and which one is active."""
    return JSONResponse({"versions": version_rows(context(request))})


def metrics(request: Request) -> Response:
    """The Prometheus text exposition format."""
    ctx = context(request)
    body = exposition(ctx.db, ctx.store, ctx.config.node)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
