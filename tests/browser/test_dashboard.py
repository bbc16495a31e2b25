"""The dashboard in Debian's Chromium, against a real `tidings serve` polling a
real loopback feed: live arrival without reload, hostile entries stay inert
(server-rendered and live), and a restart of the server is survived with a
resume that shows each event exactly once.

Synchronisation is always on a real condition (DOM state, API answer); the
waits are generous because a poll comes every 5 s (plus up to 10 % jitter) and
the page reconnects with exponential backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import httpx2
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    expect,
)

from tests.browser.chromium import new_context
from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.browser

FEED = "/feed.xml"
LIVE_MS = 20_000  # one poll interval (5-5.5 s) after a change, with room to spare
RECONNECT_MS = 30_000  # restart plus the page's reconnect backoff

EVENTS = "#events > li.event"


# --- fixtures ------------------------------------------------------------------


@dataclass
class Dashboard:
    page: Page
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    def open(self, proc: TidingsProcess) -> None:
        response = self.page.goto(proc.base + "/")
        assert response is not None and response.status == 200
        self.page.evaluate("window.__marker = 'no-reload'")

    def events(self) -> list[str]:
        return self.page.locator(EVENTS).evaluate_all("els => els.map(e => e.dataset.id)")

    def titles(self) -> list[str]:
        return self.page.locator(f"{EVENTS} h2.title").all_text_contents()

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("window.__marker") == "no-reload", "the page was reloaded"

    def entry(self, title: str) -> Locator:
        return self.page.locator(EVENTS).filter(has=self.page.get_by_text(title, exact=True))


@pytest.fixture
def dashboard(browser: Browser) -> Iterator[Dashboard]:
    context = new_context(browser)
    page = context.new_page()
    board = Dashboard(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            board.console_errors.append(f"{msg.text} @ {msg.location.get('url')}")

    page.on("pageerror", lambda err: board.page_errors.append(str(err)))
    page.on("console", on_console)
    page.on("websocket", lambda ws: board.websockets.append(ws.url))
    try:
        yield board
    finally:
        context.close()


def upstream_source(feed_server: FeedServer) -> str:
    return feed_source("upstream", feed_server.url(FEED), title="Upstream")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls a real condition (not a fixed sleep) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def stored_titles(proc: TidingsProcess) -> list[str]:
    got = httpx2.get(proc.base + "/api/events", timeout=5)
    got.raise_for_status()
    return [e["title"] for e in got.json()["events"]]


# --- 1. live arrival -------------------------------------------------------------


def test_new_entry_arrives_live_without_reload(
    dashboard: Dashboard, feed_server: FeedServer, tmp_path: Path
) -> None:
    first = {"guid": "live-1", "title": "First tiding"}
    second = {"guid": "live-2", "title": "Second tiding, pushed live"}
    feed_server.put(FEED, rss([first]), etag='"v1"')
    page = dashboard.page
    with TidingsProcess(write_config(tmp_path, upstream_source(feed_server))) as proc:
        dashboard.open(proc)
        status = page.locator("#live-status")
        expect(status).to_have_attribute("data-state", "live", timeout=LIVE_MS)
        expect(status).to_have_text("live")
        expect(dashboard.entry(first["title"])).to_have_count(1, timeout=LIVE_MS)

        feed_server.put(FEED, rss([first, second]), etag='"v2"')
        arrived = dashboard.entry(second["title"])
        expect(arrived).to_have_count(1, timeout=LIVE_MS)

        dashboard.assert_not_reloaded()
        # Newest first, rendered by app.js (not by the server), nothing doubled.
        expect(page.locator(EVENTS)).to_have_count(2)
        assert dashboard.titles() == [second["title"], first["title"]]
        expect(page.locator(EVENTS).first).to_have_class("event fresh")
        ids = dashboard.events()
        assert len(set(ids)) == len(ids) == 2
        assert int(ids[0]) > int(ids[1])
        assert page.locator("#events").get_attribute("data-cursor") == ids[0]
        expect(page.locator("#empty")).to_be_hidden()
        expect(status).to_have_attribute("data-state", "live")
        assert dashboard.page_errors == []
    assert len(dashboard.websockets) == 1, "one connection for the whole test"


# --- 2. hostile entries ----------------------------------------------------------

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=2">'
JS_LINK = '<a href="javascript:window.__xss=3">click me</a>'
# Escaped in the feed's HTML, so the stored plain-text summary *is* this markup.
SUMMARY_MARKUP = '<img src=x onerror="window.__xss=5">'


def hostile(guid: str, label: str) -> dict[str, str]:
    return {
        "guid": guid,
        # rss() puts the title into the XML as is: escape it so the *text* of the
        # title is the markup, the way a real feed delivers it.
        "title": escape(f"{SCRIPT}{IMG} {label}"),
        "description": f"{SCRIPT}{IMG}{JS_LINK} {escape(SUMMARY_MARKUP)} {label}",
    }


def hostile_feed(items: list[dict[str, str]], js_links: set[str]) -> str:
    """rss() with the link of each item in `js_links` (by guid) a javascript: URL;
    the others keep their https link, so the title goes through the <a> branch."""
    body = rss(items)
    for guid in {item["guid"] for item in items} & js_links:
        link = f"<link>https://example.org/{guid}</link>"
        assert link in body
        body = body.replace(link, f"<link>javascript:window.__xss=4;//{guid}</link>")
    return body


def assert_inert(board: Dashboard, count: int) -> None:
    page = board.page
    expect(page.locator(EVENTS)).to_have_count(count)
    assert page.evaluate("typeof window.__xss") == "undefined", "injected script ran"
    assert page.locator("#events script").count() == 0
    assert page.locator("#events [onerror]").count() == 0
    # Titles and summaries are text: no element from a feed becomes an element here.
    assert page.locator("#events img, #events iframe, #events object").count() == 0
    assert page.evaluate("window.__csp") == [], "something tried to run inline script"
    assert board.page_errors == []
    assert board.console_errors == []


def assert_shown_as_text(entry: Locator, label: str) -> None:
    expect(entry.locator("h2.title")).to_have_text(f"{SCRIPT}{IMG} {label}")
    expect(entry.locator(".summary")).to_have_text(f"click me {SUMMARY_MARKUP} {label}")


def test_hostile_entries_stay_inert_server_rendered_and_live(
    dashboard: Dashboard, feed_server: FeedServer, tmp_path: Path
) -> None:
    old_js, old_https = hostile("xss-1", "old js"), hostile("xss-2", "old https")
    new_js, new_https = hostile("xss-3", "new js"), hostile("xss-4", "new https")
    js_links = {"xss-1", "xss-3"}
    feed_server.put(FEED, hostile_feed([old_js, old_https], js_links), etag='"v1"')
    page = dashboard.page
    with TidingsProcess(write_config(tmp_path, upstream_source(feed_server))) as proc:
        # Stored before the page loads, so the server renders them.
        wait_until(lambda: len(stored_titles(proc)) == 2, 20, "the first poll")
        dashboard.open(proc)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        assert_inert(dashboard, 2)
        expect(page.locator(f"{EVENTS}.fresh")).to_have_count(0)  # all server-rendered
        for entry, label in zip(page.locator(EVENTS).all(), ["old https", "old js"], strict=True):
            assert_shown_as_text(entry, label)

        feed_server.put(
            FEED, hostile_feed([old_js, old_https, new_js, new_https], js_links), etag='"v2"'
        )
        live = page.locator(f"{EVENTS}.fresh")
        expect(live).to_have_count(2, timeout=LIVE_MS)
        assert_inert(dashboard, 4)
        for entry, label in zip(live.all(), ["new https", "new js"], strict=True):
            assert_shown_as_text(entry, label)
        # app.js links only http(s): the javascript: entry's title is plain text.
        assert live.nth(0).locator("h2.title > a").get_attribute("href") == (
            "https://example.org/xss-4"
        )
        assert live.nth(1).locator("a").count() == 0
        dashboard.assert_not_reloaded()


def test_server_rendered_entry_never_links_to_javascript(
    dashboard: Dashboard, feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.put(FEED, hostile_feed([hostile("xss-1", "js")], {"xss-1"}), etag='"v1"')
    with TidingsProcess(write_config(tmp_path, upstream_source(feed_server))) as proc:
        wait_until(lambda: len(stored_titles(proc)) == 1, 20, "the first poll")
        dashboard.open(proc)
        expect(dashboard.page.locator(EVENTS)).to_have_count(1)
        hrefs = dashboard.page.locator("#events a[href]").evaluate_all(
            "els => els.map(a => a.getAttribute('href'))"
        )
        assert all(urlsplit(h).scheme in ("http", "https") for h in hrefs), hrefs


# --- 3. reconnect and resume -----------------------------------------------------


def test_reconnects_after_restart_and_resumes_exactly_once(
    dashboard: Dashboard, feed_server: FeedServer, tmp_path: Path
) -> None:
    before = {"guid": "r-1", "title": "Before the restart"}
    during = {"guid": "r-2", "title": "While the server was down"}
    feed_server.put(FEED, rss([]), etag='"v0"')
    page = dashboard.page
    status = page.locator("#live-status")
    proc = TidingsProcess(write_config(tmp_path, upstream_source(feed_server)))
    try:
        proc.start()
        dashboard.open(proc)
        expect(status).to_have_attribute("data-state", "live", timeout=LIVE_MS)
        expect(page.locator("#empty")).to_be_visible()

        feed_server.put(FEED, rss([before]), etag='"v1"')
        expect(dashboard.entry(before["title"])).to_have_count(1, timeout=LIVE_MS)
        # Stopped right after a poll committed: the next one is >= 5 s away, so no
        # poll is cut off by the shutdown (see the report on leases).
        proc.stop()
        expect(status).to_have_attribute("data-state", "offline", timeout=RECONNECT_MS)
        expect(status).to_have_text("reconnecting…")

        feed_server.put(FEED, rss([before, during]), etag='"v2"')
        proc.start()  # same object: same port, same config, same store
        expect(dashboard.entry(during["title"])).to_have_count(1, timeout=RECONNECT_MS)
        expect(status).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)

        dashboard.assert_not_reloaded()
        expect(page.locator(EVENTS)).to_have_count(2)
        assert dashboard.titles() == [during["title"], before["title"]]
        ids = dashboard.events()
        assert len(set(ids)) == len(ids), f"duplicate data-id in the list: {ids}"
        assert len(dashboard.websockets) >= 2, "the page never opened a second connection"
        assert dashboard.page_errors == []
    finally:
        proc.stop()
