"""Findings of a security review, each pinned: the dashboard's cursor, ids too
wide for the store, the websocket backlog's rules, and page limits."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import WebSocketTestSession

from aggregator.config import SourceConfig
from aggregator.decide import prepare
from aggregator.store import MAX_PAGE
from aggregator.types import EventData
from tests.unit import test_auth
from tests.unit.test_auth import (
    NOW,
    REMOTE,
    MakeSite,
    Site,
    bearer,
    csrf_from,
    password_hash,
    peer,
    signed_in,
)
from web.forms import MAX_ID, parse_id

# test_auth's fixtures (its sign-in limiter reset is autouse here too).
fresh_login_limiter = test_auth.fresh_login_limiter
make_site = test_auth.make_site
site = test_auth.site

TOO_BIG = MAX_ID + 1
HUGE = 10**30


def _source(site: Site, source_id: str) -> SourceConfig:
    [source] = [s for s in site.state.config.sources if s.id == source_id]
    return source


def _add_event(site: Site, source_id: str, external_id: str) -> int:
    """Commit an event as a poller would, and wait until the tail published it."""
    item = EventData(external_id=external_id, title=external_id)
    [event_id] = site.state.store.record_poll(
        _source(site, source_id), prepare([item]), state=None, now=NOW, next_poll_at=NOW
    )
    assert site.client.portal is not None
    site.client.portal.call(site.state.tail.nudge)
    deadline = time.monotonic() + 5
    while site.state.tail.last_id < event_id:
        assert time.monotonic() < deadline, "the tail never published"
        time.sleep(0.01)
    return event_id


def _cursor(site: Site, query: str) -> int:
    page = site.client.get("/", params={"q": query})
    assert page.status_code == 200, page.text
    match = re.search(r'data-cursor="(\d+)"', page.text)
    assert match, page.text
    return int(match.group(1))


def _token(site: Site, user: str) -> str:
    return site.people.create_token(user, "t", actor="test", now=NOW)


# --- 1. the dashboard's cursor ------------------------------------------------


def test_an_empty_dashboard_does_not_show_when_hidden_sources_get_events(site: Site) -> None:
    site.people.create_user("bob", password_hash=password_hash(), actor="test", now=NOW)
    site.client.headers.update(peer(REMOTE))
    signed_in(site.client, "bob")
    [public] = [e.id for e in site.state.store.latest_events(viewer=None) if e.source_id == "pub"]

    assert _cursor(site, "zzz") == public
    legal = _add_event(site, "sec", "legal-only")
    assert legal > public and site.state.tail.last_id == legal
    assert _cursor(site, "zzz") == public  # the legal event changes nothing bob sees
    assert _cursor(site, "") == public

    newer = _add_event(site, "pub", "for-all")
    assert _cursor(site, "zzz") == newer

    signed_in(site.client, "max")  # in legal: the legal event is theirs to see
    assert _add_event(site, "sec", "legal-again") == _cursor(site, "zzz")


def test_the_cursor_never_passes_what_the_tail_published(site: Site) -> None:
    """An event committed but not yet published must come through the page's
    websocket, which replays what is after the cursor."""
    site.client.headers.update(peer(REMOTE))
    signed_in(site.client, "max")
    assert site.client.portal is not None
    site.client.portal.call(site.state.tail.stop)  # publishes nothing more
    published = site.state.tail.last_id
    item = EventData(external_id="unpublished", title="unpublished")
    [late] = site.state.store.record_poll(
        _source(site, "pub"), prepare([item]), state=None, now=NOW, next_poll_at=NOW
    )
    assert _cursor(site, "zzz") == published < late


def test_the_store_max_event_id_honours_the_viewer(site: Site) -> None:
    store = site.state.store
    everything = store.max_event_id()
    bob = site.state.access.snapshot.user_named("max")
    assert bob is not None
    viewer = site.state.access.viewer(bob)
    assert store.max_event_id(viewer=viewer) == everything
    assert store.max_event_id(at_most=everything - 1) == everything - 1
    assert store.max_event_id(at_most=0) == 0


# --- 2. ids too wide for the store --------------------------------------------


def test_parse_id_bounds() -> None:
    assert parse_id("0", "x") == 0
    assert parse_id(str(MAX_ID), "x") == MAX_ID
    assert parse_id("0" * 30 + "7", "x") == 7
    for bad in (str(TOO_BIG), "-1", "9" * 5000, "abc", "1_0", " 1", "²", TOO_BIG, -1):
        with pytest.raises(ValueError, match=r"^x must"):
            parse_id(bad, "x")


def test_api_event_ids_past_64_bits_are_not_found(site: Site) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    for event_id in (TOO_BIG, HUGE):
        res = site.client.get(f"/api/events/{event_id}", headers=headers)
        assert res.status_code == 404, res.text
    assert site.client.get(f"/api/events/{MAX_ID}", headers=headers).status_code == 404
    [first] = site.client.get("/api/events", headers=headers).json()["events"][:1]
    assert site.client.get(f"/api/events/{first['id']}", headers=headers).status_code == 200


@pytest.mark.parametrize("cursor", [str(TOO_BIG), str(HUGE), str(-HUGE), "-1", "9" * 5000])
def test_api_cursors_out_of_range_are_refused(site: Site, cursor: str) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    res = site.client.get("/api/events", params={"cursor": cursor}, headers=headers)
    assert res.status_code == 400, res.text
    assert res.json()["error"].startswith("cursor must be")


def test_api_cursor_at_the_limit_works(site: Site) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    res = site.client.get("/api/events", params={"cursor": str(MAX_ID)}, headers=headers)
    assert res.status_code == 200
    assert len(res.json()["events"]) == 2


def test_admin_token_ids_past_64_bits_are_not_found(site: Site) -> None:
    headers = bearer(_token(site, "ada")) | peer(REMOTE)
    for token_id in (TOO_BIG, HUGE, "9" * 5000, "abc", "-1", "1_0"):
        res = site.client.post(f"/admin/users/max/tokens/{token_id}/revoke", headers=headers)
        assert res.status_code == 404, res.text
        assert "No such token." in res.text
    mine = _token(site, "max")
    [token] = site.people.tokens("max")
    res = site.client.post(f"/admin/users/max/tokens/{token.id}/revoke", headers=headers)
    assert res.status_code == 303
    assert site.client.get("/api/events", headers=bearer(mine)).status_code == 401


def test_the_audit_log_refuses_a_before_past_64_bits(site: Site) -> None:
    headers = bearer(_token(site, "ada")) | peer(REMOTE)
    for before in (str(TOO_BIG), str(HUGE), "9" * 5000):
        res = site.client.get("/admin/audit", params={"before": before}, headers=headers)
        assert res.status_code == 400, res.text
        assert "before must be" in res.text
    for fine in (str(MAX_ID), "junk", "²", "-5", "0", ""):
        res = site.client.get("/admin/audit", params={"before": fine}, headers=headers)
        assert res.status_code == 200, fine


def test_a_websocket_cursor_far_below_zero_replays_everything(site: Site) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    with site.client.websocket_connect("/ws", headers=headers) as ws:
        ws.send_json({"type": "subscribe", "stream": "s", "query": "", "cursor": -HUGE})
        assert ws.receive_json()["type"] == "subscribed"
        assert _backlog(ws) == {"pub", "sec"}


# --- 3. the websocket backlog follows the rules of this moment ----------------


def _backlog(ws: WebSocketTestSession) -> set[str]:
    """The sources of the events sent before the answer to a ping."""
    ws.send_json({"type": "ping"})
    seen: set[str] = set()
    while (msg := ws.receive_json())["type"] != "pong":
        assert msg["type"] == "event", msg
        seen.add(msg["event"]["source_id"])
    return seen


def test_the_backlog_follows_a_rule_changed_by_another_process(site: Site) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    with site.client.websocket_connect("/ws", headers=headers) as ws:
        # As `tidings` or another worker would: through the store, no reload here.
        site.people.remove_member("legal", "max", actor="ada", now=NOW)
        ws.send_json({"type": "subscribe", "stream": "s", "query": "", "cursor": 0})
        assert ws.receive_json()["type"] == "subscribed"
        assert _backlog(ws) == {"pub"}

        site.people.add_member("legal", "max", actor="ada", now=NOW)
        ws.send_json({"type": "subscribe", "stream": "t", "query": "", "cursor": 0})
        assert ws.receive_json()["type"] == "subscribed"
        assert _backlog(ws) == {"pub", "sec"}


# --- 4. page limits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(str(HUGE), 2), (str(TOO_BIG), 2), ("-5", 1), (str(-HUGE), 1), ("0", 2), ("1", 1)],
)
def test_api_limits_are_clamped(site: Site, limit: str, expected: int) -> None:
    headers = bearer(_token(site, "max")) | peer(REMOTE)
    res = site.client.get("/api/events", params={"limit": limit}, headers=headers)
    assert res.status_code == 200, res.text
    assert len(res.json()["events"]) == expected


def test_api_limits_never_exceed_a_page(make_site: MakeSite) -> None:
    big = make_site()
    source = _source(big, "pub")
    items = [EventData(external_id=f"n{i}", title=f"n{i}") for i in range(MAX_PAGE + 5)]
    big.state.store.record_poll(source, prepare(items), state=None, now=NOW, next_poll_at=NOW)
    headers = bearer(_token(big, "max")) | peer(REMOTE)
    res = big.client.get("/api/events", params={"limit": str(HUGE)}, headers=headers)
    assert res.status_code == 200
    body = res.json()
    assert len(body["events"]) == MAX_PAGE and body["next_cursor"] is not None


def test_session_forms_still_need_csrf_on_the_guarded_revoke(site: Site) -> None:
    """The bounded id check comes after the guard: no CSRF, no answer about ids."""
    site.client.headers.update(peer(REMOTE))
    signed_in(site.client, "ada")
    res = site.client.post(f"/admin/users/max/tokens/{TOO_BIG}/revoke")
    assert res.status_code in (400, 403)
    csrf = csrf_from(site.client.get("/admin/users/max").text)
    res = site.client.post(f"/admin/users/max/tokens/{TOO_BIG}/revoke", data={"csrf_token": csrf})
    assert res.status_code == 404


def test_huge_ids_in_any_path_are_a_404_or_a_redirect_never_a_500(site: Site) -> None:
    client = site.client
    client.headers.update(peer(REMOTE))
    signed_in(client, "max")
    token = csrf_from(client.get("/account").text)
    for digits in ("9" * 20, "9" * 5000):
        assert client.get(f"/api/events/{digits}").status_code == 404
        res = client.post(f"/account/tokens/{digits}/revoke", data={"csrf_token": token})
        assert (res.status_code, res.headers["location"]) == (303, "/account")


def test_assets_are_linked_by_path_so_a_tls_proxy_serves_them_too(site: Site) -> None:
    # Behind a proxy that ends TLS the app sees http: an absolute http:// link
    # to its CSS or script would be blocked as mixed content.
    page = site.client.get("/", headers=bearer(site.people.create_token(
        "ada", "t", actor="t", now=NOW)))  # fmt: skip
    assert page.status_code == 200
    assert 'href="/static/app.css"' in page.text and 'src="/static/app.js"' in page.text
    assert "http://testserver/static" not in page.text
