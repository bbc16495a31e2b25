"""Webhooks end to end: a real `tidings serve`, real signed HTTP POSTs (httpx2)
and a real websocket subscriber (`websockets`, with an API token, since
accounts exist: `/hooks/` must still need no user).

One server serves the module; every test uses its own sources and delivery
ids, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
import websockets

from aggregator.config import load_config, parse_source
from aggregator.decide import prepare
from aggregator.exceptions import ConfigError
from aggregator.filters import EventFilter
from aggregator.store import DeliveryRecord, SourceStatus, Store
from aggregator.types import Event, EventData
from tests.stores import store_url
from tests.support import TidingsProcess, feed_source, write_config

pytestmark = pytest.mark.integration

SECRET = "correct horse battery staple"
WEB_SECRET = "web-made secret value"
ENV = {"HOOK_SECRET": SECRET, "TIDINGS_SECRET_HOOK": WEB_SECRET}

GITHUB = """
signature = "github"
secret = "env:HOOK_SECRET"
event_header = "X-GitHub-Event"
delivery_header = "X-GitHub-Delivery"
tags = ["github"]
[sources.fields]
title = {template = "{sender.login} {action} #{issue.number}: {issue.title}"}
url = "issue.html_url"
author = "sender.login"
"""
SOURCES = f"""
[[sources]]
id = "gh"
kind = "webhook"
{GITHUB}
[[sources]]
id = "guarded"
kind = "webhook"
{GITHUB}
[[sources]]
id = "small"
kind = "webhook"
max_bytes = 1024
{GITHUB}
[[sources]]
id = "big"
kind = "webhook"
max_bytes = 2097152
{GITHUB}
[[sources]]
id = "off"
kind = "webhook"
enabled = false
{GITHUB}
[[sources]]
id = "gl"
kind = "webhook"
signature = "gitlab"
secret = "env:HOOK_SECRET"
event_header = "X-Gitlab-Event"
[sources.fields]
title = "object_attributes.title"

[[sources]]
id = "generic"
kind = "webhook"
signature = "hmac"
secret = "env:HOOK_SECRET"
[sources.fields]
title = "message"

[[sources]]
id = "bearer"
kind = "webhook"
signature = "bearer"
secret = "env:HOOK_SECRET"
[sources.fields]
title = "message"

[[sources]]
id = "mapped"
kind = "webhook"
signature = "hmac"
secret = "env:HOOK_SECRET"
items = "changes"
[sources.fields]
id = "ref"
title = "what"
published = "when"

[[sources]]
id = "unset"
kind = "webhook"
signature = "hmac"
secret = "env:NOT_SET_ANYWHERE"
[sources.fields]
title = "message"
""" + feed_source("news", "http://127.0.0.1:9/feed.xml", interval="1h")


@dataclass
class World:
    app: TidingsProcess
    token: str
    store: Store

    def hook(self, source_id: str) -> str:
        return f"{self.app.base}/hooks/{source_id}"

    def events(self, source_id: str) -> list[Event]:
        flt = EventFilter.parse(f"source:{source_id}")
        return self.store.latest_events(flt, viewer=None, limit=100)

    def status(self, source_id: str) -> SourceStatus:
        [found] = [s for s in self.store.source_statuses(viewer=None) if s.id == source_id]
        return found

    def ws(self) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        return websockets.connect(self.app.ws_url, additional_headers=headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("hooks")
    config = write_config(directory, SOURCES)
    store = Store(load_config(config).store_url)
    now = datetime.now(UTC)
    store.people.create_user("root", password_hash=None, admin=True, actor="test", now=now)
    token = store.people.create_token("root", "ws", actor="test", now=now)
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENV.items():
            env.setenv(name, value)
        with TidingsProcess(config) as app:
            try:
                yield World(app, token, store)
            finally:
                store.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=20) as c:
        yield c


def issue(number: int, title: str = "Broken build") -> bytes:
    return json.dumps(
        {
            "action": "opened",
            "issue": {
                "number": number,
                "title": title,
                "html_url": f"https://github.example/acme/app/issues/{number}",
            },
            "sender": {"login": "octocat"},
        }
    ).encode()


def github_headers(
    body: bytes, *, event: str = "issues", delivery: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def hmac_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def recv_event(ws: Any, wait: float = 10.0) -> dict[str, Any]:
    """The next event message's event (heartbeats skipped)."""
    async with asyncio.timeout(wait):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "event":
                event: dict[str, Any] = msg["event"]
                return event


async def subscribe(ws: Any, query: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "stream": "s", "query": query, "cursor": None}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {
        "type": "subscribed",
        "stream": "s",
    }


# --- the path of a good delivery -------------------------------------------------------


async def deliver_and_receive(
    world: World, client: httpx2.AsyncClient, ws: Any, body: bytes, headers: dict[str, str]
) -> tuple[httpx2.Response, dict[str, Any], float]:
    """POST a delivery; its answer, the event the subscriber got, and the
    seconds from sending to that event's arrival."""
    started = time.perf_counter()
    arrival = asyncio.create_task(recv_event(ws))
    res = await client.post(world.hook("gh"), content=body, headers=headers)
    event = await arrival
    return res, event, time.perf_counter() - started


async def test_a_signed_delivery_is_stored_and_pushed_at_once(
    world: World, client: httpx2.AsyncClient
) -> None:
    async with world.ws() as ws:
        await subscribe(ws, "source:gh")
        body = issue(1)
        headers = github_headers(body, delivery="gh-delivery-1")
        res, event, elapsed = await deliver_and_receive(world, client, ws, body, headers)
        assert res.status_code == 200, res.text
        assert res.json() == {"status": "stored", "events": [event["id"]]}
        assert event["title"] == "octocat opened #1: Broken build"
        assert event["url"] == "https://github.example/acme/app/issues/1"
        assert event["actor"]["name"] == "octocat"
        assert event["external_id"] == "gh-delivery-1"  # no id mapped: the delivery's
        assert event["source_id"] == "gh" and event["kind"] == "webhook"
        assert "github" in event["tags"]

        # A replay of that delivery is acknowledged and stores nothing...
        again = await client.post(world.hook("gh"), content=body, headers=headers)
        assert again.status_code == 200 and again.json() == {"status": "duplicate"}
        # ...which the next events prove: they are the ones after, not the replay.
        # The poller runs in this server, so its tail looks only once a second
        # on its own: every arrival well under that was pushed by the commit.
        waits = [elapsed]
        for n in range(2, 9):
            body = issue(n, f"Flaky test {n}")
            res, event, elapsed = await deliver_and_receive(
                world, client, ws, body, github_headers(body)
            )
            assert res.status_code == 200 and event["title"].endswith(f"Flaky test {n}")
            waits.append(elapsed)
        assert max(waits) < 0.5, f"subscribers waited {[round(w, 3) for w in waits]} s"
    titles = [e.title for e in world.events("gh")]
    assert titles[0] == "octocat opened #8: Flaky test 8"
    assert titles.count("octocat opened #1: Broken build") == 1
    status = world.status("gh")
    assert status.last_error is None and status.last_success_at is not None
    assert status.next_poll_at is None  # a push source is never due for polling
    state, _ = world.store.source_state("gh")
    assert state is not None and state["last_payload"]["body"] == json.loads(body)
    assert state["last_payload"]["event"] == "issues"


async def test_concurrent_copies_of_one_delivery_store_it_once(
    world: World, client: httpx2.AsyncClient
) -> None:
    body = issue(3, "Raced")
    headers = github_headers(body, delivery="raced-delivery")
    answers = await asyncio.gather(
        *(client.post(world.hook("gh"), content=body, headers=headers) for _ in range(10))
    )
    statuses = sorted(r.json()["status"] for r in answers)
    assert all(r.status_code == 200 for r in answers)
    assert statuses == ["duplicate"] * 9 + ["stored"]
    assert [e.title for e in world.events("gh")].count("octocat opened #3: Raced") == 1


async def test_a_form_encoded_github_delivery(world: World, client: httpx2.AsyncClient) -> None:
    payload = issue(4, "Sent as a form").decode()
    form = urlencode({"payload": payload}).encode()
    headers = github_headers(form)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    res = await client.post(world.hook("gh"), content=form, headers=headers)
    assert res.status_code == 200 and res.json()["status"] == "stored", res.text
    assert "octocat opened #4: Sent as a form" in [e.title for e in world.events("gh")]


async def test_a_ping_is_acknowledged_and_stores_nothing(
    world: World, client: httpx2.AsyncClient
) -> None:
    before = world.events("big")
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    res = await client.post(
        world.hook("big"), content=body, headers=github_headers(body, event="ping")
    )
    assert res.status_code == 200 and res.json() == {"status": "pong"}
    assert world.events("big") == before
    assert world.status("big").last_success_at is not None  # the sender reached us


# --- refusals ----------------------------------------------------------------------------


async def test_a_bad_signature_is_refused_stores_nothing_and_is_shown_to_admins(
    world: World, client: httpx2.AsyncClient
) -> None:
    body = issue(10, "Forged")
    forged = github_headers(body, secret="not the secret")
    res = await client.post(world.hook("guarded"), content=body, headers=forged)
    assert res.status_code == 401
    assert SECRET not in res.text and forged["X-Hub-Signature-256"] not in res.text
    unsigned = {k: v for k, v in forged.items() if k != "X-Hub-Signature-256"}
    assert (
        await client.post(world.hook("guarded"), content=body, headers=unsigned)
    ).status_code == 401
    assert world.events("guarded") == []
    status = world.status("guarded")
    assert status.last_error is not None and "x-hub-signature-256" in status.last_error
    assert forged["X-Hub-Signature-256"] not in status.last_error
    state, _ = world.store.source_state("guarded")
    assert state is None  # what an unauthenticated sender sent is not kept
    # A flood of forgeries does not become a flood of writes: one per 10 s.
    first = world.store.source_state("guarded")[1]
    for _ in range(5):
        res = await client.post(world.hook("guarded"), content=body, headers=forged)
        assert res.status_code == 401
    assert world.store.source_state("guarded")[1] == first
    # The right signature still gets in, and clears the error.
    good = await client.post(world.hook("guarded"), content=body, headers=github_headers(body))
    assert good.status_code == 200 and len(world.events("guarded")) == 1
    assert world.status("guarded").last_error is None


async def test_unknown_disabled_and_other_kinds_all_look_alike(
    world: World, client: httpx2.AsyncClient
) -> None:
    body = issue(11)
    answers = [
        await client.post(world.hook(sid), content=body, headers=github_headers(body))
        for sid in ("no-such-source", "off", "news")
    ]
    assert {(r.status_code, r.text) for r in answers} == {(404, answers[0].text)}
    assert (await client.get(world.hook("gh"))).status_code == 405
    assert world.events("off") == [] and world.events("news") == []


async def test_payloads_over_the_sources_limit_get_413(
    world: World, client: httpx2.AsyncClient
) -> None:
    body = issue(12, "x" * 2000)  # over small's 1024 bytes
    res = await client.post(world.hook("small"), content=body, headers=github_headers(body))
    assert res.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: found while reading
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    streamed = await client.post(
        world.hook("small"), content=chunks(), headers=github_headers(body)
    )
    assert streamed.status_code == 413
    assert world.events("small") == []
    assert "max_bytes" in (world.status("small").last_error or "")
    # A source may take more than the server's other requests (1 MB): its own limit.
    large = issue(13, "y" * 1_500_000)
    res = await client.post(world.hook("big"), content=large, headers=github_headers(large))
    assert res.status_code == 200 and res.json()["status"] == "stored", res.text
    state, _ = world.store.source_state("big")
    assert state is not None and "body" not in state["last_payload"]  # too big to keep
    assert state["last_payload"]["bytes"] == len(large)


async def test_gitlab_token_generic_hmac_and_bearer(
    world: World, client: httpx2.AsyncClient
) -> None:
    gitlab = json.dumps({"object_attributes": {"title": "Merge feature"}}).encode()
    generic = json.dumps({"message": "Deploy finished"}).encode()
    cases = [
        ("gl", gitlab, {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Merge Request Hook"},
         {"X-Gitlab-Token": SECRET + "x"}),
        ("generic", generic, hmac_headers(generic), hmac_headers(generic, "wrong")),
        ("bearer", generic, {"Authorization": f"Bearer {SECRET}"},
         {"Authorization": "Bearer nope"}),
    ]  # fmt: skip
    for sid, body, good, bad in cases:
        refused = await client.post(world.hook(sid), content=body, headers=bad)
        assert refused.status_code == 401, sid
        assert world.events(sid) == [], sid
        res = await client.post(world.hook(sid), content=body, headers=good)
        assert res.status_code == 200 and res.json()["status"] == "stored", (sid, res.text)
        [event] = world.events(sid)
        assert event.title == json.loads(body).get("message", "Merge feature")
        # Without a delivery id the body's hash names the delivery: a resend is a replay.
        again = await client.post(world.hook(sid), content=body, headers=good)
        assert again.json() == {"status": "duplicate"}, sid


async def test_mapping_failures_are_422_or_warnings_and_shown(
    world: World, client: httpx2.AsyncClient
) -> None:
    # Every item's id is an object: nothing can be stored.
    bad = json.dumps({"changes": [{"ref": {"x": 1}, "what": "a"}]}).encode()
    res = await client.post(world.hook("mapped"), content=bad, headers=hmac_headers(bad))
    assert res.status_code == 422 and "field 'id'" in res.json()["error"]
    status = world.status("mapped")
    assert status.last_error is not None and "field 'id'" in status.last_error
    state, _ = world.store.source_state("mapped")
    assert state is not None and state["last_payload"]["body"] == json.loads(bad)
    assert world.events("mapped") == []
    # Not JSON at all.
    junk = b"{not json"
    res = await client.post(world.hook("mapped"), content=junk, headers=hmac_headers(junk))
    assert res.status_code == 400 and "not JSON" in res.json()["error"]
    # One good item, one with a bad date: stored, and a warning for admins.
    mixed = json.dumps(
        {"changes": [{"ref": "r1", "what": "Good", "when": "2026-01-02T03:04:05Z"},
                     {"ref": "r2", "what": "Bad date", "when": "someday"}]}
    ).encode()  # fmt: skip
    res = await client.post(world.hook("mapped"), content=mixed, headers=hmac_headers(mixed))
    assert res.status_code == 200 and len(res.json()["events"]) == 2
    status = world.status("mapped")
    assert status.last_error is None
    assert status.last_warning is not None and "published" in status.last_warning
    # `items` finds nothing: 422 naming it.
    empty = json.dumps({"other": []}).encode()
    res = await client.post(world.hook("mapped"), content=empty, headers=hmac_headers(empty))
    assert res.status_code == 422 and "items" in res.json()["error"]


async def test_a_secret_that_cannot_be_read_is_503_and_shown(
    world: World, client: httpx2.AsyncClient
) -> None:
    body = b'{"message": "x"}'
    res = await client.post(world.hook("unset"), content=body, headers=hmac_headers(body))
    assert res.status_code == 503 and "NOT_SET_ANYWHERE" not in res.text
    assert "NOT_SET_ANYWHERE is not set" in (world.status("unset").last_error or "")


# --- sources made in the web admin ---------------------------------------------------------


async def test_web_made_sources_are_found_at_once_and_may_not_skip_signatures(
    world: World, client: httpx2.AsyncClient
) -> None:
    now = datetime.now(UTC)
    table = {
        "id": "made-in-web",
        "kind": "webhook",
        "signature": "hmac",
        "secret": "env:TIDINGS_SECRET_HOOK",
        "fields": {"title": "message"},
    }
    world.store.create_source(table, actor="test", now=now)
    body = b'{"message": "from the web admin"}'
    res = await client.post(world.hook("made-in-web"), content=body, headers=hmac_headers(body))
    assert res.status_code == 401  # the config file's secret is not this source's
    res = await client.post(
        world.hook("made-in-web"), content=body, headers=hmac_headers(body, WEB_SECRET)
    )
    assert res.status_code == 200 and res.json()["status"] == "stored", res.text

    open_table = {"id": "open-web", "kind": "webhook", "signature": "none",
                  "fields": {"title": "message"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"source\.signature: an unsigned webhook"):
        world.store.create_source(open_table, actor="test", now=now)
    res = await client.post(world.hook("open-web"), content=body)
    assert res.status_code == 404 and world.events("open-web") == []

    # Disabled in the admin: refused within about a second (lookups may be that stale).
    world.store.set_source_enabled("made-in-web", False, actor="test", now=now)
    signed = hmac_headers(b'{"message": "late"}', WEB_SECRET)
    for _ in range(40):
        res = await client.post(
            world.hook("made-in-web"), content=b'{"message": "late"}', headers=signed
        )
        if res.status_code == 404:
            break
        assert res.status_code == 200
        await asyncio.sleep(0.1)
    assert res.status_code == 404


def test_the_openapi_description_names_the_hook(world: World) -> None:
    res = httpx2.get(
        world.app.base + "/api/openapi.json", headers={"Authorization": f"Bearer {world.token}"}
    )
    assert "/hooks/{source_id}" in res.json()["paths"]


# --- the store's group commit -----------------------------------------------------------


def test_deliveries_committed_together_keep_their_own_events_and_order(tmp_path: Path) -> None:
    store = Store(store_url(tmp_path, "d"))
    source = parse_source(
        {"id": "ci", "kind": "webhook", "secret": "env:X", "fields": {"title": "t"}},
        "source",
        "file",
    )
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    store.sync_sources([source], t0)

    def delivery(did: str, ident: str, title: str, minute: int) -> DeliveryRecord:
        item = EventData(external_id=ident, title=title, published=t0)
        when = t0 + timedelta(minutes=minute)
        return DeliveryRecord(source, did, prepare([item]), when, {"body": {"t": title}})

    results = store.record_deliveries(
        [
            delivery("d1", "issue-1", "Opened", 1),
            delivery("d2", "issue-2", "Other", 2),
            delivery("d1", "issue-1", "Opened", 3),  # a copy within the batch
            delivery("d3", "issue-1", "Edited", 4),  # the same item, changed
        ]
    )
    first, other, copy, edited = results
    assert copy is None and first and other and edited
    assert len(first) == len(other) == len(edited) == 1
    assert first[0] < other[0] < edited[0]
    events = {e.id: e for e in store.latest_events(viewer=None)}
    assert (events[first[0]].title, events[first[0]].verb) == ("Opened", "Create")
    assert (events[other[0]].title, events[edited[0]].title) == ("Other", "Edited")
    assert events[edited[0]].verb == "Update"  # compared with the version before it
    assert store.record_delivery(delivery("d2", "issue-2", "Other", 5)) is None
    state, failures = store.source_state("ci")
    assert state == {"last_payload": {"body": {"t": "Edited"}}} and failures == 0
    # Old delivery ids are forgotten; the items they stored stay known.
    assert store.forget_deliveries(t0 + timedelta(minutes=3)) == 2
    assert store.record_delivery(delivery("d2", "issue-2", "Other", 6)) == []
    store.close()


def test_no_secret_in_the_servers_log(world: World) -> None:
    """Last in the module: whatever the tests sent, the log shows no secret."""
    log = world.app.log.read_text(errors="replace")
    assert "webhook" in log  # the refusals above were logged...
    assert SECRET not in log and WEB_SECRET not in log  # ...without a secret
