"""What changes things: relabelling, activating a model, sending a failed image back, login.

Every one of them is a POST that passes the CSRF check and read-only mode first. Images are
named by database id only; their paths come from their rows.
"""

from __future__ import annotations

import datetime as dt
import hmac
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from inboxsort.db import SOURCE_REVIEW, STATUS_FAILED, STATUS_FILED
from inboxsort.db.review import image_row, mark_sent_back
from inboxsort.errors import InboxsortError
from inboxsort.files import free_name, move_no_clobber
from inboxsort.layout import check_class
from inboxsort.library.relabel import Relabeled, relabel
from inboxsort.web.app import WebContext, context, wants_json
from inboxsort.web.security import (
    AUTH_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    Refused,
    auth_cookie_value,
    check_csrf,
    check_writable,
)

MAX_BULK = 500


async def _body(request: Request, *, writes: bool = True) -> dict[str, Any]:
    """The request's fields (JSON or form), after the CSRF and read-only checks."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = await request.json()
        except ValueError:
            raise Refused(400, "the body is not valid JSON") from None
        if not isinstance(raw, dict):
            raise Refused(400, "the JSON body must be an object")
        fields: dict[str, Any] = raw
    else:
        form = await request.form()
        fields = {k: form.getlist(k) if k == "ids" else form.get(k) for k in form}
    submitted = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)
    check_csrf(request, submitted if isinstance(submitted, str) else None)
    if writes:
        check_writable(context(request).config.web.read_only)
    return fields


def _back(request: Request, fields: dict[str, Any], payload: dict[str, Any]) -> Response:
    """JSON for the page's scripts; for a plain form, back to the page it came from."""
    if wants_json(request) and "next" not in fields:
        return JSONResponse(payload)
    target = fields.get("next")
    # Only a path on this site: never an absolute or scheme-relative URL.
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        target = "/review"
    return RedirectResponse(target, status_code=303)


def _label(fields: dict[str, Any]) -> str:
    label = fields.get("label")
    if not isinstance(label, str) or not label:
        raise Refused(400, "label: expected a class name")
    return label


def _path_if(ctx: WebContext, image_id: int, status: str, *, refusal: str) -> Path:
    """The path of image `image_id`, refused with 404 if unknown, 409 if not in `status`."""
    with ctx.db.session() as session:
        row = image_row(session, image_id)
        if row is None:
            raise Refused(404, f"no image {image_id}")
        if row.status != status:
            raise Refused(409, f"image {image_id} is {row.status}{refusal}")
        return Path(row.path)


def _relabel(ctx: WebContext, image_id: int, label: str, classes: list[str]) -> Relabeled:
    """relabel() for a row named by id, as `inboxsort label` would do it for its path."""
    path = _path_if(ctx, image_id, STATUS_FILED, refusal=": only filed images take a label")
    return relabel(
        ctx.db,
        image_path=path,
        new_label=label,
        source=SOURCE_REVIEW,
        library=ctx.config.paths.library,
        classes=classes,
    )


def _outcome(done: Relabeled) -> dict[str, Any]:
    return {
        "id": done.image_id,
        "old_label": done.old_label,
        "label": done.new_label,
        "path": str(done.new_path),
        "correction_id": done.correction_id,
    }


async def label_one(request: Request) -> Response:
    """Give one filed image a class (moves it, records a correction with source review)."""
    fields = await _body(request)
    ctx = context(request)
    label = _label(fields)
    classes = await run_in_threadpool(ctx.classes)
    check_class(label, classes)
    image_id = int(request.path_params["image_id"])
    done = await run_in_threadpool(_relabel, ctx, image_id, label, classes)
    return _back(request, fields, _outcome(done))


def _ids(fields: dict[str, Any]) -> list[int]:
    raw = fields.get("ids")
    values = raw if isinstance(raw, list) else []
    if not values or len(values) > MAX_BULK:
        raise Refused(400, f"ids: expected 1 to {MAX_BULK} image ids")
    out = []
    for value in values:
        text = str(value)
        if not text.isdigit():
            raise Refused(400, f"ids: {text!r} is not an image id")
        out.append(int(text))
    return list(dict.fromkeys(out))


async def label_many(request: Request) -> Response:
    """Give a selection of images one class; each image succeeds or fails on its own."""
    fields = await _body(request)
    ctx = context(request)
    label = _label(fields)
    ids = _ids(fields)
    classes = await run_in_threadpool(ctx.classes)
    check_class(label, classes)

    def run() -> dict[str, Any]:
        done, errors = [], []
        for image_id in ids:
            try:
                done.append(_outcome(_relabel(ctx, image_id, label, classes)))
            except (Refused, InboxsortError) as exc:  # one image moved meanwhile must not stop all
                errors.append({"id": image_id, "error": str(exc)})
        return {"done": done, "errors": errors}

    result = await run_in_threadpool(run)
    return _back(request, fields, result)


async def activate(request: Request) -> Response:
    """Serve one version: needs confirm=yes, and force=yes for one the gate did not promote."""
    fields = await _body(request)
    ctx = context(request)
    version = int(request.path_params["version"])
    if fields.get("confirm") != "yes":
        raise Refused(400, "confirm: send confirm=yes to activate a model version")

    def run() -> None:
        info = next((v for v in ctx.store.versions() if v.version == version), None)
        if info is None:
            raise Refused(404, f"model version {version} is not registered")
        if info.promoted is False and fields.get("force") != "yes":
            why = " ".join((info.note or "the gate refused it").split())
            raise Refused(409, f"version {version} was not promoted ({why}); send force=yes")
        ctx.store.activate(version)

    await run_in_threadpool(run)
    return _back(request, fields, {"active_version": version})


async def rollback(request: Request) -> Response:
    """Serve the active version's parent (needs confirm=yes)."""
    fields = await _body(request)
    ctx = context(request)
    if fields.get("confirm") != "yes":
        raise Refused(400, "confirm: send confirm=yes to roll back")
    version = await run_in_threadpool(ctx.store.rollback)
    return _back(request, fields, {"active_version": version})


def _send_back(ctx: WebContext, image_id: int) -> dict[str, Any]:
    failed_dir, inbox = ctx.config.paths.failed, ctx.config.paths.inbox
    src = _path_if(ctx, image_id, STATUS_FAILED, refusal=", not failed")
    if not src.is_relative_to(failed_dir) or src == failed_dir:
        raise Refused(409, f"image {image_id} is not in the failed folder")
    target = free_name(inbox, src.name)
    try:
        # Through folders opened one by one, never a symbolic link; nothing is replaced.
        move_no_clobber(src, target, src_root=failed_dir, dest_root=inbox)
    except OSError as exc:
        raise Refused(409, f"cannot move image {image_id} back: {exc.strerror or exc}") from None
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with ctx.db.begin() as session:
        mark_sent_back(session, image_id, note=f"sent back to the inbox as {target} at {when} UTC")
    return {"id": image_id, "path": str(target)}


async def send_back(request: Request) -> Response:
    """Move a failed image (fixed meanwhile) back into the inbox, to be classified again."""
    fields = await _body(request)
    ctx = context(request)
    result = await run_in_threadpool(_send_back, ctx, int(request.path_params["image_id"]))
    return _back(request, fields, result)


async def login(request: Request) -> Response:
    """Check the token from the login form and set the login cookie."""
    fields = await _body(request, writes=False)
    token = context(request).config.web.token
    given = fields.get("token")
    if not token:
        return RedirectResponse("/review", status_code=303)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        return RedirectResponse("/login?failed=1", status_code=303)
    response = RedirectResponse("/review", status_code=303)
    value = auth_cookie_value(token)
    response.set_cookie(AUTH_COOKIE, value, httponly=True, samesite="strict", path="/")
    return response
