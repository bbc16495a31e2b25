"""Admin pages for people: users, groups, their API tokens, and the audit log
of every change (who, what, when).

Each change is one `People` call: one transaction that also writes the audit
entry naming the admin. The access rules are reloaded right after, so a
disabled user or a removed member loses access at once, open websockets
included. Bad input re-renders the form with a message next to the field
(status 400) and changes nothing; a success redirects (303) with a `notice`
key that maps to fixed text, so a link can never make the page say anything
else. A new API token appears only in the response that made it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.accounts import check_group_name, check_password, check_user_name, hash_password
from aggregator.exceptions import AccountError
from aggregator.store.people import People
from web.auth import guard, principal_of
from web.forms import form_text, form_texts, parse_id, path_id
from web.state import app_state
from web.templating import render

T = TypeVar("T")

AUDIT_PAGE = 50

NOTICES = {
    "user-created": "User created.",
    "user-saved": "Changes saved.",
    "user-deleted": "User deleted.",
    "password-reset": "Password set. The user's sessions have ended.",
    "signed-out": "Every session of this user has ended.",
    "token-revoked": "Token revoked.",
    "group-created": "Group created.",
    "group-deleted": "Group deleted.",
    "member-added": "Member added.",
    "member-removed": "Member removed.",
}

NO_USER = "No such user."
NO_GROUP = "No such group."
NO_TOKEN = "No such token."  # noqa: S105 - a message, not a secret
NOT_A_MEMBER = "That user is not a member of this group."
PASSWORDS_DIFFER = "The two passwords differ."


# --- helpers ---------------------------------------------------------------


def _people(request: Request) -> People:
    return app_state(request).store.people


def _actor(request: Request) -> str:
    principal = principal_of(request)
    assert principal is not None  # guard("admin") let the request in
    return principal.name


def _is_self(request: Request, name: str) -> bool:
    principal = principal_of(request)
    return principal is not None and principal.user is not None and principal.user.name == name


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _user_url(name: str) -> str:
    return f"/admin/users/{quote(name, safe='')}"


def _done(path: str, notice: str) -> Response:
    assert notice in NOTICES
    return RedirectResponse(f"{path}?notice={notice}", status_code=303)


def _check(errors: dict[str, str], field: str, check: Callable[[str], object], value: str) -> None:
    try:
        check(value)
    except AccountError as err:
        errors[field] = str(err)


def _check_groups(errors: dict[str, str], field: str, names: Iterable[str]) -> None:
    for name in names:
        _check(errors, field, check_group_name, name)


def _refusal(err: AccountError, fields: Mapping[str, str]) -> dict[str, Any]:
    """The store's refusal as template context: next to its form field when
    this form has that field, else as the page's error."""
    field = fields.get(err.field or "")
    return {"errors": {field: str(err)}} if field else {"error": str(err)}


async def _change(request: Request, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one change as the signed-in admin, then apply the new rules at once."""
    result = await asyncio.to_thread(
        method, *args, actor=_actor(request), now=datetime.now(UTC), **kwargs
    )
    await app_state(request).access.reload()
    return result


# --- users -----------------------------------------------------------------


async def _users_view(request: Request, *, status: int = 200, **context: Any) -> Response:
    people = _people(request)
    users = await asyncio.to_thread(people.users)
    groups = await asyncio.to_thread(people.groups)
    tokens = await asyncio.to_thread(people.tokens)
    form = {"name": "", "admin": False, "groups": [], "new_groups": ""}
    return render(
        request,
        "admin/users.html",
        {
            "users": users,
            "all_groups": list(groups),
            "token_counts": Counter(t.user for t in tokens),
            "form": form,
            **context,
        },
        status_code=status,
    )


@guard("admin")
async def users_page(request: Request) -> Response:
    if request.method == "POST":
        return await _create_user(request)
    return await _users_view(request, notice=_notice(request))


async def _create_user(request: Request) -> Response:
    form = await request.form()
    name = form_text(form, "name").strip()
    password, repeat = form_text(form, "password"), form_text(form, "repeat")
    admin = "admin" in form
    chosen, new_groups = form_texts(form, "groups"), form_text(form, "new_groups")
    values = {"name": name, "admin": admin, "groups": chosen, "new_groups": new_groups}
    groups = list(dict.fromkeys([*chosen, *_split(new_groups)]))
    errors: dict[str, str] = {}
    _check(errors, "name", check_user_name, name)
    _check(errors, "password", check_password, password)
    if password != repeat:
        errors["repeat"] = PASSWORDS_DIFFER
    _check_groups(errors, "new_groups", groups)
    if errors:
        return await _users_view(request, status=400, form=values, errors=errors)
    hashed = await asyncio.to_thread(hash_password, password)
    try:
        await _change(
            request,
            _people(request).create_user,
            name,
            password_hash=hashed,
            admin=admin,
            groups=groups,
        )
    except AccountError as err:
        fields = {"name": "name", "password": "password", "group": "new_groups"}
        return await _users_view(request, status=400, form=values, **_refusal(err, fields))
    return _done("/admin/users", "user-created")


async def _user_view(request: Request, name: str, *, status: int = 200, **context: Any) -> Response:
    people = _people(request)
    user = await asyncio.to_thread(people.user, name)
    if user is None:
        return await _users_view(request, status=404, error=NO_USER)
    groups = await asyncio.to_thread(people.groups)
    tokens = await asyncio.to_thread(people.tokens, name)
    form = {
        "admin": user.is_admin,
        "disabled": user.disabled,
        "groups": sorted(user.groups),
        "new_groups": "",
    }
    return render(
        request,
        "admin/users_edit.html",
        {"user": user, "all_groups": list(groups), "tokens": tokens, "form": form, **context},
        status_code=status,
    )


@guard("admin")
async def user_page(request: Request) -> Response:
    name: str = request.path_params["name"]
    if request.method == "GET":
        return await _user_view(request, name, notice=_notice(request))
    user = await asyncio.to_thread(_people(request).user, name)
    if user is None:
        return await _users_view(request, status=404, error=NO_USER)
    form = await request.form()
    admin, disabled = "admin" in form, "disabled" in form
    chosen, new_groups = form_texts(form, "groups"), form_text(form, "new_groups")
    values = {"admin": admin, "disabled": disabled, "groups": chosen, "new_groups": new_groups}
    groups = list(dict.fromkeys([*chosen, *_split(new_groups)]))
    errors: dict[str, str] = {}
    _check_groups(errors, "new_groups", groups)
    if errors:
        return await _user_view(request, name, status=400, form=values, errors=errors)
    # Only what changed, so the audit entry says what the admin did.
    changes: dict[str, Any] = {}
    if admin != user.is_admin:
        changes["admin"] = admin
    if disabled != user.disabled:
        changes["disabled"] = disabled
    if set(groups) != user.groups:
        changes["groups"] = groups
    if changes:
        try:
            await _change(request, _people(request).update_user, name, **changes)
        except AccountError as err:
            return await _user_view(
                request, name, status=400, form=values, **_refusal(err, {"group": "new_groups"})
            )
    if _is_self(request, name) and (disabled or not admin):
        return RedirectResponse("/", status_code=303)  # these pages are no longer theirs
    return _done(_user_url(name), "user-saved")


@guard("admin")
async def reset_password(request: Request) -> Response:
    name: str = request.path_params["name"]
    if await asyncio.to_thread(_people(request).user, name) is None:
        return await _users_view(request, status=404, error=NO_USER)
    form = await request.form()
    password, repeat = form_text(form, "password"), form_text(form, "repeat")
    errors: dict[str, str] = {}
    _check(errors, "password", check_password, password)
    if password != repeat:
        errors["repeat"] = PASSWORDS_DIFFER
    if errors:
        return await _user_view(request, name, status=400, errors=errors)
    hashed = await asyncio.to_thread(hash_password, password)
    principal = principal_of(request)
    # An admin resetting their own password stays signed in in this browser.
    keep = principal.credential if principal and principal.via == "session" else None
    try:
        await _change(
            request,
            _people(request).update_user,
            name,
            password_hash=hashed,
            keep_session=keep if _is_self(request, name) else None,
        )
    except AccountError as err:
        return await _user_view(request, name, status=400, **_refusal(err, {}))
    return _done(_user_url(name), "password-reset")


@guard("admin")
async def sign_out_user(request: Request) -> Response:
    name: str = request.path_params["name"]
    if await asyncio.to_thread(_people(request).user, name) is None:
        return await _users_view(request, status=404, error=NO_USER)
    try:
        await _change(request, _people(request).update_user, name, sign_out=True)
    except AccountError as err:
        return await _user_view(request, name, status=400, **_refusal(err, {}))
    if _is_self(request, name):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
    return _done(_user_url(name), "signed-out")


@guard("admin")
async def create_token(request: Request) -> Response:
    name: str = request.path_params["name"]
    if await asyncio.to_thread(_people(request).user, name) is None:
        return await _users_view(request, status=404, error=NO_USER)
    form = await request.form()
    token_name = form_text(form, "token_name")
    try:
        token = await _change(request, _people(request).create_token, name, token_name)
    except AccountError as err:
        return await _user_view(
            request,
            name,
            status=400,
            token_name=token_name,
            **_refusal(err, {"token_name": "token_name"}),
        )
    # Shown in this response only: never stored, never in a URL, not cached.
    response = await _user_view(request, name, new_token=token)
    response.headers["Cache-Control"] = "no-store"
    return response


@guard("admin")
async def revoke_token(request: Request) -> Response:
    name: str = request.path_params["name"]
    token_id = path_id(request, "token_id")
    if token_id is None:  # no token can have it
        return await _user_view(request, name, status=404, error=NO_TOKEN)
    try:
        await _change(request, _people(request).revoke_token, token_id, user=name)
    except AccountError as err:
        return await _user_view(request, name, status=400, error=str(err))
    return _done(_user_url(name), "token-revoked")


@guard("admin")
async def delete_user(request: Request) -> Response:
    name: str = request.path_params["name"]
    user = await asyncio.to_thread(_people(request).user, name)
    if user is None:
        return await _users_view(request, status=404, error=NO_USER)
    if request.method == "GET":
        return render(request, "admin/users_delete.html", {"user": user})
    try:
        await _change(request, _people(request).delete_user, name)
    except AccountError as err:
        return render(
            request, "admin/users_delete.html", {"user": user, "error": str(err)}, status_code=400
        )
    return _done("/admin/users", "user-deleted")


# --- groups ----------------------------------------------------------------


async def _groups_view(request: Request, *, status: int = 200, **context: Any) -> Response:
    people = _people(request)
    groups = await asyncio.to_thread(people.groups)
    users = await asyncio.to_thread(people.users)
    return render(
        request,
        "admin/groups.html",
        {"groups": groups, "user_names": [u.name for u in users], "group_name": "", **context},
        status_code=status,
    )


async def _group_exists(request: Request, group: str) -> bool:
    return group in await asyncio.to_thread(_people(request).groups)


@guard("admin")
async def groups_page(request: Request) -> Response:
    if request.method == "GET":
        return await _groups_view(request, notice=_notice(request))
    form = await request.form()
    group = form_text(form, "group").strip()
    try:
        await _change(request, _people(request).create_group, group)
    except AccountError as err:
        return await _groups_view(
            request, status=400, group_name=group, **_refusal(err, {"group": "group"})
        )
    return _done("/admin/groups", "group-created")


@guard("admin")
async def delete_group(request: Request) -> Response:
    group: str = request.path_params["group"]
    members = (await asyncio.to_thread(_people(request).groups)).get(group)
    if members is None:
        return await _groups_view(request, status=404, error=NO_GROUP)
    if request.method == "GET":
        return render(request, "admin/groups_delete.html", {"group": group, "members": members})
    try:
        await _change(request, _people(request).delete_group, group)
    except AccountError as err:
        return await _groups_view(request, status=400, error=str(err))
    return _done("/admin/groups", "group-deleted")


@guard("admin")
async def add_member(request: Request) -> Response:
    group: str = request.path_params["group"]
    # People.add_member would create a missing group: only existing ones here.
    if not await _group_exists(request, group):
        return await _groups_view(request, status=404, error=NO_GROUP)
    form = await request.form()
    try:
        await _change(request, _people(request).add_member, group, form_text(form, "user"))
    except AccountError as err:
        return await _groups_view(
            request, status=400, member_error={"group": group, "message": str(err)}
        )
    return _done("/admin/groups", "member-added")


@guard("admin")
async def remove_member(request: Request) -> Response:
    group: str = request.path_params["group"]
    name: str = request.path_params["name"]
    members = (await asyncio.to_thread(_people(request).groups)).get(group)
    if members is None:
        return await _groups_view(request, status=404, error=NO_GROUP)
    if name not in members:  # a fixed text: never repeat a name from the URL
        return await _groups_view(request, status=404, error=NOT_A_MEMBER)
    try:
        await _change(request, _people(request).remove_member, group, name)
    except AccountError as err:
        return await _groups_view(request, status=400, error=str(err))
    return _done("/admin/groups", "member-removed")


# --- audit log -------------------------------------------------------------


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value) or "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _details(detail: Mapping[str, object] | None) -> list[tuple[str, str]]:
    return [(key, _shown(value)) for key, value in sorted((detail or {}).items())]


@guard("admin")
async def audit_page(request: Request) -> Response:
    raw = request.query_params.get("before", "")
    before = None
    if raw.isascii() and raw.isdigit():  # anything else: the newest page
        try:
            before = parse_id(raw, "before") or None
        except ValueError as err:
            return PlainTextResponse(str(err), status_code=400)
    entries = await asyncio.to_thread(_people(request).audit_log, AUDIT_PAGE + 1, before)
    older = entries[AUDIT_PAGE - 1].id if len(entries) > AUDIT_PAGE else None
    shown = entries[:AUDIT_PAGE]
    return render(
        request,
        "admin/audit.html",
        {"entries": [(e, _details(e.detail)) for e in shown], "older": older, "paged": before},
    )


routes: list[BaseRoute] = [
    Route("/admin/users", users_page, methods=["GET", "POST"]),
    Route("/admin/users/{name}", user_page, methods=["GET", "POST"]),
    Route("/admin/users/{name}/password", reset_password, methods=["POST"]),
    Route("/admin/users/{name}/sign-out", sign_out_user, methods=["POST"]),
    Route("/admin/users/{name}/tokens", create_token, methods=["POST"]),
    Route("/admin/users/{name}/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
    Route("/admin/users/{name}/delete", delete_user, methods=["GET", "POST"]),
    Route("/admin/groups", groups_page, methods=["GET", "POST"]),
    Route("/admin/groups/{group}/members", add_member, methods=["POST"]),
    Route("/admin/groups/{group}/members/{name}/remove", remove_member, methods=["POST"]),
    Route("/admin/groups/{group}/delete", delete_group, methods=["GET", "POST"]),
    Route("/admin/audit", audit_page),
]
