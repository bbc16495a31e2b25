"""The Sources admin, in-process (Starlette's TestClient on SQLite, no poller):
health, forms generated from the options schema, file sources read-only,
Test without storing, secrets as references, OPML import, who may do what."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
from starlette.testclient import TestClient

from aggregator import preview
from aggregator.accounts import hash_password
from aggregator.config import SourceCommon, parse_config, parse_source
from aggregator.connector import Connector, ConnectorOptions, PollContext, Resources
from aggregator.decide import prepare
from aggregator.exceptions import ConnectorError
from aggregator.opml import parse_opml
from aggregator.registry import connector_class
from aggregator.secrets import SecretRef
from aggregator.store import FailureRecord, SourceStatus, Store
from aggregator.types import EventData, JSONObject, PollResult
from tests.stores import store_url
from tests.support import FeedServer, rss
from web.admin_sources import FILE_ONLY_OPTIONS, Preview, form_fields, slugify, unique_id
from web.app import create_app
from web.templating import templates

NOW = datetime.now(UTC)
# Seven feeds, one of them present already, nested outlines and one title-less folder.
OPML = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>A partner's reading list</title></head>
  <body>
    <outline type="rss" text="Court rulings" xmlUrl="https://rulings.example.com/feed.xml"/>
    <outline type="rss" text="Tax bulletin" xmlUrl="https://tax.example.com/bulletin.rss"/>
    <outline type="rss" text="Court rulings (Atom)" xmlUrl="https://example.com/feed.atom"/>
    <outline type="rss" text="Old RSS 0.9" xmlUrl="https://rulings.example.com/feed.rss09"/>
    <outline text="Colleagues">
      <outline type="rss" text="Ann's notes" xmlUrl="https://blogs.example.com/~ann/posts.rss"/>
      <outline text="Partners">
        <outline type="rss" text="Notes by Ben" xmlUrl="https://blogs.example.com/~ben/.rss"/>
      </outline>
    </outline>
    <outline text="Markets">
      <outline type="rss" text="Deals daily" xmlUrl="https://deals.example.com/index.php?type=rss"/>
    </outline>
  </body>
</opml>
"""
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
WIKI_ERROR = "https://e.org/w: HTTP 503 Service Unavailable (the wiki is being upgraded)"
FEED = "/feed.xml"
ROOT_PASSWORD = "root password"
ROOT_HASH = hash_password(ROOT_PASSWORD)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """Signed in as the admin `root`. One file source, `wiki`, with 30 events
    and a failed last poll."""
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "server": {"allowed_hosts": ["testserver"]},
            "poller": {"enabled": False},
            "sources": [
                {"id": "wiki", "kind": "feed", "url": "https://e.org/w", "title": "The Wiki"},
            ],
        },
        tmp_path / "config.toml",
    )
    store = Store(config.store_url)
    store.sync_sources(config.sources, NOW, config_file=str(config.path))
    wiki = config.sources[0]
    items = [EventData(external_id=f"w-{i}", title=f"wiki item {i}") for i in range(30)]
    store.record_poll(wiki, prepare(items), state=None, now=NOW, next_poll_at=NOW)
    later = NOW + timedelta(minutes=10)
    store.record_failure("wiki", WIKI_ERROR, now=later, next_poll_at=later)
    store.people.create_user("root", password_hash=ROOT_HASH, admin=True, actor="test", now=NOW)
    store.close()
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as c:
        login(c, "root", ROOT_PASSWORD)
        yield c


def store_of(client: TestClient) -> Store:
    store: Store = client.app.state.tidings.store  # type: ignore[attr-defined]
    return store


def statuses(client: TestClient) -> dict[str, SourceStatus]:
    return {s.id: s for s in store_of(client).source_statuses(viewer=None, now=NOW)}


def csrf(client: TestClient) -> str:
    found = CSRF.search(client.get("/admin/sources").text)
    assert found, "no CSRF token on the sources page"
    return found.group(1)


def post(client: TestClient, path: str, data: dict[str, Any] | None = None) -> httpx2.Response:
    return client.post(
        path, data={**(data or {}), "csrf_token": csrf(client)}, follow_redirects=False
    )


def new_feed(client: TestClient, **fields: str) -> httpx2.Response:
    form = {"action": "save", "enabled": "on", "track_updates": "on", "obey_hints": "on", **fields}
    return post(client, "/admin/sources/new?kind=feed", form)


def field_error(page: str, name: str) -> str:
    """The message next to input `name`; asserts the input points at it."""
    found = re.search(rf'<p class="field-error" id="f-{name}-error">([^<]*)</p>', page)
    assert found, f"no error next to {name}"
    control = re.search(rf'<(?:input|textarea|select) id="f-{name}"[^>]*>', page)
    assert control, f"no input {name}"
    assert 'aria-invalid="true"' in control.group(0)
    assert f"f-{name}-error" in control.group(0), "aria-describedby does not name the error"
    return found.group(1)


def input_value(page: str, name: str) -> str:
    found = re.search(rf'<input id="f-{name}" name="{name}" value="([^"]*)"', page)
    assert found, f"no input {name}"
    return found.group(1)


def login(client: TestClient, name: str, password: str) -> None:
    client.cookies.clear()
    found = CSRF.search(client.get("/login").text)
    assert found
    data = {"name": name, "password": password, "csrf_token": found.group(1)}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303


def add_people(client: TestClient) -> None:
    people = store_of(client).people
    people.create_user(
        "ann", password_hash=hash_password("correct horse"), admin=True, actor="test", now=NOW
    )
    people.create_user(
        "bob", password_hash=hash_password("battery staple"), groups=["sales"], actor="test",
        now=NOW,
    )  # fmt: skip


def db_source(client: TestClient, sid: str, url: str, **extra: Any) -> None:
    raw = {"id": sid, "kind": "feed", "url": url, **extra}
    store_of(client).create_source(raw, actor="test", now=NOW)


# --- the list ----------------------------------------------------------------------


def test_list_shows_health_with_the_full_last_error(client: TestClient) -> None:
    page = client.get("/admin/sources")
    assert page.status_code == 200
    text = page.text
    assert "The Wiki" in text and "config file" in text
    assert "HTTP 503 Service Unavailable (the wiki is being upgraded)" in text
    assert "4.3" in text  # 30 events this week, per day
    assert 'class="num bad">1<' in text  # one failure in a row
    assert "defined in the config file" in text
    assert "/admin/sources/wiki/edit" not in text and "/admin/sources/wiki/delete" not in text
    assert "/admin/sources/wiki/poll" in text and "/admin/sources/wiki/test" in text


def test_notices_are_fixed_texts(client: TestClient) -> None:
    page = client.get("/admin/sources", params={"notice": "<b>pwned</b>", "source": "x"}).text
    assert "pwned" not in page
    page = client.get("/admin/sources", params={"notice": "created", "source": "Call 555"}).text
    assert "Call 555" not in page and "Source the source created" in page
    page = client.get("/admin/sources", params={"notice": "deleted", "n": "7; evil"}).text
    assert "evil" not in page and "with its 0 events" in page


# --- add, with errors next to the fields ---------------------------------------------


def test_bad_input_gets_messages_next_to_fields_and_changes_nothing(client: TestClient) -> None:
    before = statuses(client)
    got = new_feed(
        client, id="bad id", url="not a url", interval="1s", audience="everyone, bad group!"
    )
    assert got.status_code == 400
    page = got.text
    assert "letters, digits" in field_error(page, "id")
    assert "http(s) URL" in field_error(page, "url")
    assert "at least 5s" in field_error(page, "interval")
    assert "bad group!" in field_error(page, "audience")
    assert "Nothing was saved" in page
    # The entered values stay.
    assert input_value(page, "url") == "not a url"
    assert input_value(page, "interval") == "1s"
    assert input_value(page, "audience") == "everyone, bad group!"
    assert statuses(client) == before


def test_both_interval_and_cron_is_an_error_on_cron(client: TestClient) -> None:
    got = new_feed(
        client, id="both", url="https://e.org/b", interval="10m", cron="*/5 8-18 * * mon-fri"
    )
    assert got.status_code == 400
    assert "not both" in field_error(got.text, "cron")
    assert "both" not in statuses(client)


def test_a_web_source_may_not_read_local_files(client: TestClient) -> None:
    for url in ("file:///etc/passwd", "FILE:/etc/hosts"):
        got = new_feed(client, id="local", url=url)
        assert got.status_code == 400
        assert "cannot read the server" in field_error(got.text, "url")
    got = new_feed(client, id="local", url="/etc/passwd")
    assert got.status_code == 400 and "http(s) URL" in field_error(got.text, "url")
    for ref in ("file:/etc/shadow", "env:HOME"):  # the server's own, not the admins'
        got = new_feed(client, id="local", url="https://e.org/x", username="u", password=ref)
        assert got.status_code == 400
        assert "env:TIDINGS_SECRET_*" in field_error(got.text, "password")
    assert "local" not in statuses(client)


def test_create_then_edit_disable_enable_delete(client: TestClient) -> None:
    got = new_feed(
        client, id="team-blog", title="Team blog", url="https://blog.example/feed.xml",
        audience="everyone", tags="engineering, weekly", headers="X-Team: blue",
    )  # fmt: skip
    assert got.status_code == 303
    assert got.headers["location"] == "/admin/sources?notice=created&source=team-blog"
    listing = client.get(got.headers["location"]).text
    assert "Source team-blog created" in listing
    assert "/admin/sources/team-blog/edit" in listing
    status = statuses(client)["team-blog"]
    assert (status.origin, status.enabled, status.audience) == ("db", True, ("everyone",))
    _, raw = store_of(client).source_table("team-blog") or ("", {})
    assert raw == {
        "id": "team-blog", "kind": "feed", "title": "Team blog",
        "url": "https://blog.example/feed.xml", "headers": {"X-Team": "blue"},
        "audience": ["everyone"], "tags": ["engineering", "weekly"],
    }  # fmt: skip

    form = client.get("/admin/sources/team-blog/edit").text
    assert input_value(form, "url") == "https://blog.example/feed.xml"
    assert input_value(form, "tags") == "engineering, weekly"
    assert ">X-Team: blue</textarea>" in form
    assert 'id="f-id"' not in form  # the id is fixed once made
    got = post(
        client, "/admin/sources/team-blog/edit",
        {"action": "save", "title": "The team blog", "url": "https://blog.example/feed.xml",
         "audience": "sales", "enabled": "on", "track_updates": "on", "obey_hints": "on"},
    )  # fmt: skip
    assert got.status_code == 303 and "notice=saved" in got.headers["location"]
    status = statuses(client)["team-blog"]
    assert (status.title, status.audience) == ("The team blog", ("sales",))

    got = post(
        client, "/admin/sources/team-blog/edit",
        {"action": "save", "url": "https://blog.example/feed.xml", "audience": "Admins only",
         "enabled": "on", "track_updates": "on", "obey_hints": "on"},
    )  # fmt: skip
    assert got.status_code == 303 and statuses(client)["team-blog"].audience == ()
    form = client.get("/admin/sources/team-blog/edit").text
    assert input_value(form, "audience") == "admins only"

    bad = post(client, "/admin/sources/team-blog/edit", {"action": "save", "url": ""})
    assert bad.status_code == 400 and field_error(bad.text, "url") == "required"
    assert statuses(client)["team-blog"].audience == ()

    assert post(client, "/admin/sources/team-blog/disable").status_code == 303
    assert statuses(client)["team-blog"].enabled is False
    assert "/admin/sources/team-blog/enable" in client.get("/admin/sources").text
    assert post(client, "/admin/sources/team-blog/enable").status_code == 303
    assert statuses(client)["team-blog"].enabled is True

    store = store_of(client)
    source = parse_source(raw, "source", "db")
    items = [EventData(external_id=f"b-{i}", title=f"blog {i}") for i in range(3)]
    store.record_poll(source, prepare(items), state=None, now=NOW, next_poll_at=NOW)
    confirm = client.get("/admin/sources/team-blog/delete")
    assert confirm.status_code == 200 and 'id="event-count">3<' in confirm.text
    got = post(client, "/admin/sources/team-blog/delete")
    assert got.status_code == 303
    assert "with its 3 events" in client.get(got.headers["location"]).text
    assert "team-blog" not in statuses(client)
    assert {e.source_id for e in store.latest_events(viewer=None, limit=500)} == {"wiki"}


def test_an_empty_id_is_made_from_the_title(client: TestClient) -> None:
    db_source(client, "release-notes", "https://e.org/r")
    got = new_feed(client, title="Release notes", url="https://e.org/r2")
    assert got.status_code == 303
    assert "release-notes-2" in statuses(client)


def test_file_sources_are_read_only(client: TestClient) -> None:
    page = client.get("/admin/sources/wiki/edit")
    assert page.status_code == 409 and "config file" in page.text
    edit = post(client, "/admin/sources/wiki/edit", {"url": "https://evil.example/"})
    assert edit.status_code == 409
    for action in ("disable", "delete"):
        got = post(client, f"/admin/sources/wiki/{action}")
        assert got.status_code == 409 and "config.toml" in got.text, action
    assert client.get("/admin/sources/wiki/delete").status_code == 409
    wiki = statuses(client)["wiki"]
    assert wiki.enabled and wiki.event_count == 30
    assert client.get("/admin/sources/nope/edit").status_code == 404


def test_without_csrf_token_nothing_changes(client: TestClient) -> None:
    db_source(client, "keep", "https://e.org/k")
    before = statuses(client)
    form = {"action": "save", "id": "sneaky", "url": "https://e.org/s"}
    assert client.post("/admin/sources/new?kind=feed", data=form).status_code == 403
    for action in ("disable", "delete", "poll"):
        got = client.post(f"/admin/sources/keep/{action}", data={"csrf_token": "forged"})
        assert got.status_code == 403, action
    assert statuses(client) == before


def test_poll_now_without_a_poller_makes_the_source_due(client: TestClient) -> None:
    db_source(client, "later", "https://e.org/l")
    far = NOW + timedelta(days=1)
    store_of(client).set_next_poll(["later"], far)
    got = post(client, "/admin/sources/later/poll")
    assert got.status_code == 303 and "notice=queued" in got.headers["location"]
    next_poll = statuses(client)["later"].next_poll_at
    assert next_poll is not None and next_poll < far


# --- Test: a dry run that stores nothing ---------------------------------------------


def test_test_shows_the_events_a_poll_would_create_and_stores_nothing(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put(
        FEED, rss([{"guid": "a", "title": "Alpha news"}, {"guid": "b", "title": "Beta"}])
    )
    store = store_of(client)
    events_before, sources_before = store.latest_events(viewer=None, limit=500), statuses(client)
    got = new_feed(client, id="preview", url=feed_server.url(FEED), action="test")
    assert got.status_code == 200
    page = got.text
    assert "the events a poll would create" in page and "Nothing was stored" in page
    assert page.index("Beta") < page.index("Alpha news")  # newest first
    assert "https://example.org/a" in page and "Body of Alpha news" in page
    assert input_value(page, "url") == feed_server.url(FEED)  # the form is still there
    assert feed_server.hits(FEED) == 1
    assert store.latest_events(viewer=None, limit=500) == events_before
    assert statuses(client) == sources_before

    db_source(client, "saved", feed_server.url(FEED))
    before = statuses(client)["saved"]
    got = post(client, "/admin/sources/saved/test")
    assert got.status_code == 200 and "Alpha news" in got.text
    assert statuses(client)["saved"] == before
    assert store.latest_events(viewer=None, limit=500) == events_before


def test_test_reports_the_connectors_error(client: TestClient, feed_server: FeedServer) -> None:
    feed_server.put(FEED, "this is not a feed", content_type="text/plain")
    got = new_feed(client, id="broken", url=feed_server.url("/missing.xml"), action="test")
    assert got.status_code == 200
    assert "Test failed" in got.text and "404" in got.text
    got = new_feed(client, id="broken", url=feed_server.url(FEED), action="test")
    assert "Test failed" in got.text and "not an RSS/Atom/JSON feed" in got.text
    assert "broken" not in statuses(client)


# --- secrets are references -----------------------------------------------------------


def test_a_secret_is_shown_as_its_reference_never_its_value(
    client: TestClient,
    feed_server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = "s3cret-value-that-must-not-show"
    monkeypatch.setenv("TIDINGS_SECRET_TEST_PASSWORD", value)
    feed_server.put(FEED, rss([{"guid": "p", "title": "Behind a password"}]))
    got = new_feed(
        client, id="private", url=feed_server.url(FEED), username="tidings",
        password="env:TIDINGS_SECRET_TEST_PASSWORD",
    )  # fmt: skip
    assert got.status_code == 303
    form = client.get("/admin/sources/private/edit").text
    assert input_value(form, "password") == "env:TIDINGS_SECRET_TEST_PASSWORD"
    assert 'placeholder="env:TIDINGS_SECRET_NAME"' in form

    tested = post(
        client, "/admin/sources/private/edit",
        {"action": "test", "url": feed_server.url(FEED), "username": "tidings",
         "password": "env:TIDINGS_SECRET_TEST_PASSWORD", "enabled": "on",
         "track_updates": "on", "obey_hints": "on"},
    )  # fmt: skip
    assert tested.status_code == 200 and "Behind a password" in tested.text
    sent = [h for path, h in feed_server.requests if path == FEED][-1]
    assert sent["Authorization"].startswith("Basic ")  # resolved for the poll only
    row_test = post(client, "/admin/sources/private/test").text
    pages = [form, tested.text, row_test, client.get("/admin/sources").text]
    assert all(value not in page for page in pages)
    assert value not in caplog.text


def test_a_pasted_secret_is_refused_and_not_sent_back(client: TestClient) -> None:
    got = new_feed(
        client, id="pasted", url="https://e.org/p", username="u", password="hunter2-pasted"
    )
    assert got.status_code == 400
    assert "never the secret itself" in field_error(got.text, "password")
    assert "hunter2-pasted" not in got.text
    assert "pasted" not in statuses(client)


# --- OPML import ------------------------------------------------------------------------


def test_opml_import_creates_feeds_and_skips_what_is_present(client: TestClient) -> None:
    opml = OPML
    db_source(client, "already", "https://example.com/feed.atom")
    got = client.post(
        "/admin/sources/import",
        data={"csrf_token": csrf(client), "audience": "sales, legal"},
        files={"file": ("example.opml", opml, "text/x-opml")},
        follow_redirects=False,
    )
    assert got.status_code == 303
    notice = client.get(got.headers["location"]).text
    assert "6 created, 1 already present, 0 invalid" in notice
    found = statuses(client)
    made = {sid: s for sid, s in found.items() if sid not in ("wiki", "already")}
    assert len(made) == 6
    assert "court-rulings" in made and "court-rulings-atom" not in made
    assert {s.audience for s in made.values()} == {("sales", "legal")}
    assert made["ann-s-notes"].title == "Ann's notes"
    _, raw = store_of(client).source_table("notes-by-ben") or ("", {})
    assert raw["url"] == "https://blogs.example.com/~ben/.rss"

    # Pasted the second time: everything is there already.
    got = post(client, "/admin/sources/import", {"opml": opml.decode(), "audience": "everyone"})
    assert got.status_code == 303
    assert "0 created, 7 already present" in client.get(got.headers["location"]).text
    assert statuses(client).keys() == found.keys()


def test_opml_import_refuses_what_is_not_opml(client: TestClient) -> None:
    before = statuses(client)
    got = post(client, "/admin/sources/import", {"opml": "https://e.org/list.opml"})
    assert got.status_code == 400
    assert "not an OPML" in got.text and 'id="opml-error"' in got.text
    got = post(client, "/admin/sources/import", {"opml": "<opml/>", "audience": "bad group!"})
    assert got.status_code == 400 and 'id="f-audience-error"' in got.text
    assert statuses(client) == before


def test_an_unknown_kind_offers_the_known_ones(client: TestClient) -> None:
    got = client.get("/admin/sources/new", params={"kind": "gopher"})
    assert got.status_code == 404 and "/admin/sources/new?kind=feed" in got.text


def test_ids_are_slugs_made_unique() -> None:
    assert slugify("Zürich — News & Notes!") == "zurich-news-notes"
    assert unique_id("news", {"news", "news-2"}) == "news-3"
    assert unique_id("", set()) == "source"


class KitchenSinkOptions(ConnectorOptions):
    url: str
    mode: Literal["fast", "slow"] = "fast"
    port: int = 993
    ratio: float | None = None
    verify: bool = True
    folders: list[str] = ["INBOX"]
    fields: dict[str, str] = {}
    password: SecretRef | None = None


class KitchenSink(Connector[KitchenSinkOptions]):
    kind = "sink"
    Options = KitchenSinkOptions
    items: list[EventData] = []
    crash: Exception | None = None

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        assert state is None, "a test poll starts from scratch"
        if self.crash is not None:
            raise self.crash
        return PollResult(events=self.items, state={"cursor": 1})


def test_the_form_follows_the_options_schema() -> None:
    widgets = {f.name: (f.widget, f.choices, f.required) for f in form_fields(KitchenSink)}
    assert widgets["url"] == ("text", (), True)
    assert widgets["mode"] == ("select", ("fast", "slow"), False)
    assert widgets["port"][0] == widgets["ratio"][0] == "number"
    assert widgets["verify"][0] == "checkbox" and widgets["folders"][0] == "list"
    assert widgets["fields"][0] == "mapping" and widgets["password"][0] == "secret"


async def test_preview_is_newest_first_sanitised_limited_and_wraps_crashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(preview, "connector_class", lambda kind: KitchenSink)
    source = parse_source({"id": "s", "kind": "feed", "url": "https://e.org/"}, "source", "db")

    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    ctx = PollContext(source_id="s", now=NOW, resources=Resources(), run_cpu=run_cpu)
    KitchenSink.items = [
        EventData(
            external_id=str(n),
            title=f"item {n}",
            content_html=f"<p onclick='x()'>hi {n}<script>bad()</script></p>",
            published=NOW - timedelta(hours=10 - n),
        )
        for n in range(5)
    ]
    found = (await preview.preview_poll(source, ctx, limit=3)).items
    assert [p.data.title for p in found] == ["item 4", "item 3", "item 2"]
    assert all("script" not in p.data.content_html and "onclick" not in p.data.content_html
               for p in found)  # fmt: skip
    monkeypatch.setattr(KitchenSink, "crash", KeyError("items"))
    with pytest.raises(ConnectorError, match="the connector failed: KeyError"):
        await preview.preview_poll(source, ctx)
    await ctx.resources.aclose()


def test_a_tests_notes_are_listed_escaped() -> None:
    macros = templates.get_template("admin/sources_macros.html").module
    found = Preview([], None, NOW, notes=("logged in as a", "<b>Odd</b>: 3 message(s)"))
    page = str(macros.preview(found, 20))  # type: ignore[attr-defined]
    assert '<ul class="preview-notes" id="preview-notes">' in page
    assert "<li>logged in as a</li>" in page and "&lt;b&gt;Odd&lt;/b&gt;: 3" in page
    assert "preview-notes" not in str(macros.preview(Preview([], None, NOW), 20))  # type: ignore[attr-defined]


def test_every_common_key_has_an_input() -> None:
    names = {f.name for f in form_fields(connector_class("feed"))}
    assert set(SourceCommon.model_fields) - {"kind"} <= names
    assert set(connector_class("feed").Options.model_fields) - FILE_ONLY_OPTIONS <= names
    assert not FILE_ONLY_OPTIONS & names


# --- who may ----------------------------------------------------------------------------

ADMIN_GETS = [
    "/admin/sources", "/admin/sources/new?kind=feed", "/admin/sources/import",
    "/admin/sources/mine/edit", "/admin/sources/mine/delete",
]  # fmt: skip
ADMIN_POSTS = [
    "/admin/sources/new?kind=feed", "/admin/sources/import", "/admin/sources/mine/edit",
    "/admin/sources/mine/disable", "/admin/sources/mine/enable", "/admin/sources/mine/delete",
    "/admin/sources/mine/poll", "/admin/sources/mine/test",
]  # fmt: skip


def test_members_get_403_everywhere_admins_sign_in_and_are_audited(client: TestClient) -> None:
    db_source(client, "mine", "https://e.org/m")
    add_people(client)
    client.cookies.clear()
    anonymous = client.get("/admin/sources", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")

    login(client, "bob", "battery staple")
    token = CSRF.search(client.get("/").text)
    assert token
    for path in ADMIN_GETS:
        assert client.get(path).status_code == 403, path
    for path in ADMIN_POSTS:
        data = {"csrf_token": token.group(1), "id": "bobs", "url": "https://e.org/b"}
        assert client.post(path, data=data).status_code == 403, path
    assert set(statuses(client)) == {"wiki", "mine"} and statuses(client)["mine"].enabled

    login(client, "ann", "correct horse")
    for path in ADMIN_GETS:
        assert client.get(path).status_code == 200, path
    assert new_feed(client, id="anns", url="https://e.org/a").status_code == 303
    entry = store_of(client).people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.target) == ("ann", "source.create", "anns")


# --- finding a web page's feeds, health, OPML export and import problems ----------------

OFFER = re.compile(r'<li class="offer">\s*<form method="post" action="([^"]+)">(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def test_test_on_a_web_page_offers_its_feeds_and_using_one_tests_it(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put(
        "/team/",
        '<html><head><title>Team</title><link rel="alternate" type="application/rss+xml" '
        'href="/team/feed.xml" title="Team &amp; friends"></head><body>hi</body></html>',
        content_type="text/html",
    )
    feed_server.put("/team/feed.xml", rss([{"guid": "t", "title": "Team news"}]))
    got = new_feed(
        client, url=feed_server.url("/team/"), action="test", tags="engineering",
        audience="sales",
    )  # fmt: skip
    assert got.status_code == 200
    page = got.text
    assert "Test failed" in page and "This is a web page; it offers 1 feed" in page
    offers = OFFER.findall(page)
    assert len(offers) == 1
    action, body = offers[0]
    assert action == "/admin/sources/new?kind=feed"
    assert "Team &amp; friends" in body and '<span class="badge">rss</span>' in body
    fields = {name: html.unescape(value) for name, value in HIDDEN.findall(body)}
    assert fields["url"] == feed_server.url("/team/feed.xml")
    assert fields["title"] == "Team & friends"  # none was typed: the feed's own
    assert (fields["tags"], fields["audience"], fields["action"]) == (
        "engineering",
        "sales",
        "test",
    )
    assert fields["csrf_token"] == csrf(client)
    assert feed_server.hits("/team/feed.xml") == 0  # declared, so not fetched to find it

    used = client.post(action, data=fields)
    assert used.status_code == 200
    assert "the events a poll would create" in used.text and "Team news" in used.text
    assert input_value(used.text, "url") == feed_server.url("/team/feed.xml")
    assert input_value(used.text, "title") == "Team &amp; friends"
    assert input_value(used.text, "tags") == "engineering"
    assert set(statuses(client)) == {"wiki"}  # a test stores nothing


def test_test_on_a_page_without_feeds_says_none_was_found(
    client: TestClient, feed_server: FeedServer
) -> None:
    feed_server.put("/plain/", "<html><title>Nothing</title></html>", content_type="text/html")
    got = new_feed(client, id="plain", url=feed_server.url("/plain/"), action="test")
    assert got.status_code == 200
    assert "No feed found on this page" in got.text and 'id="no-offers"' in got.text
    assert not OFFER.findall(got.text)
    assert feed_server.hits("/feed.xml") == 1  # common addresses were tried
    # A feed that fails is not a web page: nothing is looked for.
    broken = new_feed(client, id="broken", url=feed_server.url("/missing.xml"), action="test")
    assert "Test failed" in broken.text and 'class="offers"' not in broken.text


def test_list_shows_alerts_retries_and_a_stopped_source_to_resume(client: TestClient) -> None:
    store = store_of(client)
    retry = NOW + timedelta(hours=3)
    for _ in range(4):  # five in a row with the fixture's: alert_after's default
        store.record_failure("wiki", WIKI_ERROR, now=NOW, next_poll_at=retry)
    db_source(client, "gone", "https://e.org/gone")
    reason = "HTTP 410 Gone from https://e.org/gone"
    store.record([FailureRecord("gone", reason, NOW, NOW, gone=True)])

    page = client.get("/admin/sources").text
    wiki = source_row(page, "wiki")
    assert '<span class="badge alert"' in wiki and ">alert</span>" in wiki
    assert "retry <time" in wiki and "(5 in a row)" in wiki
    gone = source_row(page, "gone")
    assert ">stopped</span>" in gone and "badge alert" not in gone
    assert f"Stopped by the poller:</span> {reason} — Resume polls it again." in gone
    assert gone.count(reason) == 1  # the last error is the same: said once
    assert "/admin/sources/gone/poll" not in gone and "due now" not in gone
    assert "/admin/sources/gone/resume" in gone

    assert (
        client.post("/admin/sources/gone/resume", data={"csrf_token": "forged"}).status_code == 403
    )
    got = post(client, "/admin/sources/gone/resume")
    assert got.status_code == 303
    assert "Source gone resumed" in client.get(got.headers["location"]).text
    status = statuses(client)["gone"]
    assert (status.disabled_reason, status.consecutive_failures) == (None, 0)
    entry = store.people.audit_log(limit=1)[0]
    assert (entry.actor, entry.action, entry.target) == ("root", "source.resume", "gone")
    assert post(client, "/admin/sources/nope/resume").status_code == 404


def source_row(page: str, source_id: str) -> str:
    found = re.search(rf'<tbody class="[^"]*" id="source-{source_id}".*?</tbody>', page, re.S)
    assert found, f"no row for {source_id}"
    return found.group(0)


def test_export_downloads_every_feed_source_as_opml(client: TestClient) -> None:
    db_source(client, "team", "https://team.example/feed", tags=["engineering"], title="Team")
    got = client.get("/admin/sources/export.opml")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/x-opml")
    assert 'filename="tidings-sources.opml"' in got.headers["content-disposition"]
    feeds = {(f.url, f.title, f.tags) for f in parse_opml(got.content).feeds}
    assert feeds == {
        ("https://e.org/w", "The Wiki", ()),
        ("https://team.example/feed", "Team", ("engineering",)),
    }
    assert '/admin/sources/export.opml"' in client.get("/admin/sources").text
    add_people(client)
    login(client, "bob", "battery staple")
    assert client.get("/admin/sources/export.opml").status_code == 403


def test_opml_import_with_problems_shows_them_by_line_and_the_tags_made(
    client: TestClient,
) -> None:
    document = """<?xml version="1.0"?>
<opml version="2.0"><body>
  <outline text="Clients">
    <outline text="Acme news" xmlUrl="https://acme.example/feed" category="/Deals,watch"/>
    <outline text="An empty folder"/>
  </outline>
  <outline text="Acme again" xmlUrl="https://ACME.example/feed"/>
  <outline text="Wiki" xmlUrl="https://e.org/w"/>
  <outline text="Mail" xmlUrl="mailto:someone@example.org"/>
</body></opml>"""
    got = post(client, "/admin/sources/import", {"opml": document, "audience": "everyone"})
    assert got.status_code == 200
    page = got.text
    assert "OPML import: 1 created, 2 already present, 2 invalid." in page
    problems = re.findall(r'<li class="(\w+)" data-line="(\d+)">(.*?)</li>', page)
    assert [(kind, line) for kind, line, _ in problems] == [
        ("invalid", "5"), ("duplicate", "7"), ("invalid", "9"),
    ]  # fmt: skip
    assert "&#39;An empty folder&#39; has no xmlUrl" in problems[0][2]
    assert "already on line 4" in problems[1][2]
    assert "&#39;mailto:someone@example.org&#39; is not an http(s) URL" in problems[2][2]
    created = re.search(r'<li data-source="acme-news">(.*?)</li>', page)
    assert created
    assert re.findall(r'<span class="badge">([^<]*)</span>', created.group(1)) == [
        "Clients", "Deals", "watch",
    ]  # fmt: skip
    _, raw = store_of(client).source_table("acme-news") or ("", {})
    assert raw["tags"] == ["Clients", "Deals", "watch"]
    assert set(statuses(client)) == {"wiki", "acme-news"}
