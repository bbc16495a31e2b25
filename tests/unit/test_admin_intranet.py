"""The Sources admin for the intranet kinds (jsonapi, html, webhook), in-process
(Starlette's TestClient on SQLite, no poller): the kinds page lists each kind
and shipped preset; forms generated from the options models (dotted inputs
for nested tables, the fieldmap textarea, the preset select) round-trip
through the store; Test previews the first events a configuration makes
(title, actor, time, URL), from a loopback API or page, or for a webhook
from a pasted sample or the last payload received, and stores nothing;
failures show on the source's row."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from aggregator.accounts import hash_password
from aggregator.config import parse_config, parse_source
from aggregator.registry import connector_class
from aggregator.store import PollRecord
from connectors.mapping import load_preset, preset_names
from tests.corpus import corpus
from tests.stores import store_url
from tests.support import FeedServer
from tests.unit.test_admin_sources import (
    ROOT_PASSWORD,
    field_error,
    input_value,
    login,
    post,
    source_row,
    statuses,
    store_of,
)
from web.app import create_app

NOW = datetime.now(UTC)
CHECKED = {"enabled": "on", "track_updates": "on", "obey_hints": "on"}
API = "/api/events"
HOOK_SECRET_ENV = "TIDINGS_SECRET_ADMIN_HOOK"
HOOK_SECRET = "a long random string the sender signs with"
PULL_REQUEST = "intranet/github/octokit-webhooks/pull_request/assigned.payload.json"
PULL_REQUEST_TITLE = (
    "Codertocat assigned Codertocat to pull request #2: Update the README with new information."
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """Signed in as the admin `root`; no sources."""
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
        },
        tmp_path / "config.toml",
    )
    app = create_app(config)
    with TestClient(app, client=("127.0.0.1", 50000)) as c:
        store_of(c).people.create_user(
            "root", password_hash=hash_password(ROOT_PASSWORD), admin=True, actor="test", now=NOW
        )
        login(c, "root", ROOT_PASSWORD)
        yield c


def textarea(page: str, name: str) -> str:
    found = re.search(rf'<textarea id="f-{re.escape(name)}"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, f"no textarea {name}"
    return html.unescape(found.group(1))


def selected(page: str, name: str) -> str:
    found = re.search(rf'<select id="f-{re.escape(name)}".*?</select>', page, re.S)
    assert found, f"no select {name}"
    chosen = re.findall(r"<option selected>([^<]*)</option>", found.group(0))
    assert len(chosen) <= 1, chosen
    return chosen[0] if chosen else ""


def previewed(page: str) -> list[dict[str, str]]:
    """The events of a Test's preview: title, actor, time (as shown) and URL."""
    assert "the events a poll would create" in page, preview_error(page)
    found = []
    for item in re.findall(r'<li class="preview-event">(.*?)</li>', page, re.S):
        title = re.search(r'<h3 class="title">(?:<a [^>]*>)?([^<]*)', item)
        actor = re.search(r'<span class="actor">([^<]*)</span>', item)
        when = re.search(r"<time [^>]*>([^<]*)</time>", item)
        url = re.search(r'<p class="link"><code>([^<]*)</code>', item)
        found.append(
            {
                "title": html.unescape(title.group(1)) if title else "",
                "actor": html.unescape(actor.group(1)) if actor else "",
                "time": when.group(1) if when else "",
                "url": html.unescape(url.group(1)) if url else "",
            }
        )
    return found


def preview_error(page: str) -> str:
    found = re.search(r'<p class="error" role="alert" id="preview-error">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


def events_of(client: TestClient) -> list[tuple[str, str]]:
    return [(e.source_id, e.title) for e in store_of(client).latest_events(viewer=None, limit=500)]


def stored(client: TestClient, sid: str) -> dict[str, Any]:
    table = store_of(client).source_table(sid)
    assert table is not None, f"no source {sid}"
    return table[1]


# --- the kinds page and a preset's form ------------------------------------------------


def test_kinds_page_lists_each_kind_and_every_shipped_preset(client: TestClient) -> None:
    assert '<a class="button" href="/admin/sources/new"' in client.get("/admin/sources").text
    page = client.get("/admin/sources/new")
    assert page.status_code == 200
    text = page.text
    for kind in ("feed", "html", "jsonapi", "webhook"):
        assert f'href="/admin/sources/new?kind={kind}"' in text, kind
    presets = [(k, n) for k in ("jsonapi", "webhook") for n in preset_names(k)]
    assert ("jsonapi", "jira") in presets and ("webhook", "github") in presets
    for kind, name in presets:
        link = f'href="/admin/sources/new?kind={kind}&amp;preset={name}">'
        title = html.escape(load_preset(kind, name).title)
        assert f"{link}{title}</a>" in text, (kind, name)


def test_a_presets_form_has_it_selected_with_its_description_and_nested_inputs(
    client: TestClient,
) -> None:
    page = client.get("/admin/sources/new", params={"kind": "jsonapi", "preset": "jira"})
    assert page.status_code == 200
    text = page.text
    jira = load_preset("jsonapi", "jira")
    assert selected(text, "preset") == "jira"
    info = re.search(r'<section class="preset-info">(.*?)</section>', text, re.S)
    assert info, "no description of the preset"
    assert jira.title in info.group(1) and html.escape(jira.description) in info.group(1)
    assert "JQL reads the {since} date" in html.unescape(info.group(1))  # its setup
    for name in ("pagination.type", "pagination.max_pages", "incremental.since"):
        assert f'name="{name}"' in text, name
    # Left empty, an option takes the preset's value, which the form shows as its default.
    assert selected(text, "pagination.type") == ""
    assert '<option value="">(default: offset, from the preset)</option>' in text
    assert re.search(r'<input id="f-items" name="items" value="" [^>]*placeholder="issues"', text)
    assert re.search(r'<textarea id="f-params" [^>]*placeholder="jql: updated &gt;=', text)
    assert textarea(text, "fields") == ""
    assert "One “field: expression” per line" in text
    # A name that is no preset starts a blank form.
    other = client.get("/admin/sources/new", params={"kind": "jsonapi", "preset": "nope"}).text
    assert selected(other, "preset") == "" and 'class="preset-info"' not in other
    assert '<option value="">(default: none)</option>' in other  # pagination.type's own


# --- jsonapi: Test, save, edit ---------------------------------------------------------


def github_event(n: int, who: str, title: str, when: str) -> dict[str, Any]:
    kind = "issue" if n % 2 else "pull_request"
    return {
        "id": str(100 + n),
        "type": "IssuesEvent" if kind == "issue" else "PullRequestEvent",
        "actor": {"login": who, "url": f"https://api.github.com/users/{who}"},
        "repo": {"name": "acme/app", "url": "https://api.github.com/repos/acme/app"},
        "payload": {
            "action": "opened",
            kind: {
                "number": n,
                "title": title,
                "html_url": f"https://github.com/acme/app/{'issues' if n % 2 else 'pull'}/{n}",
            },
        },
        "created_at": when,
    }


def serve_two_pages(feed_server: FeedServer) -> str:
    """A GitHub-like events API whose second page is named by a Link header."""
    first = f"{API}?per_page=100"  # the github preset's size_param and size
    second = f"{API}?page=2&per_page=100"
    feed_server.put(
        first,
        json.dumps(
            [
                github_event(7, "ann", "Printer on fire", "2026-03-02T10:15:00Z"),
                github_event(8, "bob", "Faster builds", "2026-03-02T09:00:00Z"),
            ]
        ),
        content_type="application/json",
        headers={"Link": f'<{feed_server.url(second)}>; rel="next"'},
    )
    feed_server.put(
        second,
        json.dumps([github_event(5, "cy", "Old ticket", "2026-03-01T08:00:00Z")]),
        content_type="application/json",
    )
    return second


FIELD_LINES = (
    "title: template: {actor.login} on #{payload.issue.number || payload.pull_request.number}: "
    "{payload.issue.title || payload.pull_request.title}\n"
    "summary: value: Seen through the events API"
)


def api_form(feed_server: FeedServer, **extra: str) -> dict[str, str]:
    return {
        "id": "acme-events",
        "title": "Acme events",
        "preset": "github",
        "url": feed_server.url(API),
        "fields": FIELD_LINES,
        "pagination.type": "link",
        "pagination.max_pages": "2",
        "audience": "everyone",
        **CHECKED,
        **extra,
    }


def test_jsonapi_test_previews_every_page_through_the_fieldmap_storing_nothing(
    client: TestClient, feed_server: FeedServer
) -> None:
    second = serve_two_pages(feed_server)
    got = post(client, "/admin/sources/new?kind=jsonapi", api_form(feed_server, action="test"))
    assert got.status_code == 200
    assert previewed(got.text) == [
        {
            "title": "ann on #7: Printer on fire",
            "actor": "ann",
            "time": "2026-03-02 10:15 UTC",
            "url": "https://github.com/acme/app/issues/7",
        },
        {
            "title": "bob on #8: Faster builds",
            "actor": "bob",
            "time": "2026-03-02 09:00 UTC",
            "url": "https://github.com/acme/app/pull/8",
        },
        {
            "title": "cy on #5: Old ticket",
            "actor": "cy",
            "time": "2026-03-01 08:00 UTC",
            "url": "https://github.com/acme/app/issues/5",
        },
    ]
    assert "Seen through the events API" in got.text  # the value: line
    assert feed_server.hits(second) == 1  # the Link header was followed
    assert textarea(got.text, "fields") == FIELD_LINES  # the form is still there
    assert selected(got.text, "pagination.type") == "link"
    assert statuses(client) == {} and events_of(client) == []


def test_a_saved_jsonapi_source_round_trips_through_its_edit_form(
    client: TestClient, feed_server: FeedServer
) -> None:
    serve_two_pages(feed_server)
    got = post(client, "/admin/sources/new?kind=jsonapi", api_form(feed_server, action="save"))
    assert got.status_code == 303, got.text
    assert got.headers["location"] == "/admin/sources?notice=created&source=acme-events"
    assert stored(client, "acme-events") == {
        "id": "acme-events",
        "kind": "jsonapi",
        "title": "Acme events",
        "preset": "github",
        "url": feed_server.url(API),
        "fields": {
            "title": {
                "template": "{actor.login} on #{payload.issue.number || "
                "payload.pull_request.number}: {payload.issue.title || payload.pull_request.title}"
            },
            "summary": {"value": "Seen through the events API"},
        },
        "pagination": {"type": "link", "max_pages": 2},
        "audience": ["everyone"],
    }
    assert events_of(client) == []  # saving fetches nothing

    form = client.get("/admin/sources/acme-events/edit")
    assert form.status_code == 200
    text = form.text
    assert selected(text, "preset") == "github"
    assert "GitHub events API" in text  # the preset's description
    assert textarea(text, "fields") == FIELD_LINES
    assert selected(text, "pagination.type") == "link"
    assert input_value(text, "pagination.max_pages") == "2"
    assert input_value(text, "pagination.next") == ""

    # Saved back unchanged, it is the same table; Test from the edit form still works.
    same = {k: v for k, v in api_form(feed_server).items() if k != "id"}
    saved = post(client, "/admin/sources/acme-events/edit", {**same, "action": "save"})
    assert saved.status_code == 303
    assert stored(client, "acme-events")["fields"]["summary"] == {
        "value": "Seen through the events API"
    }
    tested = post(client, "/admin/sources/acme-events/edit", {**same, "action": "test"})
    assert [e["actor"] for e in previewed(tested.text)] == ["ann", "bob", "cy"]
    assert events_of(client) == []


def test_jsonapi_test_shows_the_fields_that_matched_nothing(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put(
        "/issues",
        json.dumps({"issues": [{"key": "OPS-1", "reporter": {"name": "Ann"}}]}),
        content_type="application/json",
    )
    got = post(client, "/admin/sources/new?kind=jsonapi", {
        "id": "ops", "url": feed_server.url("/issues"), "items": "issues", "action": "test",
        "fields": "title: key\nauthor: reporter.nam", **CHECKED,
    })  # fmt: skip
    assert [e["title"] for e in previewed(got.text)] == ["OPS-1"]
    assert "fields.author (reporter.nam) matched nothing" in html.unescape(got.text)


def test_jsonapi_test_names_the_source_and_field_that_failed(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put("/broken", "<html>maintenance</html>", content_type="application/json")
    feed_server.put(
        "/issues",
        json.dumps({"issues": [{"key": "OPS-1", "summary": "Disk full"}]}),
        content_type="application/json",
    )
    base = {"id": "ops", "url": feed_server.url("/issues"), "action": "test", **CHECKED}

    got = post(client, "/admin/sources/new?kind=jsonapi", {
        **base, "url": feed_server.url("/broken"), "items": "issues", "fields": "title: key",
    })  # fmt: skip
    assert got.status_code == 200 and "Test failed" in got.text
    error = preview_error(got.text)
    assert error.startswith("ops: ") and "not valid JSON" in error, error

    got = post(client, "/admin/sources/new?kind=jsonapi", {
        **base, "items": "results", "fields": "title: key",
    })  # fmt: skip
    error = preview_error(got.text)
    assert error.startswith("ops: ") and "items: 'results' matched nothing" in error, error

    got = post(client, "/admin/sources/new?kind=jsonapi", {
        **base, "items": "issues", "fields": "id: ident\ntitle: template: {key}: {summary}",
    })  # fmt: skip
    error = preview_error(got.text)
    assert error.startswith("ops: ") and "fields.id (ident) matched nothing" in error, error
    assert statuses(client) == {} and events_of(client) == []


def test_a_bad_jmespath_is_an_error_on_the_fields_input_and_nothing_is_saved(
    client: TestClient, feed_server: FeedServer
) -> None:
    for action in ("save", "test"):
        got = post(client, "/admin/sources/new?kind=jsonapi", {
            "id": "bad", "url": feed_server.url("/issues"), "items": "issues",
            "fields": "title: fields.summary ||\nauthor: template: {reporter.name",
            "action": action, **CHECKED,
        })  # fmt: skip
        assert got.status_code == 400, action
        message = field_error(got.text, "fields")
        assert message.startswith("title: invalid JMESPath"), message
        assert "Nothing was saved" in got.text
        assert textarea(got.text, "fields").startswith("title: fields.summary ||")
    unknown = post(client, "/admin/sources/new?kind=jsonapi", {
        "id": "bad", "url": feed_server.url("/issues"), "fields": "titel: key", **CHECKED,
    })  # fmt: skip
    assert unknown.status_code == 400
    assert "unknown field" in field_error(unknown.text, "fields")
    no_colon = post(client, "/admin/sources/new?kind=jsonapi", {
        "id": "bad", "url": feed_server.url("/issues"), "fields": "title key", **CHECKED,
    })  # fmt: skip
    assert no_colon.status_code == 400 and "line 1" in field_error(no_colon.text, "fields")
    # A check of the whole [pagination] table: on the input it names.
    cursor = post(client, "/admin/sources/new?kind=jsonapi", {
        "id": "bad", "url": feed_server.url("/issues"), "fields": "title: key",
        "pagination.type": "cursor", "pagination.param": "after", **CHECKED,
    })  # fmt: skip
    assert cursor.status_code == 400
    assert field_error(cursor.text, "pagination.next") == "required for &#39;cursor&#39; pagination"
    assert statuses(client) == {} and feed_server.hits("/issues") == 0


# --- html ----------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>Notices</title></head><body>
<ul class="notices">
  <li class="notice"><a href="/notices/12">Fire drill on Friday</a>
    <time datetime="2026-02-27T09:00:00Z">27 Feb</time> <span class="by">Facilities</span></li>
  <li class="notice"><a href="/notices/11">Canteen closed Monday</a>
    <time datetime="2026-02-20T12:30:00Z">20 Feb</time> <span class="by">Catering</span></li>
</ul></body></html>"""


def test_html_list_test_previews_entries_from_a_page(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put("/notices/", PAGE, content_type="text/html; charset=utf-8")
    form = {
        "id": "notices", "url": feed_server.url("/notices/"), "items": "li.notice",
        "fields.title": "a", "fields.url": "a@href", "fields.published": "time@datetime",
        "fields.author": "span.by", "action": "test", **CHECKED,
    }  # fmt: skip
    got = post(client, "/admin/sources/new?kind=html", form)
    assert got.status_code == 200
    assert previewed(got.text) == [
        {
            "title": "Fire drill on Friday",
            "actor": "Facilities",
            "time": "2026-02-27 09:00 UTC",
            "url": feed_server.url("/notices/12"),
        },
        {
            "title": "Canteen closed Monday",
            "actor": "Catering",
            "time": "2026-02-20 12:30 UTC",
            "url": feed_server.url("/notices/11"),
        },
    ]
    assert input_value(got.text, "fields.url") == "a@href"
    assert statuses(client) == {} and events_of(client) == []

    saved = post(client, "/admin/sources/new?kind=html", {**form, "action": "save"})
    assert saved.status_code == 303
    assert stored(client, "notices")["fields"] == {
        "title": "a", "url": "a@href", "published": "time@datetime", "author": "span.by",
    }  # fmt: skip
    edit = client.get("/admin/sources/notices/edit").text
    assert input_value(edit, "fields.published") == "time@datetime"
    assert input_value(edit, "items") == "li.notice"

    both = post(client, "/admin/sources/new?kind=html", {**form, "id": "both", "watch": "main"})
    assert both.status_code == 400
    assert "Nothing was saved: give either items or watch, not both." in both.text
    neither = post(client, "/admin/sources/new?kind=html", {**form, "id": "both", "items": ""})
    assert neither.status_code == 400
    assert "Nothing was saved: give items (the CSS selector" in neither.text
    assert "_form:" not in neither.text  # the key for problems of no single input stays inside
    assert "both" not in statuses(client)


# --- webhooks -----------------------------------------------------------------------------


def github_payload() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(corpus(PULL_REQUEST).read_text(encoding="utf-8"))
    return payload


def hook_form(**extra: str) -> dict[str, str]:
    return {
        "id": "gh", "title": "GitHub", "preset": "github",
        "secret": f"env:{HOOK_SECRET_ENV}", **CHECKED, **extra,
    }  # fmt: skip


def deliver(client: TestClient, source_id: str, body: bytes, *, secret: str, event: str) -> int:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    got = client.post(
        f"/hooks/{source_id}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={signature}",
        },
    )
    return got.status_code


def test_a_webhook_form_shows_its_address_and_how_to_set_it_up(client: TestClient) -> None:
    page = client.get("/admin/sources/new", params={"kind": "webhook", "preset": "github"})
    assert page.status_code == 200
    text = page.text
    assert '<code id="hook-url">http://testserver/hooks/ID</code>' in text
    assert "this source's id, once saved" in html.unescape(text)
    setup = load_preset("webhook", "github").setup.strip()
    assert "Settings > Webhooks > Add webhook" in setup
    assert setup in html.unescape(text)
    assert selected(text, "preset") == "github"
    assert 'name="sample"' in text and 'name="sample_event"' in text
    gitlab = client.get("/admin/sources/new", params={"kind": "webhook", "preset": "gitlab"})
    assert load_preset("webhook", "gitlab").setup.strip() in html.unescape(gitlab.text)


@pytest.mark.corpus
def test_webhook_test_maps_a_pasted_github_payload(client: TestClient) -> None:
    payload = github_payload()
    got = post(client, "/admin/sources/new?kind=webhook", hook_form(
        action="test", sample=json.dumps(payload), sample_event="pull_request",
    ))  # fmt: skip
    assert got.status_code == 200
    [event] = previewed(got.text)
    assert event == {
        "title": PULL_REQUEST_TITLE,
        "actor": "Codertocat",
        "time": "2019-05-15 15:20 UTC",
        "url": "https://github.com/Codertocat/Hello-World/pull/2",
    }
    assert textarea(got.text, "sample").startswith('{"action": "assigned"')  # shown back
    assert re.search(r'<input id="f-sample_event" [^>]*value="pull_request"', got.text)
    assert statuses(client) == {} and events_of(client) == []

    ping = post(client, "/admin/sources/new?kind=webhook", hook_form(
        action="test", sample=json.dumps({"zen": "Keep it simple."}), sample_event="ping",
    ))  # fmt: skip
    assert "the mapping makes no event of this payload" in preview_error(ping.text)
    bad = post(client, "/admin/sources/new?kind=webhook", hook_form(action="test", sample="{"))
    assert "the sample is not JSON" in preview_error(bad.text)


@pytest.mark.corpus
def test_webhook_test_uses_the_last_payload_received(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    none_yet = post(client, "/admin/sources/new?kind=webhook", hook_form(action="test"))
    assert "nothing was received yet" in preview_error(none_yet.text)
    assert post(client, "/admin/sources/new?kind=webhook", hook_form()).status_code == 303
    edit = client.get("/admin/sources/gh/edit").text
    assert '<code id="hook-url">http://testserver/hooks/gh</code>' in edit
    assert "once saved" not in edit
    same = {k: v for k, v in hook_form(action="test").items() if k != "id"}
    still_none = post(client, "/admin/sources/gh/edit", same)
    assert "nothing was received yet" in preview_error(still_none.text)

    body = json.dumps(github_payload()).encode()
    assert deliver(client, "gh", body, secret=HOOK_SECRET, event="pull_request") == 200
    assert events_of(client) == [("gh", PULL_REQUEST_TITLE)]
    tested = post(client, "/admin/sources/gh/edit", same)
    assert [e["title"] for e in previewed(tested.text)] == [PULL_REQUEST_TITLE]
    # The row's Test, too, shows what the last payload makes.
    row_test = post(client, "/admin/sources/gh/test")
    assert [e["title"] for e in previewed(row_test.text)] == [PULL_REQUEST_TITLE]
    assert events_of(client) == [("gh", PULL_REQUEST_TITLE)]  # Tests store nothing


def test_webhook_test_shows_what_of_a_sample_could_not_be_mapped(client: TestClient) -> None:
    sample = {"message": "Deployed 4.2", "when": "last Tuesday", "url": "https://ci.example/4"}
    got = post(client, "/admin/sources/new?kind=webhook", {
        "id": "ci", "signature": "hmac", "secret": f"env:{HOOK_SECRET_ENV}",
        "fields": "title: message\nurl: url\npublished: when", "action": "test",
        "sample": json.dumps(sample), "enabled": "on", "track_updates": "on",
    })  # fmt: skip
    assert got.status_code == 200
    assert [(e["title"], e["url"]) for e in previewed(got.text)] == [
        ("Deployed 4.2", "https://ci.example/4")
    ]
    warning = re.search(r'<p class="preview-warning" id="preview-warning">(.*?)</p>', got.text)
    assert warning, "the problem with `published` is not shown"
    assert "field &#39;published&#39; (when): expected a date" in warning.group(1)
    assert statuses(client) == {}


def test_a_webhook_source_is_never_polled_and_its_pages_say_so(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    form = client.get("/admin/sources/new", params={"kind": "webhook"}).text
    for name in ("interval", "cron", "obey_hints"):
        assert f'name="{name}"' not in form, name
        assert f'name="{name}"' in client.get("/admin/sources/new?kind=jsonapi").text, name
    created = post(client, "/admin/sources/new?kind=webhook", hook_form())
    assert created.status_code == 303
    notice = client.get(created.headers["location"]).text
    assert "Source gh created; senders post its events to /hooks/gh." in notice
    assert "interval" not in stored(client, "gh")
    disabled = post(client, "/admin/sources/gh/disable")
    assert "its deliveries are refused" in client.get(disabled.headers["location"]).text
    enabled = post(client, "/admin/sources/gh/enable")
    assert "it takes deliveries again" in client.get(enabled.headers["location"]).text
    row = source_row(client.get("/admin/sources").text, "gh")
    assert ">nothing received yet</span>" in row and "not polled yet" not in row
    assert "/admin/sources/gh/poll" not in row and "/admin/sources/gh/test" in row
    refused = post(client, "/admin/sources/gh/poll")
    assert refused.status_code == 409 and "/hooks/gh" in refused.text
    assert statuses(client)["gh"].next_poll_at is None  # never made due

    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    body = json.dumps({"zen": "Design for failure."}).encode()
    assert deliver(client, "gh", body, secret=HOOK_SECRET, event="ping") == 200
    row = source_row(client.get("/admin/sources").text, "gh")
    assert ">ok</span>" in row and "nothing received yet" not in row


def test_failures_and_warnings_show_on_the_sources_page(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    assert post(client, "/admin/sources/new?kind=webhook", hook_form()).status_code == 303
    body = json.dumps({"action": "opened", "sender": {"login": "mallory"}}).encode()
    assert deliver(client, "gh", body, secret="a guessed secret", event="issues") == 401
    row = source_row(client.get("/admin/sources").text, "gh")
    assert re.search(
        r'<p class="last-error"><span class="label">Last error:</span> '
        r"a delivery was refused: its x-hub-signature-256 header was missing or wrong</p>",
        row,
    ), row
    assert "failing" in row and events_of(client) == []

    raw = {"id": "wiki-api", "kind": "jsonapi", "url": "https://wiki.example/api",
           "items": "items", "fields": {"title": "name"}}  # fmt: skip
    store = store_of(client)
    store.create_source(raw, actor="test", now=NOW)
    warning = "wiki-api: 1 of 3 items could not be mapped: field 'published' (when): not a date"
    later = NOW + timedelta(minutes=10)
    store.record(
        [PollRecord(parse_source(raw, "source", "db"), [], None, NOW, later, warning=warning)]
    )
    row = source_row(client.get("/admin/sources").text, "wiki-api")
    assert "Last poll, partly:</span> " + warning in html.unescape(row)
    assert "badge good" in row  # it succeeded, partly


def test_every_intranet_kind_has_a_form(client: TestClient) -> None:
    for kind in ("html", "jsonapi", "webhook"):
        page = client.get("/admin/sources/new", params={"kind": kind})
        assert page.status_code == 200, kind
        assert f"New {kind} source" in page.text
        assert bool(connector_class(kind).push) == ('id="hook-url"' in page.text), kind


def test_a_mailbox_row_shows_each_folders_last_uid_and_its_push_watch(client: TestClient) -> None:
    raw = {"id": "legal-mail", "kind": "imap", "host": "127.0.0.1", "tls": "none",
           "username": "tidings", "password": "env:TIDINGS_SECRET_IMAP",
           "folders": ["INBOX", "Matters/*"]}  # fmt: skip
    store = store_of(client)
    store.create_source(raw, actor="test", now=NOW)
    row = source_row(client.get("/admin/sources").text, "legal-mail")
    assert "No folder synced yet." in row
    assert "known to the poller process" in row  # this app runs no poller
    state = {"folders": {"INBOX": {"uidvalidity": 7, "last_uid": 42},
                         "Matters/Acme": {"uidvalidity": 9, "last_uid": 3}}}  # fmt: skip
    later = NOW + timedelta(minutes=10)
    store.record([PollRecord(parse_source(raw, "source", "db"), [], state, NOW, later)])
    row = source_row(client.get("/admin/sources").text, "legal-mail")
    cells = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(\d+)</td><td>(\d+)</td></tr>", row)
    assert cells == [("INBOX", "42", "7"), ("Matters/Acme", "3", "9")]
