"""Who is asking, and may they: sessions, API tokens, the SSO proxy header,
CSRF, and the guard every endpoint is wrapped in.

A request is authenticated once, by `Authenticate`, in this order: an
`Authorization: Bearer` API token; the trusted proxy's header (only from a
`trusted_proxies` address); the session cookie (signed, holding a key the
store knows). Until the first account exists, loopback clients that do not
come through a proxy are one anonymous viewer who sees everything but
administers nothing ("setup mode"), so a fresh `make run` shows its events.
Endpoints declare what they need with `@guard(...)`: `/api/*` answers 401
JSON, pages redirect to the sign-in form, members get 403 from admin pages.
Requests that change something must carry the session's CSRF token (form field
`csrf_token` or header `X-CSRF-Token`) unless they come with a bearer token:
cookies and the SSO proxy's credentials are sent by the browser on its own.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, Literal
from urllib.parse import quote

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aggregator.accounts import token_hash
from aggregator.config import AuthConfig
from aggregator.exceptions import AccountError
from aggregator.visibility import Viewer
from web.access import Access, Principal
from web.state import app_state

log = logging.getLogger(__name__)

PRINCIPAL = "tidings.principal"
# /hooks/: webhook senders prove who they are per source (web.hooks), never as users.
ANONYMOUS = ("/static/", "/healthz", "/readyz", "/hooks/")
FORWARDING_HEADERS = (
    "forwarded", "x-forwarded-for", "x-real-ip", "via", "x-forwarded-proto", "x-forwarded-host",
)  # fmt: skip
SESSION_COOKIE = "tidings_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_TOUCH_EVERY = 60.0  # seconds; last-used times need not cost a write per request

SETUP_NO_ADMIN = (
    "admins only: no accounts exist yet. Create the first admin with "
    "`tidings users create NAME --admin`, then sign in at /login"
)
STALE_FORM = "the form expired or came from another site; reload the page and try again"

Endpoint = Callable[[Request], Awaitable[Response]]
# "operator": an admin, or the setup-mode viewer (who sees everything anyway).
Level = Literal["public", "user", "operator", "admin"]


def is_loopback(conn: HTTPConnection) -> bool:
    host = conn.client.host if conn.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Sessions:
    """Signed session cookies (itsdangerous, through Starlette), marked Secure
    when the request came over TLS. The key is made lazily: it lives in the
    store, which opens in the lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plain: ASGIApp | None = None
        self._tls: ASGIApp | None = None

    def _build(self, scope: Scope) -> None:
        state = scope["app"].state.tidings
        options: dict[str, Any] = {
            "secret_key": state.session_secret,
            "session_cookie": SESSION_COOKIE,
            "max_age": int(state.config.auth.session_days * 86400),
            "same_site": "lax",
        }
        self._plain = SessionMiddleware(self.app, https_only=False, **options)
        self._tls = SessionMiddleware(self.app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._plain is None:
            self._build(scope)
        conn = HTTPConnection(scope)
        tls = scope.get("scheme") in ("https", "wss") or (
            # TLS ended at a trusted proxy, which says so.
            conn.headers.get("x-forwarded-proto", "").lower() == "https"
            and _from_trusted_proxy(conn, scope["app"].state.tidings.config.auth)
        )
        inner = self._tls if tls else self._plain
        assert inner is not None
        await inner(scope, receive, send)


class Authenticate:
    """Puts the request's Principal (or None) in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._touched: dict[int, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Static files, health checks and webhooks need nobody: a store that is
        # down must not turn /healthz into a 500 or keep /readyz from saying so.
        if scope["type"] in ("http", "websocket") and not scope["path"].startswith(ANONYMOUS):
            scope[PRINCIPAL] = await self.principal(HTTPConnection(scope))
        await self.app(scope, receive, send)

    async def principal(self, conn: HTTPConnection) -> Principal | None:
        state = app_state(conn)
        access: Access = state.access
        snapshot = await access.current()
        header = conn.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            found = snapshot.tokens.get(token_hash(header[7:].strip()))
            if found is None:
                return None  # a wrong token is never rescued by a cookie
            token_id, user_id = found
            user = access.user(user_id)
            if user is None:
                return None
            await self._touch(state.store.people, token_id)
            return access.principal(user, "token", token_hash(header[7:].strip()))
        auth: AuthConfig = state.config.auth
        if auth.proxy_header and _from_trusted_proxy(conn, auth):
            name = conn.headers.get(auth.proxy_header, "").strip()
            if name:
                return await _proxy_user(access, name, auth)
        key = (conn.scope.get("session") or {}).get("key")
        if isinstance(key, str):
            key_hash = token_hash(key)
            user = access.session_user(key_hash, datetime.now(UTC))
            if user is not None:
                return access.principal(user, "session", key_hash)
        if not snapshot.users and is_loopback(conn) and not _proxied(conn):
            return Principal(None, Viewer.everything("local"), "setup")
        return None

    async def _touch(self, people: Any, token_id: int) -> None:
        now = time.monotonic()
        if now - self._touched.get(token_id, -TOKEN_TOUCH_EVERY) >= TOKEN_TOUCH_EVERY:
            self._touched[token_id] = now
            await asyncio.to_thread(people.touch_token, token_id, datetime.now(UTC))


def _proxied(conn: HTTPConnection) -> bool:
    """A loopback peer that forwards for someone else is a reverse proxy:
    setup mode is for people on this machine only. (A bare `proxy_pass` sends
    none of these: that is why setup mode may read but never administer.)"""
    return any(h in conn.headers for h in FORWARDING_HEADERS)


def client_address(conn: HTTPConnection, auth: AuthConfig) -> str:
    """The client's address: a trusted proxy's X-Forwarded-For names it (the
    last entry, the one that proxy added); anyone else's is ignored."""
    peer = conn.client.host if conn.client else "?"
    forwarded = conn.headers.get("x-forwarded-for")
    if forwarded and _from_trusted_proxy(conn, auth):
        return forwarded.rsplit(",", 1)[-1].strip() or peer
    return peer


def _from_trusted_proxy(conn: HTTPConnection, auth: AuthConfig) -> bool:
    try:
        client = ipaddress.ip_address(conn.client.host if conn.client else "")
    except ValueError:
        return False
    return any(client in net for net in auth.trusted_proxies)


async def _proxy_user(access: Access, name: str, auth: AuthConfig) -> Principal | None:
    user = access.snapshot.user_named(name)
    no_admin = not any(u.is_admin and not u.disabled for u in access.snapshot.users.values())
    if user is None and auth.proxy_creates_users and no_admin:
        # The first account must be an admin, made with `tidings users create
        # --admin`; a member made here would end setup mode with nobody to run it.
        log.warning("proxy user %r not created: create an admin first", name)
    elif user is None and auth.proxy_creates_users:
        try:
            await asyncio.to_thread(
                access.people.create_user,
                name,
                password_hash=None,
                actor="proxy",
                now=datetime.now(UTC),
            )
        except AccountError:
            return None  # not a valid user name, or created meanwhile under other case
        await access.reload()
        user = access.snapshot.user_named(name)
    if user is None or user.disabled:
        return None
    return access.principal(user, "proxy")


def principal_of(conn: HTTPConnection) -> Principal | None:
    found: Principal | None = conn.scope.get(PRINCIPAL)
    return found


def csrf_token(conn: HTTPConnection) -> str:
    """The session's CSRF token, made on first use."""
    session = conn.session
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


async def csrf_ok(request: Request) -> bool:
    expected = request.session.get("csrf")
    if not isinstance(expected, str):
        return False
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf_token")
        given = value if isinstance(value, str) else None
    # As bytes: compare_digest refuses non-ASCII str, and a form may send any.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _is_bearer(conn: HTTPConnection) -> bool:
    return conn.headers.get("authorization", "")[:7].lower() == "bearer "


def guard(level: Level, *, csrf: bool = True) -> Callable[[Endpoint], Endpoint]:
    """What an endpoint needs: "public" (anyone; CSRF still checked on
    changes), "user" (signed in) or "admin". `csrf=False` is for a public
    endpoint that checks a secret of its own on every request and honours no
    cookie (webhooks): a forged cross-site request has nothing to ride on."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def guarded(request: Request) -> Response:
            principal = principal_of(request)
            if level != "public":
                if principal is None:
                    return unauthenticated(request)
                operator = principal.is_admin or principal.via == "setup"
                if (level == "admin" and not principal.is_admin) or (
                    level == "operator" and not operator
                ):
                    return forbidden(
                        request, SETUP_NO_ADMIN if principal.via == "setup" else "admins only"
                    )
            # Only a bearer token is never sent by a browser on its own: sessions,
            # setup mode and the SSO proxy (its cookie or Kerberos) all are.
            ambient = principal is None or principal.via != "token"
            try:
                changes = request.method not in SAFE_METHODS
                if csrf and changes and ambient and not await csrf_ok(request):
                    return forbidden(request, STALE_FORM)
                return await endpoint(request)
            finally:
                await request.close()  # uploads parsed for the CSRF field are spooled files

        guarded.guard_level = level  # type: ignore[attr-defined]
        return guarded

    return wrap


def unauthenticated(request: Request) -> Response:
    # A script that sent a token (a metrics scraper, say) needs a 401, not a form.
    if _is_api(request) or _is_bearer(request):
        return JSONResponse(
            {"error": "sign in or send Authorization: Bearer TOKEN"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="tidings"'},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def forbidden(request: Request, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=403)
    return PlainTextResponse(message, status_code=403)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path on this site."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"  # browsers drop tabs and newlines: "/\t/evil" would become "//evil"
    return target
