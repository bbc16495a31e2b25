"""html sources against a real loopback HTTP server: through the connector
alone, and through the poller into a real store (the pipeline sanitises
what the connector hands over)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import load_config
from aggregator.connector import PollContext, Resources
from aggregator.pipeline import PollOutcome
from aggregator.poller import Poller
from aggregator.store import Store
from aggregator.types import Event
from connectors.html import HtmlConnector, HtmlOptions
from tests.support import FeedServer, write_config

pytestmark = pytest.mark.integration

NEWS = """<!DOCTYPE html><html><head><title>Firm news</title>
<script>document.write("<li>not an entry</li>")</script></head><body>
<ul class="news">{entries}</ul><footer>Rendered at {stamp}</footer></body></html>"""
ENTRY = """<li><h2><a href="{slug}.html">{title}</a></h2><span class="by">Jane Doe</span>
<time datetime="2026-03-0{day}T09:00:00Z">March {day}</time>
<div class="body"><p>About {title}. <img src="img/{slug}.png"></p>
<script>steal()</script></div></li>"""
STATUS = """<html><head><title>IT status</title></head><body>
<div id="status"><h1>Systems</h1><p>Mail: {mail}</p><p>VPN: up</p></div>
<aside>Visitors: {visitors}</aside></body></html>"""


def news(*titles: str, stamp: str = "10:00") -> str:
    rows = [
        ENTRY.format(slug=title.lower().replace(" ", "-"), title=title, day=n + 1)
        for n, title in enumerate(titles)
    ]
    return NEWS.format(entries="".join(rows), stamp=stamp)


def html_source(sid: str, url: str, body: str) -> str:
    """One [[sources]] table of kind html; `body` holds its own options."""
    return f'\n[[sources]]\nid = "{sid}"\nkind = "html"\nurl = "{url}"\ninterval = "1m"\n{body}\n'


PARTIAL = """items = "ul.news > li"
[sources.fields]
author = ".writer"
"""
LIST_OPTIONS = """items = "ul.news > li"
[sources.fields]
author = ".by"
content_html = "div.body"
"""


@asynccontextmanager
async def poller_for(
    tmp_path: Path, sources: str, *, http: str = ""
) -> AsyncIterator[tuple[Poller, Store]]:
    """A poller and its store for these sources, kept across several polls;
    `http` adds lines to the [http] table."""
    path = write_config(tmp_path, sources)
    path.write_text(path.read_text().replace("read_timeout = 2", f"read_timeout = 2\n{http}"))
    config = load_config(path)
    store = Store(config.store_url)
    store.sync_sources(config.sources, datetime.now(UTC), config_file=config.source_file)
    poller = Poller(config, store)
    try:
        yield poller, store
    finally:
        await poller.aclose()
        store.close()


async def poll(poller: Poller, sid: str) -> PollOutcome:
    [outcome] = await poller.poll_now([sid])
    return outcome


def stored(store: Store, sid: str) -> list[Event]:
    """The source's events, oldest first."""
    return [e for e in reversed(store.latest_events(viewer=None, limit=200)) if e.source_id == sid]


async def test_a_list_page_becomes_sanitised_events_with_links_resolved(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/pub/news.html", news("Merger", "Office move"), content_type="text/html",
                    etag='"v1"')  # fmt: skip
    source = html_source("news", feed_server.url("/pub/news.html"), LIST_OPTIONS)
    async with poller_for(tmp_path, source) as (poller, store):
        first = await poll(poller, "news")
        assert first.error is None and len(first.new_event_ids) == 2
        merger, move = stored(store, "news")
        assert merger.title == "Merger" and merger.url == feed_server.url("/pub/merger.html")
        assert merger.external_id == merger.url and merger.kind == "html"
        assert merger.actor.name == "Jane Doe"
        assert merger.published == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        assert "steal" not in merger.content_html and "<script" not in merger.content_html
        assert f'src="{feed_server.url("/pub/img/merger.png")}"' in merger.content_html
        assert merger.summary == "About Merger."
        assert move.title == "Office move"

        again = await poll(poller, "news")  # the server answers 304
        assert again.not_modified and again.new_event_ids == []
        assert feed_server.requests[-1][1].get("If-None-Match") == '"v1"'

        feed_server.put("/pub/news.html", news("Merger", "Office move", "Holidays"),
                        content_type="text/html", etag='"v2"')  # fmt: skip
        third = await poll(poller, "news")
        assert [store.get_event(i, viewer=None).title for i in third.new_event_ids] == ["Holidays"]
        state = store.source_state("news")[0] or {}
        assert (state["etag"], state["identity"]) == ('"v2"', "link")


async def test_a_watched_region_makes_one_update_per_change_and_nothing_else(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    def serve(mail: str, visitors: int) -> None:
        feed_server.put("/status.html", STATUS.format(mail=mail, visitors=visitors),
                        content_type="text/html; charset=utf-8")  # fmt: skip

    serve("up", 1)
    source = html_source("it", feed_server.url("/status.html"), 'watch = "#status"')
    async with poller_for(tmp_path, source) as (poller, store):
        baseline = await poll(poller, "it")
        assert baseline.error is None and baseline.new_event_ids == []  # taken silently
        state = store.source_state("it")[0] or {}
        assert state["text"] == "Systems\nMail: up\nVPN: up"

        serve("up", 2)  # elsewhere on the page
        assert (await poll(poller, "it")).new_event_ids == []
        serve("  up  ", 3)  # whitespace alone
        assert (await poll(poller, "it")).new_event_ids == []

        serve("<b>down</b> <script>alert(1)</script> &lt;see notes&gt;", 4)
        changed = await poll(poller, "it")
        assert changed.error is None and len(changed.new_event_ids) == 1
        event = store.get_event(changed.new_event_ids[0], viewer=None)
        assert event is not None
        assert (event.verb, event.object_type, event.title) == (
            "Update",
            "Page",
            "IT status changed",
        )
        assert "<del>- Mail: up</del>" in event.content_html
        assert "<ins>+ Mail: down &lt;see notes&gt;</ins>" in event.content_html  # text, escaped
        assert "alert" not in event.content_html
        assert event.summary.startswith("1 line added, 1 removed: - Mail: up")
        assert event.url == feed_server.url("/status.html")

        assert (await poll(poller, "it")).new_event_ids == []  # no change since
        serve("up", 5)
        assert len((await poll(poller, "it")).new_event_ids) == 1  # back up
        serve("<b>down</b> <script>alert(1)</script> &lt;see notes&gt;", 6)
        assert len((await poll(poller, "it")).new_event_ids) == 1  # down again: a new event
        assert [e.verb for e in stored(store, "it")] == ["Update"] * 3


async def test_selectors_that_match_nothing_are_recorded_naming_the_source(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/news.html", news("Merger"), content_type="text/html")
    url = feed_server.url("/news.html")
    sources = (
        html_source("gone", url, 'items = "ul.articles > li"')
        + html_source("moved", url, 'watch = "#status"')
        + html_source("partial", url, PARTIAL)
    )  # fmt: skip
    async with poller_for(tmp_path, sources) as (poller, store):
        outcomes = {o.source_id: o for o in await poller.poll_now()}
        statuses = {s.id: s for s in store.source_statuses(viewer=None)}
    gone = f"gone: items selector 'ul.articles > li' matched nothing on {url}"
    assert (outcomes["gone"].error or "").startswith(gone)
    assert statuses["gone"].last_error == outcomes["gone"].error
    assert statuses["gone"].consecutive_failures == 1
    assert (outcomes["moved"].error or "").startswith(
        f"moved: watch selector '#status' matched nothing on {url}"
    )
    assert outcomes["partial"].error is None and len(outcomes["partial"].new_event_ids) == 1
    assert statuses["partial"].last_warning == (
        "partial: fields.author selector '.writer' matched nothing in any of the 1 entries"
    )


async def test_pages_over_the_body_cap_or_nested_too_deep_fail_their_poll_only(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/huge.html", "<ul>" + "<li><a href='/x'>x</a></li>" * 20_000 + "</ul>",
                    content_type="text/html")  # fmt: skip
    feed_server.put("/deep.html", "<div>" * 50_000 + "<main>x</main>", content_type="text/html")
    feed_server.put("/fine.html", news("Merger"), content_type="text/html")
    sources = (
        html_source("huge", feed_server.url("/huge.html"), 'items = "li"')
        + html_source("deep", feed_server.url("/deep.html"), 'watch = "main"')
        + html_source("fine", feed_server.url("/fine.html"), 'items = "ul.news > li"')
    )
    async with poller_for(tmp_path, sources, http="max_body_bytes = 300000") as (poller, _):
        outcomes = {o.source_id: o for o in await poller.poll_now()}
    assert "larger than 300000 bytes" in (outcomes["huge"].error or "")
    assert (outcomes["deep"].error or "").startswith(
        f"deep: {feed_server.url('/deep.html')} nests elements more than 1,000 deep"
    )
    assert outcomes["fine"].error is None and len(outcomes["fine"].new_event_ids) == 1


def context(tmp_path: Path) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(
        source_id="page", now=datetime(2026, 11, 27, tzinfo=UTC), resources=Resources(),
        run_cpu=run_cpu, local_dirs=(tmp_path.resolve(),), base_dir=tmp_path,
    )  # fmt: skip


async def test_the_connector_keeps_validators_and_a_watch_baseline_in_its_state(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put("/s.html", STATUS.format(mail="up", visitors=1), content_type="text/html",
                    etag='"a"', headers={"Cache-Control": "max-age=120"})  # fmt: skip
    connector = HtmlConnector(HtmlOptions(url=feed_server.url("/s.html"), watch="#status"))
    ctx = context(tmp_path)
    try:
        first = await connector.poll(None, ctx)
        assert first.events == [] and first.min_interval == 120
        assert first.state is not None and first.state["etag"] == '"a"'
        again = await connector.poll(first.state, ctx)
        assert again.not_modified and again.state is None  # keeps the baseline
        feed_server.put("/s.html", STATUS.format(mail="down", visitors=1), content_type="text/html")
        changed = await connector.poll(first.state, ctx)
        [event] = changed.events
        assert event.external_id is not None and event.external_id.startswith(
            f"{feed_server.url('/s.html')}##status@"
        )
        assert changed.state is not None and changed.state["text"].endswith("Mail: down\nVPN: up")
        assert HtmlConnector.carry_state(changed.state) is None  # new options: a new baseline
    finally:
        await ctx.resources.aclose()


async def test_a_local_page_is_read_from_an_allowed_directory(tmp_path: Path) -> None:
    page = tmp_path / "news.html"
    page.write_text(news("Merger"))
    connector = HtmlConnector(HtmlOptions(url="news.html", items="ul.news > li"))
    result = await connector.poll(None, context(tmp_path))
    [event] = result.events
    assert event.url == (tmp_path / "merger.html").resolve().as_uri()
    assert result.state is not None and "version" in result.state
    unchanged = await connector.poll(result.state, context(tmp_path))
    assert unchanged.not_modified
    assert HtmlConnector.carry_state(result.state) == {"identity": "link"}
