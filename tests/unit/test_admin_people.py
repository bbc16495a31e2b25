"""The admin pages for users, groups, tokens and the audit log, in-process
(Starlette's TestClient on SQLite), signed in through the real /login form."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from aggregator.accounts import hash_password
from aggregator.config import Config, parse_config
from aggregator.store import Store
from aggregator.store.people import People
from tests.stores import store_url
from web import admin_people
from web.app import create_app
from web.auth import SESSION_COOKIE

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ADMIN_PASSWORD = "alice-password"
MEMBER_PASSWORD = "bob-password"


@dataclass
class Session:
    cookie: str
    csrf: str


class Browser:
    """One TestClient, several people: each request carries the session
    cookie of whoever makes it (or none), never the jar's leftovers."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def people(self) -> People:
        people: People = self.client.app.state.tidings.store.people  # type: ignore[attr-defined]
        return people

    def login(self, name: str, password: str) -> Session:
        response = self.sign_in(name, password)
        assert response.status_code == 303, response.text
        cookie = self.client.cookies[SESSION_COOKIE]
        session = Session(cookie, "")
        session.csrf = csrf_of(self.get(session, "/account").text)
        return session

    def sign_in(self, name: str, password: str) -> httpx.Response:
        self.client.cookies.clear()
        csrf = csrf_of(self.client.get("/login").text)
        data = {"csrf_token": csrf, "name": name, "password": password, "next": "/"}
        return self.client.post("/login", data=data, follow_redirects=False)

    def _headers(self, session: Session | None) -> dict[str, str]:
        self.client.cookies.clear()
        return {"cookie": f"{SESSION_COOKIE}={session.cookie}"} if session else {}

    def get(self, session: Session | None, path: str) -> httpx.Response:
        return self.client.get(path, headers=self._headers(session), follow_redirects=False)

    def post(
        self,
        session: Session | None,
        path: str,
        data: Mapping[str, str | list[str]] | None = None,
        *,
        csrf: bool = True,
    ) -> httpx.Response:
        form: dict[str, str | list[str]] = dict(data or {})
        if session and csrf:
            form["csrf_token"] = session.csrf
        return self.client.post(
            path, data=form, headers=self._headers(session), follow_redirects=False
        )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def field_error(html: str, field: str) -> str | None:
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    return found.group(1) if found else None


def user_row(html: str, name: str) -> str:
    found = re.search(rf'<tr id="user-{name}">.*?</tr>', html, re.S)
    assert found, html
    return found.group(0)


def new_token_of(html: str) -> str:
    found = re.search(r'<code id="new-token">([^<]+)</code>', html)
    assert found, html
    return found.group(1)


def make_config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
        }
    )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    config = make_config(tmp_path)
    store = Store(config.store_url)
    people = store.people
    people.create_user(
        "alice", password_hash=hash_password(ADMIN_PASSWORD), admin=True, actor="cli", now=NOW
    )
    people.create_user(
        "bob",
        password_hash=hash_password(MEMBER_PASSWORD),
        groups=["staff"],
        actor="cli",
        now=NOW,
    )
    store.close()
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield Browser(client)


@pytest.fixture
def alice(browser: Browser) -> Session:
    return browser.login("alice", ADMIN_PASSWORD)


@pytest.fixture
def bob(browser: Browser) -> Session:
    return browser.login("bob", MEMBER_PASSWORD)


def admin_paths() -> list[tuple[str, str]]:
    """Every (method, path) the module serves, with real names filled in."""
    values = {"name": "bob", "group": "staff", "token_id": "1"}
    found = []
    for route in admin_people.routes:
        assert isinstance(route, Route) and route.methods
        path = route.path
        for key, value in values.items():
            path = re.sub(r"\{" + key + r"(:\w+)?\}", value, path)
        found += [(m, path) for m in sorted(route.methods) if m in ("GET", "POST")]
    return found


def audit_actions(browser: Browser) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.target) for e in browser.people.audit_log(limit=500)]


# --- who may enter --------------------------------------------------------


def test_members_get_403_and_anonymous_is_sent_to_sign_in(
    browser: Browser, alice: Session, bob: Session
) -> None:
    paths = admin_paths()
    assert len(paths) >= 15
    before = audit_actions(browser)
    token = browser.people.create_token("bob", "script", actor="cli", now=NOW)
    for method, path in paths:
        data = {"name": "mallory", "password": "x" * 12, "repeat": "x" * 12, "group": "g"}
        as_member = browser.get(bob, path) if method == "GET" else browser.post(bob, path, data)
        assert as_member.status_code == 403, (method, path)
        assert as_member.text == "admins only"
        browser.client.cookies.clear()
        bearer = {"authorization": f"Bearer {token}"}
        if method == "GET":
            with_token = browser.client.get(path, headers=bearer)
        else:
            with_token = browser.client.post(path, data=data, headers=bearer)
        assert with_token.status_code == 403, (method, path)
        anonymous = browser.get(None, path) if method == "GET" else browser.post(None, path, data)
        assert anonymous.status_code == 303, (method, path)
        assert anonymous.headers["location"].startswith("/login?next=")
    assert audit_actions(browser)[1:] == before  # only the token made above
    assert [u.name for u in browser.people.users()] == ["alice", "bob"]
    assert browser.people.user("bob").groups == {"staff"}  # type: ignore[union-attr]
    assert browser.get(alice, "/admin/users").status_code == 200


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: Browser, alice: Session
) -> None:
    before = audit_actions(browser)
    data = {"name": "carol", "password": "carol-password", "repeat": "carol-password"}
    assert browser.post(alice, "/admin/users", data, csrf=False).status_code == 403
    forged = browser.post(alice, "/admin/users", {**data, "csrf_token": "forged"}, csrf=False)
    assert forged.status_code == 403
    assert browser.post(alice, "/admin/groups", {"group": "x"}, csrf=False).status_code == 403
    assert browser.post(alice, "/admin/users/bob/delete", csrf=False).status_code == 403
    assert browser.post(alice, "/admin/users/bob", {"admin": "on"}, csrf=False).status_code == 403
    assert [u.name for u in browser.people.users()] == ["alice", "bob"]
    assert not browser.people.user("bob").is_admin  # type: ignore[union-attr]
    assert "x" not in browser.people.groups()
    assert audit_actions(browser) == before


def test_notices_are_fixed_texts_never_echoed_from_the_url(
    browser: Browser, alice: Session
) -> None:
    shown = browser.get(alice, "/admin/users?notice=user-created").text
    assert '<p class="notice" role="status">User created.</p>' in shown
    odd = browser.get(alice, "/admin/users?notice=Your+account+is+locked").text
    assert "locked" not in odd and 'class="notice"' not in odd


# --- users ----------------------------------------------------------------


def test_bad_user_input_gets_messages_next_to_the_fields_and_creates_nothing(
    browser: Browser, alice: Session
) -> None:
    before = audit_actions(browser)
    page = browser.post(
        alice,
        "/admin/users",
        {"name": "no spaces!", "password": "short", "repeat": "other", "new_groups": "ok, b@d"},
    )
    assert page.status_code == 400
    assert "user name is 1-64" in (field_error(page.text, "name") or "")
    assert "at least 8 characters" in (field_error(page.text, "password") or "")
    assert field_error(page.text, "repeat") == "The two passwords differ."
    assert "group name is 1-64" in (field_error(page.text, "new_groups") or "")
    assert 'value="no spaces!"' in page.text and 'value="ok, b@d"' in page.text
    assert 'aria-invalid="true" aria-describedby="name-error"' in page.text
    assert 'value="short"' not in page.text  # passwords are never sent back

    mismatch = browser.post(
        alice,
        "/admin/users",
        {"name": "carol", "password": "carol-password", "repeat": "carol-passw0rd"},
    )
    assert mismatch.status_code == 400
    assert field_error(mismatch.text, "repeat") and not field_error(mismatch.text, "name")

    taken = browser.post(
        alice, "/admin/users", {"name": "BOB", "password": "x" * 10, "repeat": "x" * 10}
    )
    assert taken.status_code == 400
    assert "already exists" in (field_error(taken.text, "name") or "")

    assert [u.name for u in browser.people.users()] == ["alice", "bob"]
    assert set(browser.people.groups()) == {"staff"}
    assert audit_actions(browser) == before


def test_create_a_user_with_a_new_group_who_then_signs_in(browser: Browser, alice: Session) -> None:
    data: dict[str, str | list[str]] = {
        "name": "carol",
        "password": "carol-password",
        "repeat": "carol-password",
        "groups": ["staff"],
        "new_groups": "legal, partners",
    }
    created = browser.post(alice, "/admin/users", data)
    assert created.status_code == 303
    assert created.headers["location"] == "/admin/users?notice=user-created"
    listing = browser.get(alice, created.headers["location"]).text
    row = user_row(listing, "carol")
    assert "<td>legal, partners, staff</td>" in row and "<td>member</td>" in row
    assert "active" in row
    carol = browser.people.user("carol")
    assert carol is not None and carol.groups == {"staff", "legal", "partners"}
    assert not carol.is_admin
    assert browser.sign_in("carol", "carol-password").status_code == 303
    assert ("alice", "user.create", "carol") in audit_actions(browser)
    assert ("alice", "group.create", "legal") in audit_actions(browser)

    admin = browser.post(
        alice,
        "/admin/users",
        {"name": "dave", "password": "dave-password", "repeat": "dave-password", "admin": "on"},
    )
    assert admin.status_code == 303 and browser.people.user("dave").is_admin  # type: ignore[union-attr]


def test_change_groups_and_role(browser: Browser, alice: Session) -> None:
    browser.people.create_group("legal", actor="cli", now=NOW)
    page = browser.get(alice, "/admin/users/bob")
    assert page.status_code == 200
    assert 'id="f-group-staff" name="groups" value="staff" checked' in page.text
    assert 'id="f-group-legal" name="groups" value="legal">' in page.text

    saved = browser.post(alice, "/admin/users/bob", {"groups": ["legal"], "new_groups": "ops"})
    assert saved.status_code == 303
    assert saved.headers["location"] == "/admin/users/bob?notice=user-saved"
    assert browser.people.user("bob").groups == {"legal", "ops"}  # type: ignore[union-attr]
    assert browser.people.groups()["staff"] == []

    bad = browser.post(alice, "/admin/users/bob", {"groups": ["legal"], "new_groups": "no way"})
    assert bad.status_code == 400 and field_error(bad.text, "new_groups")
    assert browser.people.user("bob").groups == {"legal", "ops"}  # type: ignore[union-attr]

    promoted = browser.post(alice, "/admin/users/bob", {"admin": "on", "groups": ["legal", "ops"]})
    assert promoted.status_code == 303 and browser.people.user("bob").is_admin  # type: ignore[union-attr]
    entry = browser.people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.target, entry.detail) == (
        "alice",
        "user.update",
        "bob",
        {"role": "admin"},  # only what changed
    )
    assert browser.get(alice, "/admin/users/nobody").status_code == 404


def test_disabling_a_user_ends_their_session_and_tokens(
    browser: Browser, alice: Session, bob: Session
) -> None:
    made = browser.post(alice, "/admin/users/bob/tokens", {"token_name": "script"})
    token = new_token_of(made.text)
    bearer = {"authorization": f"Bearer {token}"}
    assert browser.client.get("/api/events", headers=bearer).status_code == 200
    assert browser.get(bob, "/account").status_code == 200

    disabled = browser.post(alice, "/admin/users/bob", {"disabled": "on", "groups": ["staff"]})
    assert disabled.status_code == 303
    after = browser.get(bob, "/account")
    assert after.status_code == 303 and after.headers["location"].startswith("/login")
    assert browser.client.get("/api/events", headers=bearer).status_code == 401
    assert browser.sign_in("bob", MEMBER_PASSWORD).status_code == 400
    assert "disabled" in browser.get(alice, "/admin/users").text

    browser.post(alice, "/admin/users/bob", {"groups": ["staff"]})  # enable again
    assert browser.client.get("/api/events", headers=bearer).status_code == 200
    assert browser.get(bob, "/account").status_code == 303  # that session stays ended
    assert browser.sign_in("bob", MEMBER_PASSWORD).status_code == 303
    detail = [e.detail for e in browser.people.audit_log(limit=5) if e.action == "user.update"]
    assert {"disabled": False} in detail and {"disabled": True} in detail


def test_reset_password_and_sign_out_everywhere(
    browser: Browser, alice: Session, bob: Session
) -> None:
    bad = browser.post(alice, "/admin/users/bob/password", {"password": "short", "repeat": "x"})
    assert bad.status_code == 400
    assert field_error(bad.text, "password") and field_error(bad.text, "repeat")
    assert browser.get(bob, "/account").status_code == 200  # nothing changed

    reset = browser.post(
        alice, "/admin/users/bob/password", {"password": "new-password", "repeat": "new-password"}
    )
    assert reset.status_code == 303
    assert browser.get(bob, "/account").status_code == 303
    assert browser.sign_in("bob", MEMBER_PASSWORD).status_code == 400
    again = browser.login("bob", "new-password")
    assert browser.get(again, "/account").status_code == 200
    entry = browser.people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.detail) == (
        "alice",
        "user.update",
        {"password_changed": True},
    )

    assert browser.post(alice, "/admin/users/bob/sign-out").status_code == 303
    assert browser.get(again, "/account").status_code == 303
    assert browser.people.audit_log(limit=1)[0].detail == {"signed_out": True}

    # An admin resetting their own password stays signed in here.
    own = browser.post(
        alice, "/admin/users/alice/password", {"password": "alice-new-pw", "repeat": "alice-new-pw"}
    )
    assert own.status_code == 303
    assert browser.get(alice, "/admin/users").status_code == 200  # this session goes on


def test_a_token_is_shown_once_works_and_can_be_revoked(browser: Browser, alice: Session) -> None:
    empty = browser.post(alice, "/admin/users/bob/tokens", {"token_name": "  "})
    assert empty.status_code == 400 and field_error(empty.text, "token_name")
    assert browser.people.tokens("bob") == []

    made = browser.post(alice, "/admin/users/bob/tokens", {"token_name": "<b>deploy</b>"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = new_token_of(made.text)
    assert "&lt;b&gt;deploy&lt;/b&gt;" in made.text and "<b>deploy" not in made.text
    later = browser.get(alice, "/admin/users/bob").text
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert token not in later and digest not in later and digest not in made.text
    assert "&lt;b&gt;deploy&lt;/b&gt;" in later
    assert "<td>1</td>" in user_row(browser.get(alice, "/admin/users").text, "bob")

    bearer = {"authorization": f"Bearer {token}"}
    assert browser.client.get("/api/events", headers=bearer).status_code == 200
    (listed,) = browser.people.tokens("bob")
    revoked = browser.post(alice, f"/admin/users/bob/tokens/{listed.id}/revoke")
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/admin/users/bob?notice=token-revoked"
    assert browser.client.get("/api/events", headers=bearer).status_code == 401
    gone = browser.post(alice, f"/admin/users/bob/tokens/{listed.id}/revoke")
    assert gone.status_code == 400 and "no token" in gone.text
    actions = audit_actions(browser)
    assert ("alice", "token.create", "bob") in actions
    assert ("alice", "token.revoke", "bob") in actions


def test_delete_a_user_after_confirming(browser: Browser, alice: Session, bob: Session) -> None:
    confirm = browser.get(alice, "/admin/users/bob/delete")
    assert confirm.status_code == 200 and 'action="/admin/users/bob/delete"' in confirm.text
    assert browser.people.user("bob") is not None  # asking changes nothing
    deleted = browser.post(alice, "/admin/users/bob/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/admin/users?notice=user-deleted"
    assert browser.people.user("bob") is None
    assert browser.get(bob, "/account").status_code == 303
    assert browser.people.groups()["staff"] == []
    assert ("alice", "user.delete", "bob") in audit_actions(browser)
    assert browser.post(alice, "/admin/users/bob/delete").status_code == 404


def test_the_last_admin_cannot_be_demoted_disabled_or_deleted(
    browser: Browser, alice: Session
) -> None:
    before = audit_actions(browser)
    for path, data in [
        ("/admin/users/alice", {}),
        ("/admin/users/alice", {"admin": "on", "disabled": "on"}),
        ("/admin/users/alice/delete", {}),
    ]:
        refused = browser.post(alice, path, data)
        assert refused.status_code == 400, path
        assert '<p class="error" role="alert">this is the last admin' in refused.text
    alice_now = browser.people.user("alice")
    assert alice_now is not None and alice_now.is_admin and not alice_now.disabled
    assert audit_actions(browser) == before
    assert browser.get(alice, "/admin/users").status_code == 200


# --- groups ---------------------------------------------------------------


def test_groups_create_members_and_delete(browser: Browser, alice: Session, bob: Session) -> None:
    page = browser.get(alice, "/admin/groups")
    assert page.status_code == 200 and '<tr id="group-staff">' in page.text

    bad = browser.post(alice, "/admin/groups", {"group": "no way"})
    assert bad.status_code == 400 and "group name is 1-64" in (field_error(bad.text, "group") or "")
    reserved = browser.post(alice, "/admin/groups", {"group": "everyone"})
    assert reserved.status_code == 400 and field_error(reserved.text, "group")
    dup = browser.post(alice, "/admin/groups", {"group": "Staff"})
    assert dup.status_code == 400 and "already exists" in (field_error(dup.text, "group") or "")
    assert set(browser.people.groups()) == {"staff"}

    made = browser.post(alice, "/admin/groups", {"group": "legal"})
    assert (
        made.status_code == 303 and made.headers["location"] == "/admin/groups?notice=group-created"
    )
    assert browser.people.groups()["legal"] == []

    added = browser.post(alice, "/admin/groups/legal/members", {"user": "bob"})
    assert added.status_code == 303
    assert browser.people.user("bob").groups == {"staff", "legal"}  # type: ignore[union-attr]
    nobody = browser.post(alice, "/admin/groups/legal/members", {"user": "nobody"})
    assert nobody.status_code == 400 and "no user" in (field_error(nobody.text, "member") or "")
    missing = browser.post(alice, "/admin/groups/ghosts/members", {"user": "bob"})
    assert missing.status_code == 404 and "ghosts" not in browser.people.groups()

    odd = browser.post(alice, "/admin/groups/staff/members/Call%20the%20helpdesk/remove")
    assert odd.status_code == 404 and "helpdesk" not in odd.text
    removed = browser.post(alice, "/admin/groups/staff/members/bob/remove")
    assert removed.status_code == 303
    assert browser.people.user("bob").groups == {"legal"}  # type: ignore[union-attr]

    confirm = browser.get(alice, "/admin/groups/legal/delete")
    assert confirm.status_code == 200 and "bob" in confirm.text
    assert "legal" in browser.people.groups()
    deleted = browser.post(alice, "/admin/groups/legal/delete")
    assert deleted.status_code == 303
    assert set(browser.people.groups()) == {"staff"}
    assert browser.people.user("bob").groups == frozenset()  # type: ignore[union-attr]
    assert browser.get(alice, "/admin/groups/legal/delete").status_code == 404

    actions = audit_actions(browser)
    for expected in [
        ("alice", "group.create", "legal"),
        ("alice", "group.add_member", "legal"),
        ("alice", "group.remove_member", "staff"),
        ("alice", "group.delete", "legal"),
    ]:
        assert expected in actions


# --- audit log ------------------------------------------------------------


def test_audit_log_shows_who_what_when_escaped_and_paged(browser: Browser, alice: Session) -> None:
    browser.post(alice, "/admin/users/bob", {"groups": ["staff", "legal"]})
    browser.post(alice, "/admin/users/bob/tokens", {"token_name": "<script>x</script>"})
    page = browser.get(alice, "/admin/audit")
    assert page.status_code == 200
    rows = re.findall(r'<tr id="audit-(\d+)">(.*?)</tr>', page.text, re.S)
    newest = rows[0][1]
    assert "<td>alice</td>" in newest and "token.create" in newest and "<td>bob</td>" in newest
    assert "name: &lt;script&gt;x&lt;/script&gt;" in newest and "<script>x" not in page.text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+\+00:00">', newest)
    update = next(r for _, r in rows if "user.update" in r)
    assert "groups: staff, legal" in update
    ids = [int(i) for i, _ in rows]
    assert ids == sorted(ids, reverse=True)

    for i in range(60):
        browser.people.create_group(f"g{i:02}", actor="cli", now=NOW + timedelta(seconds=i))
    first = browser.get(alice, "/admin/audit").text
    first_ids = [int(i) for i in re.findall(r'<tr id="audit-(\d+)">', first)]
    assert len(first_ids) == 50 and "group.create" in first and "<td>cli</td>" in first
    older = re.search(r'href="/admin/audit\?before=(\d+)"', first)
    assert older and int(older.group(1)) == first_ids[-1]
    second = browser.get(alice, f"/admin/audit?before={older.group(1)}").text
    second_ids = [int(i) for i in re.findall(r'<tr id="audit-(\d+)">', second)]
    assert second_ids and max(second_ids) < min(first_ids)
    assert len(first_ids) + len(second_ids) == len(browser.people.audit_log(limit=500))
    assert "before=" not in second  # the last page
    assert browser.get(alice, "/admin/audit?before=junk").status_code == 200


# --- setup mode -----------------------------------------------------------


def test_setup_mode_administers_nothing(tmp_path: Path) -> None:
    """Before any account exists a loopback client may read, never administer:
    a bare reverse proxy looks just like it. The first admin comes from the CLI."""
    config = make_config(tmp_path)
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        assert client.get("/api/events").status_code == 200
        assert client.get("/admin/users").status_code == 403
        csrf = csrf_of(client.get("/login").text)
        data = {"csrf_token": csrf, "name": "root", "password": "root-password"}
        made = client.post("/admin/users", data={**data, "repeat": "root-password", "admin": "on"})
        assert made.status_code == 403
        people: People = client.app.state.tidings.store.people  # type: ignore[attr-defined]
        assert people.users() == [] and people.audit_log() == []
