"""Who may use the page and change things: the token, the CSRF check, read-only mode.

The token (config `web.token`) is required for every request but static files and the login
form once it is set, and must be set to listen anywhere but loopback (config.py checks that).
A browser proves it with a cookie holding an HMAC of the token (never the token itself), set
by the login form; a script sends `Authorization: Bearer TOKEN`. Every state-changing request
also carries the CSRF token: the `inboxsort_csrf` cookie's value, echoed in the
`X-CSRF-Token` header or a `csrf` form field (double submit), and an Origin header, when the
browser sends one, must be this server's own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

AUTH_COOKIE = "inboxsort_auth"
CSRF_COOKIE = "inboxsort_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
# Paths open without the token: the login form and the page's own scripts and styles.
OPEN_PREFIXES = ("/login", "/static/")


class Refused(Exception):
    """A request turned away: its HTTP status and the reason shown to the user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def auth_cookie_value(token: str) -> str:
    """What the login cookie holds for `token`: an HMAC, so the cookie never reveals the token."""
    return hmac.new(token.encode(), b"inboxsort-web-login", hashlib.sha256).hexdigest()


def is_authenticated(request: Request, token: str) -> bool:
    """True when no token is configured, or the request proves it knows the token."""
    if not token:
        return True
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].encode(), token.encode())
    cookie = request.cookies.get(AUTH_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), auth_cookie_value(token).encode())


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def check_host(request: Request, token: str) -> None:
    """Without a token, refuse (403) a Host that is not loopback: a DNS-rebinding page would
    otherwise be same-origin with this server, read its CSRF token and post with it."""
    if token:
        return
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name not in LOOPBACK_NAMES:
        raise Refused(403, f"Host {host!r} refused: without web.token only loopback names serve")


def check_access(request: Request, token: str) -> None:
    """Refuse (401) a request without the token, unless its path is open."""
    check_host(request, token)
    if request.url.path.startswith(OPEN_PREFIXES):
        return
    if not is_authenticated(request, token):
        raise Refused(401, "this page needs the token set in web.token: sign in at /login")


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser: its cookie's, or a new one (the response sets it)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43 and current.replace("-", "").replace("_", "").isalnum():
        return current
    state = request.state
    if not getattr(state, "new_csrf", None):
        state.new_csrf = secrets.token_urlsafe(32)
    return str(state.new_csrf)


def check_origin(request: Request) -> None:
    """Refuse (403) a request whose Origin or Referer names another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise Refused(403, f"request from another site ({origin}) refused")


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403) a state-changing request whose CSRF token does not match its cookie."""
    check_origin(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted:
        raise Refused(403, "missing CSRF token: reload the page and try again")
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise Refused(403, "wrong CSRF token: reload the page and try again")


def check_writable(read_only: bool) -> None:
    """Refuse (403) a change in read-only mode."""
    if read_only:
        raise Refused(403, "this page is read-only (web.read_only = true)")
