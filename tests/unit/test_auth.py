"""Authentication in-process (Starlette's TestClient on SQLite): setup mode,
sign-in, sessions, CSRF, rate limits, the SSO proxy header, API tokens, the
headers and limits every response carries, and the guard on every route."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

import web.login
from aggregator.accounts import hash_password, token_hash
from aggregator.bus import Bus, EventTail
from aggregator.config import parse_config
from aggregator.decide import prepare
from aggregator.filters import EventFilter
from aggregator.store import Store
from aggregator.store.people import People
from aggregator.types import Event, EventData
from tests.stores import store_url
from web.app import create_app
from web.auth import SESSION_COOKIE
from web.live import LiveConnection, Stream
from web.state import AppState

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PASSWORD = "s3cret-enough"
PEER = "x-test-peer"  # set by PeerFromHeader; lets one TestClient come from many addresses
LOOPBACK = "127.0.0.1"
REMOTE = "10.1.2.3"


class PeerFromHeader:
    """Test wrapper: the client address comes from a request header, so one
    app (one lifespan) can be called from loopback, a proxy and elsewhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            peer = headers.get(PEER.encode())
            if peer is not None:
                scope["client"] = (peer.decode(), 50000)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != PEER.encode()]
        await self.app(scope, receive, send)


def peer(address: str) -> dict[str, str]:
    return {PEER: address}


@dataclass
class Site:
    client: TestClient
    app: Starlette
    db: Path

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.tidings
        return state

    @property
    def people(self) -> People:
        return self.state.store.people

    def reload(self) -> None:
        """Apply a change made through `people` (requests would notice it too)."""
        assert self.client.portal is not None
        self.client.portal.call(self.state.access.reload)


_hashed: list[str] = []


def password_hash() -> str:
    if not _hashed:
        _hashed.append(hash_password(PASSWORD))
    return _hashed[0]


@pytest.fixture(autouse=True)
def fresh_login_limiter() -> Iterator[None]:
    """The sign-in limiter is per process: no test may see another's failures."""
    web.login._limiter.storage.reset()
    yield
    web.login._limiter.storage.reset()


MakeSite = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[MakeSite]:
    """An app with users `ada` (admin) and `max` (member of legal), unless
    `users=False`; requests come from `default_peer` unless they say otherwise."""
    stack = ExitStack()
    count = [0]

    def make(
        *,
        users: bool = True,
        auth: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        base_url: str = "http://testserver",
        default_peer: str = LOOPBACK,
    ) -> Site:
        count[0] += 1
        db = tmp_path / f"site{count[0]}.db"
        config = parse_config(
            {
                "store": {"url": store_url(tmp_path, db.stem)},
                "server": {"allowed_hosts": ["testserver"], **(server or {})},
                "poller": {"enabled": False},
                "auth": auth or {},
                "sources": [
                    {"id": "pub", "kind": "feed", "url": "https://e.org/p"},
                    {"id": "sec", "kind": "feed", "url": "https://e.org/s", "audience": ["legal"]},
                ],
            }
        )
        store = Store(config.store_url)
        store.sync_sources(config.sources, NOW)
        for src in config.sources:
            item = EventData(external_id=f"{src.id}-1", title=f"{src.id} news")
            store.record_poll(src, prepare([item]), state=None, now=NOW, next_poll_at=NOW)
        if users:
            for name, admin, groups in (("ada", True, []), ("max", False, ["legal"])):
                store.people.create_user(
                    name,
                    password_hash=password_hash(),
                    admin=admin,
                    groups=groups,
                    actor="test",
                    now=NOW,
                )
        store.close()
        app = create_app(config)
        client = TestClient(
            PeerFromHeader(app),
            base_url=base_url,
            follow_redirects=False,
            headers=peer(default_peer),
        )
        stack.enter_context(client)
        return Site(client, app, db)

    with stack:
        yield make


@pytest.fixture
def site(make_site: MakeSite) -> Site:
    return make_site()


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD, **kw: Any) -> httpx2.Response:
    token = csrf_from(client.get("/login", **kw).text)
    return client.post(
        "/login", data={"name": name, "password": password, "csrf_token": token}, **kw
    )


def signed_in(client: TestClient, name: str) -> str:
    """Sign in on a fresh cookie jar; the session cookie's value."""
    client.cookies.clear()
    res = sign_in(client, name)
    assert res.status_code == 303, res.text
    return client.cookies[SESSION_COOKIE]


def use_session(client: TestClient, value: str) -> None:
    """Make `client` the browser holding session cookie `value`."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value, domain="testserver.local")


def new_session(site: Site, user_id: int) -> str:
    """A session made in the store, as a sign-in would; the hash of its key."""
    key = site.people.create_session(user_id, now=datetime.now(UTC), lifetime=timedelta(days=1))
    site.reload()
    return token_hash(key)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_refusal(client: TestClient, **kw: Any) -> int:
    """The status of the refused /ws handshake."""
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws", **kw):
        pass
    return denied.value.status_code


def set_cookie(res: httpx2.Response) -> str:
    [cookie] = [c for c in res.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    return cookie.lower()


# --- setup mode ------------------------------------------------------------------


def test_setup_mode_is_for_loopback_clients_of_an_instance_without_accounts(
    make_site: MakeSite,
) -> None:
    site = make_site(users=False)
    get = site.client.get
    for address in (LOOPBACK, "::1"):
        assert get("/api/events", headers=peer(address)).status_code == 200
        assert get("/metrics", headers=peer(address)).status_code == 200
        # It sees everything but administers nothing: a bare proxy_pass from
        # the internet looks just like it. The first admin comes from the CLI.
        assert get("/admin/sources", headers=peer(address)).status_code == 403
    assert get("/api/events", headers=peer(REMOTE)).status_code == 401
    assert get("/api/events", headers=peer("testclient")).status_code == 401
    for forwarded in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "Via", "X-Forwarded-Host"):
        # A loopback peer forwarding for someone else is a reverse proxy.
        res = get("/api/events", headers={forwarded: "203.0.113.9"})
        assert res.status_code == 401, forwarded
    with site.client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}

    site.people.create_user("first", password_hash=None, admin=True, actor="t", now=NOW)
    assert get("/api/events").status_code == 401  # setup mode is over
    assert ws_refusal(site.client) == 401


# --- signing in ----------------------------------------------------------------------


def test_sign_in_sets_a_session_that_works_on_pages_api_and_websocket(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    assert client.get("/api/events").status_code == 401
    assert client.get("/account").status_code == 303
    res = sign_in(client, "max")
    assert res.status_code == 303 and res.headers["location"] == "/"
    events = client.get("/api/events").json()["events"]
    assert {e["source_id"] for e in events} == {"pub", "sec"}
    assert ">max<" in client.get("/account").text
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "subscribe", "stream": "s", "query": "", "cursor": 0})
        assert ws.receive_json()["type"] == "subscribed"
        assert {ws.receive_json()["event"]["source_id"] for _ in range(2)} == {"pub", "sec"}


def test_a_wrong_password_or_unknown_user_gets_the_same_answer(site: Site) -> None:
    wrong = sign_in(site.client, "max", "not-the-password")
    unknown = sign_in(site.client, "nobody", PASSWORD)
    for res in (wrong, unknown):
        assert res.status_code == 400
        assert "Wrong user name or password." in res.text
        assert SESSION_COOKIE not in site.client.cookies or "uid" not in _session(site.client)
    assert site.client.get("/api/events", headers=peer(REMOTE)).status_code == 401


def _session(client: TestClient) -> dict[str, Any]:
    """The (signed, not secret) data in the session cookie."""
    payload = client.cookies[SESSION_COOKIE].split(".")[0]
    data: dict[str, Any] = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return data


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/path",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "",
    ],
)
def test_sign_in_never_redirects_off_site(site: Site, target: str) -> None:
    page = site.client.get("/login", params={"next": target})
    res = site.client.post(
        "/login",
        data={
            "name": "max",
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
            "next": target,
        },
    )
    assert res.status_code == 303
    assert resolves_here(res.headers["location"]), res.headers["location"]


def resolves_here(location: str) -> bool:
    """Whether a browser following `location` stays on this site (browsers
    drop tabs and newlines from URLs and treat a backslash as a slash)."""
    cleaned = re.sub(r"[\t\n\r]", "", location).strip().replace("\\", "/")
    resolved = urlsplit(urljoin("https://testserver/login", cleaned))
    return resolved.scheme == "https" and resolved.netloc == "testserver"


def test_sign_in_goes_back_to_the_page_that_asked(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    asked = client.get("/account", params={"tab": "tokens"})
    assert asked.status_code == 303 and asked.headers["location"].startswith("/login?next=")
    page = client.get(asked.headers["location"])
    res = client.post(
        "/login",
        data={
            "name": "max",
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
            "next": "/account?tab=tokens",
        },
    )
    assert res.headers["location"] == "/account?tab=tokens"


def test_session_cookie_flags(make_site: MakeSite) -> None:
    plain = make_site()
    cookie = set_cookie(sign_in(plain.client, "max"))
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    tls = make_site(base_url="https://testserver")
    cookie = set_cookie(sign_in(tls.client, "max"))
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie


def test_sign_in_starts_a_new_session(site: Site) -> None:
    client = site.client
    client.get("/login")
    before = _session(client)
    sign_in(client, "max")
    after = _session(client)
    assert after["key"] and after["csrf"] != before["csrf"]


# --- CSRF ----------------------------------------------------------------------------


def test_cookie_requests_that_change_things_need_the_csrf_token(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "max")
    token = csrf_from(client.get("/account").text)
    assert client.post("/account/tokens", data={"token_name": "a"}).status_code == 403
    res = client.post("/account/tokens", data={"token_name": "a", "csrf_token": "forged"})
    assert res.status_code == 403
    res = client.post("/account/tokens", data={"token_name": "a", "csrf_token": token})
    assert res.status_code == 200 and 'id="new-token"' in res.text
    res = client.post("/account/tokens", data={"token_name": "b"}, headers={"X-CSRF-Token": token})
    assert res.status_code == 200
    assert client.post("/logout").status_code == 403
    assert client.get("/api/events").status_code == 200  # still signed in
    res = client.post("/logout", data={"csrf_token": token})
    assert res.status_code == 303 and res.headers["location"] == "/login"
    assert client.get("/api/events").status_code == 401


def test_a_csrf_token_of_another_session_is_refused(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "ada")
    other = csrf_from(client.get("/account").text)
    signed_in(client, "max")
    assert client.post("/logout", data={"csrf_token": other}).status_code == 403


def test_sign_in_itself_needs_the_form_token(site: Site) -> None:
    # Login CSRF: another site must not sign the browser in as someone else.
    res = site.client.post("/login", data={"name": "max", "password": PASSWORD})
    assert res.status_code == 403


def test_bearer_requests_need_no_csrf_token(site: Site) -> None:
    token = site.people.create_token("max", "script", actor="t", now=NOW)
    res = site.client.post(
        "/account/tokens", data={"token_name": "another"}, headers=bearer(token) | peer(REMOTE)
    )
    assert res.status_code == 200 and 'id="new-token"' in res.text


# --- rate limit ----------------------------------------------------------------------


def test_failed_sign_ins_are_limited_per_name(make_site: MakeSite) -> None:
    site = make_site(auth={"login_limit": "3/minute"})
    for n in range(3):
        assert sign_in(site.client, "max", "wrong", headers=peer(f"10.0.0.{n}")).status_code == 400
    # Even the right password, from yet another address: the name is locked.
    res = sign_in(site.client, "max", headers=peer("10.0.0.99"))
    assert res.status_code == 429 and "Too many failed attempts" in res.text
    assert sign_in(site.client, "MAX", headers=peer("10.0.0.98")).status_code == 429
    # Another name from those addresses is not.
    assert sign_in(site.client, "ada", headers=peer("10.0.0.0")).status_code == 303


def test_failed_sign_ins_are_limited_per_address(make_site: MakeSite) -> None:
    site = make_site(auth={"login_limit": "3/minute"})
    for name in ("x1", "x2", "x3"):
        assert sign_in(site.client, name, "wrong", headers=peer(REMOTE)).status_code == 400
    assert sign_in(site.client, "max", headers=peer(REMOTE)).status_code == 429
    assert sign_in(site.client, "max", headers=peer("10.9.9.9")).status_code == 303


def test_successful_sign_ins_are_not_limited(make_site: MakeSite) -> None:
    site = make_site(auth={"login_limit": "2/minute"})
    for _ in range(4):
        site.client.cookies.clear()
        assert sign_in(site.client, "max").status_code == 303


# --- sessions that end -------------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    first = signed_in(client, "max")
    second = signed_in(client, "max")
    token = csrf_from(client.get("/account").text)
    form = {"csrf_token": token, "current": "wrong-one", "password": "n3w-passw0rd"}
    res = client.post("/account/password", data=form | {"repeat": "n3w-passw0rd"})
    assert res.status_code == 400 and "not your current password" in res.text
    form["current"] = PASSWORD
    res = client.post("/account/password", data=form | {"repeat": "n3w-passw0rd"})
    assert res.status_code == 303 and res.headers["location"] == "/account?changed=password"
    assert client.get("/api/events").status_code == 200  # this session goes on
    second = client.cookies[SESSION_COOKIE]  # with the new epoch
    use_session(client, first)
    assert client.get("/api/events").status_code == 401
    assert client.get("/").status_code == 303
    client.cookies.clear()
    assert sign_in(client, "max").status_code == 400
    assert sign_in(client, "max", "n3w-passw0rd").status_code == 303
    use_session(client, second)
    assert client.get("/api/events").status_code == 200


def test_sign_out_everywhere_ends_every_session(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    first = signed_in(client, "max")
    second = signed_in(client, "max")
    token = csrf_from(client.get("/account").text)
    res = client.post("/account/sign-out-everywhere", data={"csrf_token": token})
    assert res.status_code == 303 and res.headers["location"] == "/login"
    for session in (first, second):
        use_session(client, session)
        assert client.get("/api/events").status_code == 401


def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    other = signed_in(client, "max")  # another browser of max's
    copy = signed_in(client, "max")
    with client.websocket_connect("/ws") as ws:
        token = csrf_from(client.get("/account").text)
        assert client.post("/logout", data={"csrf_token": token}).status_code == 303
        ws.send_json({"type": "ping"})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    use_session(client, copy)  # a copy of the cookie taken before signing out
    assert client.get("/api/events").status_code == 401
    use_session(client, other)  # the other browser stays signed in
    assert client.get("/api/events").status_code == 200


def test_a_new_user_never_inherits_a_deleted_users_session(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    old = signed_in(client, "max")
    max_id = site.people.user("max").id  # type: ignore[union-attr]
    site.people.delete_user("max", actor="ada", now=NOW)
    eve = site.people.create_user("eve", password_hash=None, admin=True, actor="ada", now=NOW)
    assert eve.id != max_id  # ids are never reused
    use_session(client, old)
    assert client.get("/api/events").status_code == 401
    assert client.get("/admin/users").status_code == 303


def test_a_non_ascii_csrf_token_is_refused_not_a_crash(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "max")
    res = client.post("/account/tokens", data={"csrf_token": "é" * 43, "token_name": "x"})
    assert res.status_code == 403


def test_a_disabled_users_session_and_tokens_stop_working(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    session = signed_in(client, "max")
    token = site.people.create_token("max", "script", actor="t", now=NOW)
    assert client.get("/api/events", headers=bearer(token)).status_code == 200
    site.people.update_user("max", disabled=True, actor="ada", now=NOW)
    use_session(client, session)
    assert client.get("/api/events").status_code == 401
    assert client.get("/api/events", headers=bearer(token)).status_code == 401
    assert ws_refusal(client, headers=bearer(token)) == 401
    # Enabling the user again does not bring the old session back.
    site.people.update_user("max", disabled=False, actor="ada", now=NOW)
    assert client.get("/api/events").status_code == 401
    assert client.get("/api/events", headers=bearer(token)).status_code == 200


def test_a_wrong_token_is_not_rescued_by_a_good_cookie(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "max")
    assert client.get("/api/events").status_code == 200
    assert client.get("/api/events", headers=bearer("tid_wrong")).status_code == 401


# --- the SSO proxy header ------------------------------------------------------------


PROXY = {"proxy_header": "X-Remote-User", "trusted_proxies": [LOOPBACK]}


def test_the_proxy_header_is_trusted_only_from_trusted_proxies(make_site: MakeSite) -> None:
    site = make_site(auth=PROXY)
    get = site.client.get
    as_max = {"X-Remote-User": "max"}
    events = get("/api/events", headers=as_max | peer(LOOPBACK)).json()["events"]
    assert {e["source_id"] for e in events} == {"pub", "sec"}
    assert get("/api/events", headers=as_max | peer(REMOTE)).status_code == 401
    assert get("/api/events", headers=as_max | peer("127.0.0.2")).status_code == 401
    unknown = {"X-Remote-User": "stranger"}
    assert get("/api/events", headers=unknown | peer(LOOPBACK)).status_code == 401
    assert site.people.user("stranger") is None
    site.people.update_user("max", disabled=True, actor="ada", now=NOW)
    assert get("/api/events", headers=as_max | peer(LOOPBACK)).status_code == 401


def test_the_proxy_may_create_members(make_site: MakeSite) -> None:
    site = make_site(auth=PROXY | {"proxy_creates_users": True})
    res = site.client.get("/api/events", headers={"X-Remote-User": "newbie"})
    assert res.status_code == 200
    assert {e["source_id"] for e in res.json()["events"]} == {"pub"}  # everyone, nothing more
    user = site.people.user("newbie")
    assert user is not None and not user.is_admin and not user.has_password
    assert not user.groups
    bad = site.client.get("/api/events", headers={"X-Remote-User": "not a name!"})
    assert bad.status_code == 401


def test_the_proxy_creates_no_member_before_an_admin_exists(make_site: MakeSite) -> None:
    site = make_site(users=False, auth=PROXY | {"proxy_creates_users": True})
    res = site.client.get("/api/events", headers={"X-Remote-User": "first"})
    assert res.status_code == 401
    assert site.people.user("first") is None


def test_tls_ended_at_a_trusted_proxy_makes_the_cookie_secure(make_site: MakeSite) -> None:
    site = make_site(auth=PROXY)
    https = {"X-Forwarded-Proto": "https"}
    # The sign-in page starts a session (for its CSRF token): look at that cookie.
    assert "secure" in set_cookie(site.client.get("/login", headers=https))
    site.client.cookies.clear()
    untrusted = https | peer(REMOTE)
    assert "secure" not in set_cookie(site.client.get("/login", headers=untrusted))


def test_behind_a_trusted_proxy_failed_sign_ins_count_per_real_client(
    make_site: MakeSite,
) -> None:
    site = make_site(auth=PROXY | {"login_limit": "3/minute"})
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for name in ("x1", "x2", "x3"):
        assert sign_in(site.client, name, "wrong", headers=attacker).status_code == 400
    assert sign_in(site.client, "max", headers=attacker).status_code == 429
    # Others behind the same proxy are not locked out with the attacker.
    colleague = {"X-Forwarded-For": "198.51.100.7"}
    assert sign_in(site.client, "max", headers=colleague).status_code == 303
    # From an untrusted peer the header is ignored: it cannot dodge the limit.
    for n in range(3):
        spoof = {"X-Forwarded-For": f"192.0.2.{n}"} | peer(REMOTE)
        assert sign_in(site.client, f"y{n}", "wrong", headers=spoof).status_code == 400
    assert sign_in(site.client, "ada", headers=peer(REMOTE)).status_code == 429


def test_proxy_authenticated_changes_need_the_csrf_token(make_site: MakeSite) -> None:
    # The browser authenticates to the proxy by itself (SSO cookie, Kerberos),
    # like a cookie: another site's form must not ride on it.
    site = make_site(auth=PROXY)
    as_max = {"X-Remote-User": "max"}
    res = site.client.post("/account/tokens", data={"token_name": "x"}, headers=as_max)
    assert res.status_code == 403
    token = csrf_from(site.client.get("/account", headers=as_max).text)
    res = site.client.post(
        "/account/tokens", data={"token_name": "x", "csrf_token": token}, headers=as_max
    )
    assert res.status_code == 200 and 'id="new-token"' in res.text


# --- limits and headers ----------------------------------------------------------------


def test_request_bodies_over_the_limit_are_refused(make_site: MakeSite) -> None:
    site = make_site(server={"max_request_bytes": 2048})
    client = site.client
    token = csrf_from(client.get("/login").text)
    big = {"name": "max", "password": "x" * 5000, "csrf_token": token}
    assert client.post("/login", data=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield f"csrf_token={token}&name=max&password=".encode()
        for _ in range(10):
            yield b"x" * 1000

    res = client.post(
        "/login",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert res.status_code == 413
    assert sign_in(client, "max").status_code == 303  # small bodies pass


def test_every_page_carries_the_security_headers(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    responses = [client.get("/login"), client.get("/api/events"), client.get("/nope")]
    signed_in(client, "max")
    responses += [client.get("/"), client.get("/account"), client.get("/api/sources")]
    for res in responses:
        headers = res.headers
        directives = {
            d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split("; ")
        }
        assert directives["script-src"] == ["'self'"], res.url
        assert "'unsafe-inline'" not in directives.get("default-src", [])
        assert directives["frame-ancestors"] == ["'none'"]
        assert directives["object-src"] == ["'none'"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


def test_metrics_are_for_admins(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    member = site.people.create_token("max", "m", actor="t", now=NOW)
    admin = site.people.create_token("ada", "a", actor="t", now=NOW)
    assert client.get("/metrics", headers=bearer(member)).status_code == 403
    res = client.get("/metrics", headers=bearer(admin))
    assert res.status_code == 200 and "tidings_websocket_subscribers" in res.text
    # A scraper with a bad token gets 401, not a sign-in page.
    assert client.get("/metrics", headers=bearer("tid_wrong")).status_code == 401
    assert client.get("/metrics").status_code == 303  # a browser is sent to sign in
    signed_in(client, "max")
    assert client.get("/metrics").status_code == 403


def test_admin_fields_of_sources_are_for_admins(site: Site) -> None:
    member = site.people.create_token("max", "m", actor="t", now=NOW)
    admin = site.people.create_token("ada", "a", actor="t", now=NOW)
    get = site.client.get
    sources = get("/api/sources", headers=bearer(member) | peer(REMOTE)).json()["sources"]
    assert all(set(s) == {"id", "kind", "title"} for s in sources)
    sources = get("/api/sources", headers=bearer(admin) | peer(REMOTE)).json()["sources"]
    assert {s["id"]: s["event_count"] for s in sources} == {"pub": 1, "sec": 1}


# --- API tokens -------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_api_tokens_are_shown_once_and_stored_hashed(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "max")
    csrf = csrf_from(client.get("/account").text)
    res = client.post("/account/tokens", data={"token_name": "laptop", "csrf_token": csrf})
    match = re.search(r'<code id="new-token">([^<]+)</code>', res.text)
    assert match, res.text
    token = match.group(1)
    assert token.startswith("tid_")
    assert token not in json.dumps(_session(client)) and token not in str(res.headers)
    page = client.get("/account").text
    assert "laptop" in page and token not in page  # listed, never shown again

    stored = b"".join(
        p.read_bytes() for p in site.db.parent.glob(site.db.name + "*") if p.is_file()
    )
    assert token_hash(token).encode() in stored  # the right files were read...
    assert token.encode() not in stored  # ...and the token itself is nowhere in them

    [made] = site.people.tokens("max")
    assert made.last_used_at is None
    client.cookies.clear()
    assert client.get("/api/events", headers=bearer(token)).status_code == 200
    [used] = site.people.tokens("max")
    assert used.last_used_at is not None


def test_revoked_tokens_stop_and_nobody_revokes_anothers(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    mine = site.people.create_token("max", "mine", actor="t", now=NOW)
    theirs = site.people.create_token("ada", "theirs", actor="t", now=NOW)
    [their_token] = site.people.tokens("ada")
    [my_token] = site.people.tokens("max")
    signed_in(client, "max")
    csrf = csrf_from(client.get("/account").text)
    res = client.post(f"/account/tokens/{their_token.id}/revoke", data={"csrf_token": csrf})
    assert res.status_code == 303
    assert client.get("/api/events", headers=bearer(theirs)).status_code == 200
    client.post(f"/account/tokens/{my_token.id}/revoke", data={"csrf_token": csrf})
    assert client.get("/api/events", headers=bearer(mine)).status_code == 401


# --- websocket ---------------------------------------------------------------------------


def test_websocket_handshake_needs_credentials(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    assert ws_refusal(client) == 401
    token = site.people.create_token("max", "ws", actor="t", now=NOW)
    with client.websocket_connect("/ws", headers=bearer(token)) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


class _IdleSocket:
    """Enough of a WebSocket for LiveConnection: a client that sends nothing."""

    def __init__(self) -> None:
        self.closed_with: int | None = None
        self.scope: dict[str, Any] = {}  # no raw send: every event goes through the queue

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code


def test_a_socket_authenticated_under_old_rules_is_judged_by_the_new(site: Site) -> None:
    """The rules may change between the handshake's authentication and the
    connection's start (accept() awaits): the connection must not adopt the
    new revision with the old principal's rights."""
    state, access = site.state, site.state.access
    assert site.client.portal is not None
    max_user = access.snapshot.user_named("max")
    assert max_user is not None
    legal = state.store.latest_events(viewer=None)
    [secret] = [e for e in legal if e.source_id == "sec"]
    before = access.principal(max_user, "session", new_session(site, max_user.id))
    assert before.viewer.can_see("sec")

    site.people.remove_member("legal", "max", actor="ada", now=NOW)
    site.reload()
    conn = LiveConnection(_IdleSocket(), state, before)  # type: ignore[arg-type]
    try:
        assert not conn.may_see(secret)
    finally:
        conn.sub.close()

    site.people.update_user("max", disabled=True, actor="ada", now=NOW)
    site.reload()
    socket = _IdleSocket()
    conn = LiveConnection(socket, state, before)  # type: ignore[arg-type]

    async def run() -> None:
        async with asyncio.timeout(5):
            await conn.run()

    site.client.portal.call(run)
    assert socket.closed_with == 1008


class _RecordingSocket(_IdleSocket):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))


def test_events_committed_after_a_rule_change_go_out_under_the_new_rules(site: Site) -> None:
    """Another process removes `max` from legal, then commits a legal event,
    both between the tail's look at the rules and its read of new events."""
    state, people = site.state, site.people
    assert site.client.portal is not None
    legal = parse_config(
        {
            "sources": [
                {"id": "sec", "kind": "feed", "url": "https://e.org/s", "audience": ["legal"]}
            ]
        }
    ).sources[0]
    committed: list[int] = []

    def read_after(cursor: int) -> list[Event]:
        if not committed:
            people.remove_member("legal", "max", actor="ada", now=NOW)
            item = EventData(external_id="late", title="after the removal")
            new_ids = state.store.record_poll(
                legal, prepare([item]), state=None, now=NOW, next_poll_at=NOW
            )
            committed.extend(new_ids)
        return state.store.events_after(cursor, viewer=None)

    max_user = state.access.snapshot.user_named("max")
    assert max_user is not None
    session = new_session(site, max_user.id)

    async def scenario() -> list[dict[str, Any]]:
        bus = Bus()
        tail = EventTail(bus, read_after, state.store.max_event_id())
        tail.before_publish = state.access.current
        isolated = dataclasses.replace(state, bus=bus, tail=tail)
        assert max_user is not None
        principal = state.access.principal(max_user, "session", session)
        socket = _RecordingSocket()
        conn = LiveConnection(socket, isolated, principal)  # type: ignore[arg-type]
        conn.streams["s"] = Stream("s", EventFilter(), tail.last_id)
        await tail.catch_up()
        while not conn.sub.queue.empty():
            await conn.deliver(conn.sub.queue.get_nowait())
        conn.sub.close()
        return socket.sent

    assert site.client.portal.call(scenario) == []
    assert committed


# --- every route is guarded ------------------------------------------------------------

# Routes anyone may call: signing in and out, probes, and (by design) personal
# feeds and webhooks, which carry their own secret. A new public route must be
# added here on purpose.
PUBLIC = ("/login", "/logout", "/healthz", "/readyz", "/feeds/", "/hooks/")
OWN_CHECK = {"/ws"}  # websocket endpoints: 401 denial response (tested above)


def test_every_route_is_wrapped_by_guard(tmp_path: Path) -> None:
    config = parse_config({"store": {"url": store_url(tmp_path, "g")}})
    routes = create_app(config).routes
    assert any(isinstance(r, Route) and r.path.startswith("/api/") for r in routes)
    for route in routes:
        if isinstance(route, Mount):
            assert route.path == "/static", route.path
            continue
        if isinstance(route, WebSocketRoute):
            assert route.path in OWN_CHECK, route.path
            continue
        assert isinstance(route, Route), route
        level = getattr(route.endpoint, "guard_level", None)
        assert level in ("public", "user", "operator", "admin"), f"{route.path} is unguarded"
        if level == "public":
            assert route.path.startswith(PUBLIC), f"{route.path} is public"
        if route.path.startswith("/admin"):
            assert level == "admin", route.path
        if level == "operator":
            assert route.path == "/metrics", route.path


def test_account_pages_in_setup_mode_go_home(make_site: MakeSite) -> None:
    site = make_site(users=False)
    token = csrf_from(site.client.get("/login").text)
    for path in ("/account/password", "/account/tokens", "/account/sign-out-everywhere"):
        res = site.client.post(path, data={"csrf_token": token, "token_name": "x"})
        assert (res.status_code, res.headers["location"]) == (303, "/"), path
    assert site.client.get("/account").headers["location"] == "/"
    assert site.people.tokens() == []
