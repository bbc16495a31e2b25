"""Signing in and out, and what every user manages for themselves: their
password, their API tokens, their sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps

from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aggregator.accounts import (
    User,
    check_password,
    hash_password,
    token_hash,
    verify_password,
)
from aggregator.exceptions import AccountError
from web.access import Principal
from web.auth import client_address, csrf_token, guard, principal_of, safe_next
from web.forms import form_text, path_id
from web.state import app_state
from web.templating import render

# Failed sign-ins are counted per user name and per address, in this process.
_limiter = MovingWindowRateLimiter(MemoryStorage())
TOO_MANY = "Too many failed attempts; wait a minute and try again."


@guard("public")
async def login(request: Request) -> Response:
    state = app_state(request)
    if request.method == "GET":
        return render(
            request, "login.html", {"next": safe_next(request.query_params.get("next")), "name": ""}
        )
    form = await request.form()
    name = form_text(form, "name").strip()
    password = form_text(form, "password")
    target = safe_next(form_text(form, "next"))
    rate = parse_rate(state.config.auth.login_limit)
    address = client_address(request, state.config.auth)
    keys = (("name", name.lower()), ("address", address))
    # Count the attempt before checking the password, so that guesses sent in
    # parallel cannot all slip past; a success wipes the count again.
    if not all([_limiter.hit(rate, *k) for k in keys]):  # a list: count on both keys
        return render(
            request,
            "login.html",
            {
                "next": target,
                "name": name,
                "error": TOO_MANY,
            },
            status_code=429,
        )
    people = state.store.people
    snapshot = await state.access.current()
    user = snapshot.user_named(name)
    stored = await asyncio.to_thread(people.password_hash, user.name) if user else None
    ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or user is None or user.disabled:
        return render(
            request,
            "login.html",
            {"next": target, "name": name, "error": "Wrong user name or password."},
            status_code=400,
        )
    for key in keys:
        _limiter.clear(rate, *key)
    lifetime = timedelta(days=state.config.auth.session_days)
    session_key = await asyncio.to_thread(
        people.create_session, user.id, now=datetime.now(UTC), lifetime=lifetime
    )
    await state.access.reload()
    # A new session on sign-in: no fixation of a cookie set beforehand.
    request.session.clear()
    request.session["key"] = session_key
    csrf_token(request)
    return RedirectResponse(target, status_code=303)


@guard("public")
async def logout(request: Request) -> Response:
    """Ends the session on the server too: a copy of the cookie, or a live
    stream opened with it, stops working as well."""
    state = app_state(request)
    key = request.session.get("key")
    if isinstance(key, str):
        await asyncio.to_thread(state.store.people.end_session, token_hash(key))
        await state.access.reload()
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _account(request: Request, **context: object) -> Response:
    response = render(
        request, "account.html", context, status_code=400 if context.get("errors") else 200
    )
    response.headers["Cache-Control"] = "no-store"  # it may show a new token, once
    return response


async def _account_page(request: Request, user: User, **context: object) -> Response:
    tokens = await asyncio.to_thread(app_state(request).store.people.tokens, user.name)
    return _account(request, tokens=tokens, **context)


AccountEndpoint = Callable[[Request, Principal, User], Awaitable[Response]]


def for_account_holders(endpoint: AccountEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """A signed-in user's own page; setup mode has no account, so it goes home."""

    @guard("user")
    @wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        principal = principal_of(request)
        if principal is None or principal.user is None:
            return RedirectResponse("/", status_code=303)
        return await endpoint(request, principal, principal.user)

    return wrapped


@for_account_holders
async def account(request: Request, principal: Principal, user: User) -> Response:
    notice = "Password changed." if request.query_params.get("changed") == "password" else None
    return await _account_page(request, user, notice=notice)


@for_account_holders
async def change_password(request: Request, principal: Principal, user: User) -> Response:
    state = app_state(request)
    form = await request.form()
    current, new, repeat = (form_text(form, k) for k in ("current", "password", "repeat"))
    errors: dict[str, str] = {}
    stored = await asyncio.to_thread(state.store.people.password_hash, user.name)
    # A stolen session must not make a free password oracle: the sign-in limit applies.
    if not _limiter.hit(parse_rate(state.config.auth.login_limit), "name", user.name.lower()):
        errors["current"] = TOO_MANY
    elif not await asyncio.to_thread(verify_password, stored, current):
        errors["current"] = "That is not your current password."
    try:
        check_password(new)
    except AccountError as err:
        errors["password"] = str(err)
    if new != repeat:
        errors["repeat"] = "The two new passwords differ."
    if errors:
        return await _account_page(request, user, errors=errors)
    _limiter.clear(parse_rate(state.config.auth.login_limit), "name", user.name.lower())
    hashed = await asyncio.to_thread(hash_password, new)
    await asyncio.to_thread(
        state.store.people.update_user,
        user.name,
        password_hash=hashed,
        keep_session=principal.credential,  # other sessions end; this one goes on
        actor=principal.name,
        now=datetime.now(UTC),
    )
    await state.access.reload()
    return RedirectResponse("/account?changed=password", status_code=303)


@for_account_holders
async def create_token(request: Request, principal: Principal, user: User) -> Response:
    state = app_state(request)
    form = await request.form()
    try:
        token = await asyncio.to_thread(
            state.store.people.create_token,
            user.name,
            form_text(form, "token_name"),
            actor=principal.name,
            now=datetime.now(UTC),
        )
    except AccountError as err:
        return await _account_page(request, user, errors={"token_name": str(err)})
    await state.access.reload()
    # Shown in this response only: never stored in a cookie or a URL.
    return await _account_page(request, user, new_token=token)


@for_account_holders
async def revoke_token(request: Request, principal: Principal, user: User) -> Response:
    state = app_state(request)
    token_id = path_id(request, "token_id")
    with contextlib.suppress(AccountError):  # already gone
        if token_id is not None:
            await asyncio.to_thread(
                state.store.people.revoke_token,
                token_id,
                actor=principal.name,
                now=datetime.now(UTC),
                user=user.name,
            )
    await state.access.reload()
    return RedirectResponse("/account", status_code=303)


@for_account_holders
async def sign_out_everywhere(request: Request, principal: Principal, user: User) -> Response:
    state = app_state(request)
    await asyncio.to_thread(
        state.store.people.update_user,
        user.name,
        sign_out=True,
        actor=principal.name,
        now=datetime.now(UTC),
    )
    await state.access.reload()
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
