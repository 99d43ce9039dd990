"""The web application: routes, the access check around every request, errors as clear 4xx."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from inboxsort.config import Config
from inboxsort.db import Database
from inboxsort.errors import ConfigError, InboxsortError
from inboxsort.model.registry import ModelStore
from inboxsort.web.security import CSRF_COOKIE, Refused, check_access, csrf_token

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WebContext:
    """What every handler needs: the config, the database and the model registry."""

    config: Config
    db: Database
    store: ModelStore
    templates: Jinja2Templates

    def classes(self) -> list[str]:
        """The active model's classes, from its card (no model is loaded)."""
        classes = self.store.info(self.store.active_version()).classes
        if not classes:
            raise ConfigError("the active model's card lists no classes")
        return list(classes)


def context(request: Request) -> WebContext:
    """The WebContext of the app serving `request`."""
    ctx: WebContext = request.app.state.ctx
    return ctx


def wants_json(request: Request) -> bool:
    """Whether the client asked for JSON (scripts, the page's fetch calls) rather than HTML."""
    path = request.url.path
    accept = request.headers.get("accept", "")
    return path.startswith("/api/") or path == "/metrics" or "application/json" in accept


def error_response(request: Request, status: int, reason: str) -> Response:
    """A 4xx answer: JSON for scripts, a short page for a browser."""
    if wants_json(request):
        return JSONResponse({"error": reason, "status": status}, status_code=status)
    ctx = context(request)
    return ctx.templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "reason": reason, "csrf": csrf_token(request), "nav": None},
        status_code=status,
    )


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Check the token before any handler runs; set a new CSRF cookie where one was made."""
    try:
        check_access(request, context(request).config.web.token)
        response = await call_next(request)
    except Refused as exc:
        response = error_response(request, exc.status, exc.reason)
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", path="/")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # Only the page's own files: no inline script, nothing from another site.
    csp = "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"
    response.headers.setdefault("Content-Security-Policy", csp)
    return response


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return error_response(request, exc.status, exc.reason)


async def _user_error(request: Request, exc: Exception) -> Response:
    # ConfigError here is a bad value in the request (an unknown class); anything else the
    # relabel or the registry refused (the file moved meanwhile, a version not registered).
    status = 400 if isinstance(exc, ConfigError) else 409
    return error_response(request, status, str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(request, 404, f"no such page: {request.url.path}")


def _routes() -> list[Route | Mount]:
    from inboxsort.web import actions, api, pages

    def home(request: Request) -> Response:
        return RedirectResponse("/review", status_code=303)

    return [
        Route("/", home),
        Route("/review", pages.review),
        Route("/failed", pages.failed),
        Route("/models", pages.models),
        Route("/dashboard", pages.dashboard),
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        Route("/thumb/{image_id:int}", api.thumb),
        Route("/api/images", api.images),
        Route("/api/stats", api.stats),
        Route("/api/series", api.series),
        Route("/api/models", api.models),
        Route("/api/images/{image_id:int}/label", actions.label_one, methods=["POST"]),
        Route("/api/images/label", actions.label_many, methods=["POST"]),
        Route("/api/models/{version:int}/activate", actions.activate, methods=["POST"]),
        Route("/api/models/rollback", actions.rollback, methods=["POST"]),
        Route("/api/failed/{image_id:int}/send-back", actions.send_back, methods=["POST"]),
        Route("/metrics", api.metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(config: Config, *, db: Database, store: ModelStore) -> Starlette:
    """The Starlette application over an open database and model registry."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard)],
        exception_handlers={
            Refused: _refused,
            InboxsortError: _user_error,
            404: _not_found,
        },
    )
    app.state.ctx = WebContext(config=config, db=db, store=store, templates=templates)
    return app
