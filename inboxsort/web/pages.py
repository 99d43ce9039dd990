"""The HTML pages: review grid, failed images, model versions, dashboard, login."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from inboxsort.db import STATUS_FAILED, STATUS_FILED, Image
from inboxsort.db.review import filter_choices, review_count, review_page
from inboxsort.files import display_path
from inboxsort.layout import placement
from inboxsort.web.app import WebContext, context
from inboxsort.web.params import GridQuery, grid_query
from inboxsort.web.security import Refused, csrf_token


@dataclass(frozen=True)
class Tile:
    """One image as the grid shows it."""

    id: int
    name: str
    label: str | None
    score: float | None
    model_version: int | None
    status: str
    received_at: str
    in_review: bool
    # Only filed images in the library have a thumbnail and can be relabelled.
    filed: bool
    error: str | None


def _tile(row: Image, ctx: WebContext, classes: list[str]) -> Tile:
    library = ctx.config.paths.library
    where = placement(Path(row.path), library=library, classes=classes)
    return Tile(
        id=row.id,
        name=row.original_name,
        label=row.label,
        score=row.score,
        model_version=row.model_version,
        status=row.status,
        received_at=row.received_at.strftime("%Y-%m-%d %H:%M:%S"),
        in_review=where.review,
        filed=row.status == STATUS_FILED and where.inside,
        error=row.error,
    )


def _render(request: Request, name: str, nav: str, **values: Any) -> Response:
    ctx = context(request)
    values.update(
        nav=nav,
        csrf=csrf_token(request),
        read_only=ctx.config.web.read_only,
        signed_in=bool(ctx.config.web.token),
    )
    return ctx.templates.TemplateResponse(request, name, values)


def page_of(
    ctx: WebContext, query: GridQuery, size: int
) -> tuple[list[Image], int, int, dict[str, list[Any]]]:
    """One page of the grid (rows detached from the session), the total, the page count and
    the filter choices; 404 for a page past the last."""
    with ctx.db.session() as session:
        total = review_count(session, query.filter)
        pages = max(1, math.ceil(total / size))
        if query.page > pages:
            raise Refused(404, f"page {query.page} does not exist: {total} images make {pages}")
        offset = (query.page - 1) * size
        rows = review_page(session, query.filter, offset=offset, limit=size)
        choices = filter_choices(session)
        for row in rows:
            session.expunge(row)
    return rows, total, pages, choices


def _links(query: GridQuery, page: int, pages: int) -> dict[str, str | None]:
    def url(n: int) -> str:
        return "?" + urlencode({**query.args, "page": str(n)})

    return {
        "prev": url(page - 1) if page > 1 else None,
        "next": url(page + 1) if page < pages else None,
    }


def review(request: Request) -> Response:
    """The review grid: newest first, filterable, uncertain ones one click away."""
    ctx = context(request)
    library = display_path(ctx.config.paths.library)
    query = grid_query(request.query_params, library=library, status=STATUS_FILED)
    rows, total, pages, choices = page_of(ctx, query, ctx.config.web.page_size)
    classes = ctx.classes()
    return _render(
        request,
        "review.html",
        "review",
        tiles=[_tile(r, ctx, classes) for r in rows],
        classes=classes,
        total=total,
        page=query.page,
        pages=pages,
        links=_links(query, query.page, pages),
        args=query.args,
        choices=choices,
        uncertain_url="?" + urlencode({"uncertain": "1"}),
        review_url="?" + urlencode({"review": "1"}),
    )


def failed(request: Request) -> Response:
    """The failed images with their reasons, and a way to send each back to the inbox."""
    ctx = context(request)
    params = {k: v for k, v in request.query_params.items() if k == "page"}
    query = grid_query(params, library="", status=STATUS_FAILED)
    rows, total, pages, _ = page_of(ctx, query, ctx.config.web.page_size)
    return _render(
        request,
        "failed.html",
        "failed",
        rows=rows,
        total=total,
        page=query.page,
        pages=pages,
        links=_links(query, query.page, pages),
    )


def models(request: Request) -> Response:
    """Every model version with its figures; activate and roll back with a confirmation."""
    from inboxsort.web.api import version_rows

    ctx = context(request)
    return _render(request, "models.html", "models", versions=version_rows(ctx))


def dashboard(request: Request) -> Response:
    """Counts, the daemon's state and charts drawn from the JSON endpoints."""
    from inboxsort.web.api import collect_stats

    ctx = context(request)
    return _render(request, "dashboard.html", "dashboard", stats=collect_stats(ctx))


def login_form(request: Request) -> Response:
    """The form that asks for web.token and sets the login cookie."""
    return _render(request, "login.html", "login", failed=request.query_params.get("failed"))
