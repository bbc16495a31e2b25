"""The dashboard's stream features in Debian's Chromium, against a real
`tidings serve` polling real loopback feeds: the query box (inline errors with
their position, filtering, back and forward), saved streams with live unread
badges that clear when read, keyboard navigation that opens links in a new
tab, scrolling back through history to its end, source colours, the empty
state and the "N new" pill.

Synchronisation is always on a real condition (DOM state, API answer); the
waits are generous because a poll comes every 5 s (plus up to 10 % jitter).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, expect

from tests.browser.chromium import new_context
from tests.browser.test_admin import PASSWORDS, sign_in, tidings
from tests.browser.test_dashboard import wait_until
from tests.support import FeedServer, TidingsProcess, feed_source, rss, write_config

pytestmark = pytest.mark.browser

WIKI, NEWS = "/wiki.xml", "/news.xml"
LIVE_MS = 20_000  # a first poll (cold parser pool) or one poll interval, with room to spare
RECONNECT_MS = 30_000  # a restart plus the page's reconnect backoff
EVENTS = "#events > li.event"
BAD_QUERY = "source:("


@dataclass
class Board:
    """One browser context and its dashboard page, with what went wrong in it."""

    context: BrowserContext
    page: Page
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def entry(self, title: str) -> Locator:
        return self.page.locator(EVENTS).filter(has=self.page.get_by_text(title, exact=True))

    def ids(self) -> list[int]:
        return [
            int(i)
            for i in self.page.locator(EVENTS).evaluate_all("els => els.map(e => e.dataset.id)")
        ]

    def titles(self) -> list[str]:
        return self.page.locator(f"{EVENTS} h2.title").all_text_contents()

    def api(self, path: str) -> dict[str, object]:
        """GET with the page's own cookies."""
        got = self.page.request.get(self.page.url.split("/?")[0].rstrip("/") + path)
        assert got.status == 200, (path, got.status)
        body: dict[str, object] = got.json()
        return body

    def assert_clean(self, allowed_400: tuple[str, ...] = ()) -> None:
        """No CSP violation, no script error, and no console error except the
        browser's own note on an expected 400 answer (a bad query)."""
        assert self.page.evaluate("window.__csp") == [], "inline script or style was blocked"
        assert self.page_errors == []
        unexpected = [
            e
            for e in self.console_errors
            if not ("status of 400" in e and any(a in e for a in allowed_400))
        ]
        assert unexpected == []


@pytest.fixture
def board(browser: Browser) -> Iterator[Board]:
    context = new_context(browser)
    page = context.new_page()
    found = Board(context, page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            found.console_errors.append(f"{msg.text} @ {msg.location.get('url')}")

    page.on("pageerror", lambda err: found.page_errors.append(str(err)))
    page.on("console", on_console)
    try:
        yield found
    finally:
        context.close()


def items(prefix: str, titles: list[str]) -> list[dict[str, str]]:
    return [{"guid": f"{prefix}-{n}", "title": t} for n, t in enumerate(titles, 1)]


def linked_rss(feed_server: FeedServer, entries: list[dict[str, str]]) -> str:
    """rss() with every link on the loopback feed server, which serves a page
    for each: opening one never leaves the machine."""
    for item in entries:
        feed_server.put(
            f"/article/{item['guid']}",
            f"<!doctype html><title>{item['title']}</title><p>{item['title']}</p>",
            content_type="text/html; charset=utf-8",
        )
    return rss(entries).replace("https://example.org/", feed_server.url("/article/"))


def two_sources(feed_server: FeedServer) -> str:
    return feed_source("wiki", feed_server.url(WIKI), title="Team wiki") + feed_source(
        "news", feed_server.url(NEWS), title="Company news"
    )


def stored_count(proc: TidingsProcess) -> int:
    """Setup mode (no accounts): loopback reads need no sign-in."""
    got = httpx2.get(proc.base + "/api/events", params={"limit": 200}, timeout=5)
    got.raise_for_status()
    return len(got.json()["events"])


def stream_named(board: Board, name: str) -> dict[str, object] | None:
    streams = board.api("/api/streams")["streams"]
    assert isinstance(streams, list)
    return next((s for s in streams if s["name"] == name), None)


def unread_of(board: Board, name: str) -> object:
    found = stream_named(board, name)
    return None if found is None else found["unread"]


# --- 1. query box and saved streams ------------------------------------------------


def test_query_box_saved_streams_and_unread_badges(
    board: Board, feed_server: FeedServer, tmp_path: Path
) -> None:
    wiki = items("w", ["Onboarding checklist", "Holiday calendar", "Style guide"])
    news = items("n", ["Merger talks begin", "New office in Leeds"])
    later_news = items("n", ["Merger talks begin", "New office in Leeds", "Merger approved"])
    later_wiki = items("w", ["Onboarding checklist", "Holiday calendar", "Style guide", "FAQ"])
    feed_server.put(WIKI, linked_rss(feed_server, wiki), etag='"w1"')
    feed_server.put(NEWS, linked_rss(feed_server, news), etag='"n1"')
    config = write_config(tmp_path, two_sources(feed_server))
    tidings(config, "users", "create", "ann", password=PASSWORDS["ann"])
    page = board.page
    box = page.get_by_role("searchbox", name="Filter the stream")
    nav = page.get_by_role("navigation", name="Streams")
    with TidingsProcess(config) as proc:
        sign_in(page, proc, "ann", "/")
        expect(page.locator(EVENTS)).to_have_count(5, timeout=LIVE_MS)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        expect(nav.get_by_role("link", name="All", exact=True)).to_have_attribute(
            "aria-current", "page"
        )

        # A bad query: the error under the box, pointing at its position; the
        # list and the URL stay as they were.
        answer = page.request.get(proc.base + "/api/events?q=" + quote(BAD_QUERY))
        assert answer.status == 400
        position = answer.json()["position"]
        assert isinstance(position, int) and 0 <= position <= len(BAD_QUERY)
        box.fill(BAD_QUERY)
        box.press("Enter")
        error = page.locator("#query-error")
        expect(error).to_be_visible()
        expect(error.locator(".message")).to_have_text(
            f"{answer.json()['error']} (at character {position + 1})"
        )
        expect(error.locator("code")).to_have_text(BAD_QUERY.ljust(position + 1))
        marked = error.locator("code mark")
        expect(marked).to_have_text(BAD_QUERY[position : position + 1] or " ")
        before_mark = error.locator("code").evaluate("c => c.firstChild.textContent")
        assert before_mark == BAD_QUERY[:position]
        expect(box).to_have_attribute("aria-invalid", "true")
        expect(page.locator(EVENTS)).to_have_count(5)
        assert page.url == proc.base + "/"

        # A valid query filters, and the URL follows.
        box.fill("source:news")
        box.press("Enter")
        expect(page).to_have_url(proc.base + "/?q=source%3Anews")
        expect(error).to_be_hidden()
        expect(page.locator(EVENTS)).to_have_count(2)
        assert set(page.locator(EVENTS).evaluate_all("els => els.map(e => e.dataset.source)")) == {
            "news"
        }

        # Saved as a stream: listed, on view, and read up to what is shown.
        page.get_by_role("button", name="Save this query").click()
        page.get_by_label("as").fill("News")
        page.get_by_role("button", name="Save stream").click()
        news_link = nav.get_by_role("link", name=re.compile(r"^News\b"))
        expect(news_link).to_have_attribute("aria-current", "page")
        expect(page).to_have_url(re.compile(r"/\?q=source%3Anews&stream=\d+$"))
        expect(page.get_by_role("button", name="Save this query")).to_be_hidden()
        wait_until(lambda: unread_of(board, "News") == 0, 10, "the new stream marked read")
        saved = stream_named(board, "News")
        assert saved is not None and saved["query"] == "source:news"

        # Back to everything; a new matching event arrives live and the
        # stream's badge counts it (a wiki event does not).
        nav.get_by_role("link", name="All", exact=True).click()
        expect(page).to_have_url(proc.base + "/")
        expect(page.locator(EVENTS)).to_have_count(5)
        feed_server.put(NEWS, linked_rss(feed_server, later_news), etag='"n2"')
        feed_server.put(WIKI, linked_rss(feed_server, later_wiki), etag='"w2"')
        expect(board.entry("Merger approved")).to_have_count(1, timeout=LIVE_MS)
        expect(board.entry("FAQ")).to_have_count(1, timeout=LIVE_MS)
        badge = nav.locator("li.stream").filter(has_text="News").locator(".badge.unread")
        expect(badge).to_have_text("1")
        expect(badge).to_be_visible()
        expect(nav.get_by_role("link", name="News, 1 unread")).to_have_count(1)
        assert unread_of(board, "News") == 1

        # Opening the stream reads it: the badge clears, and so does the count.
        news_link.click()
        expect(page.locator(EVENTS)).to_have_count(3)
        assert board.titles()[0] == "Merger approved"
        expect(badge).to_be_hidden()
        wait_until(lambda: unread_of(board, "News") == 0, 10, "the stream marked read")

        # Back and forward move between the two, without a reload.
        page.evaluate("window.__marker = 'no-reload'")
        page.go_back()
        expect(page).to_have_url(proc.base + "/")
        expect(page.locator(EVENTS)).to_have_count(7)
        expect(box).to_have_value("")
        page.go_forward()
        expect(page.locator(EVENTS)).to_have_count(3)
        expect(box).to_have_value("source:news")
        assert page.evaluate("window.__marker") == "no-reload"

        # Deleted: gone from the sidebar and from the API; the list stays.
        nav.get_by_role("button", name="Delete stream News").click()
        expect(news_link).to_have_count(0)  # asked first, in its place
        nav.get_by_role("button", name="Delete", exact=True).click()
        expect(nav.get_by_text("Delete “News”?")).to_have_count(0)
        expect(news_link).to_have_count(0)
        assert stream_named(board, "News") is None
        expect(page).to_have_url(proc.base + "/?q=source%3Anews")
        expect(page.get_by_role("button", name="Save this query")).to_be_visible()
        board.assert_clean(allowed_400=("/api/events",))

        # The server renders a bad query's error the same way, with a 400.
        response = page.goto(proc.base + "/?q=" + quote(BAD_QUERY))
        assert response is not None and response.status == 400
        expect(page.locator("#query-error code mark")).to_have_text(
            BAD_QUERY[position : position + 1] or " "
        )
        expect(box).to_have_value(BAD_QUERY)
        expect(page.locator("#live-status")).to_have_text("not live")
        expect(page.locator("#empty")).to_be_hidden()
        board.assert_clean(allowed_400=("/api/events", proc.base + "/?q="))


# --- 2. keyboard ------------------------------------------------------------------------


def test_keyboard_moves_between_events_and_opens_them(
    board: Board, feed_server: FeedServer, tmp_path: Path
) -> None:
    news = items("n", ["Oldest item", "Middle item", "Newest item"])
    feed_server.put(NEWS, linked_rss(feed_server, news), etag='"n1"')
    feed_server.put(WIKI, linked_rss(feed_server, []), etag='"w1"')
    page = board.page
    with TidingsProcess(write_config(tmp_path, two_sources(feed_server))) as proc:
        wait_until(lambda: stored_count(proc) == 3, 20, "the first poll")
        page.goto(proc.base + "/")
        entries = page.locator(EVENTS)
        expect(entries).to_have_count(3)
        box = page.get_by_role("searchbox", name="Filter the stream")

        page.keyboard.press("j")
        expect(entries.nth(0)).to_be_focused()
        expect(entries.nth(0)).to_have_class("event current")
        page.keyboard.press("j")
        expect(entries.nth(1)).to_be_focused()
        page.keyboard.press("k")
        expect(entries.nth(0)).to_be_focused()
        for _ in range(4):  # past the end it stays on the last
            page.keyboard.press("j")
        expect(entries.nth(2)).to_be_focused()
        expect(page.locator(f"{EVENTS}.current")).to_have_count(1)

        # o opens the focused event's link in a new tab, without an opener.
        with board.context.expect_page() as opened:
            page.keyboard.press("o")
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url == feed_server.url("/article/n-1")
        expect(tab).to_have_title("Oldest item")
        assert tab.evaluate("window.opener") is None
        tab.close()
        # Enter does the same on the focused event.
        page.keyboard.press("k")
        with board.context.expect_page() as opened:
            page.keyboard.press("Enter")
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url == feed_server.url("/article/n-2")
        tab.close()
        assert page.url == proc.base + "/"

        # / goes to the query box, where j and k are just letters; Esc leaves it.
        page.keyboard.press("/")
        expect(box).to_be_focused()
        page.keyboard.type("jk")
        expect(box).to_have_value("jk")
        expect(page.locator(f"{EVENTS}.current")).to_have_text(re.compile("Middle item"))
        page.keyboard.press("Escape")
        expect(box).not_to_be_focused()
        page.keyboard.press("k")
        expect(entries.nth(0)).to_be_focused()
        board.assert_clean()

        # The server goes away: the status says so, a load fails with a retry
        # that works once the server is back, and the list was kept meanwhile.
        proc.stop()
        status = page.locator("#live-status")
        expect(status).to_have_text("reconnecting…", timeout=LIVE_MS)
        box.fill("Middle")
        box.press("Enter")
        failed = page.get_by_role("alert").filter(has_text="Could not load events")
        expect(failed).to_be_visible()
        expect(entries).to_have_count(3)
        proc.start()
        failed.get_by_role("button", name="Retry").click()
        expect(failed).to_be_hidden()
        expect(entries).to_have_count(1)
        expect(page).to_have_url(proc.base + "/?q=Middle")
        expect(status).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
        assert page.evaluate("window.__csp") == [] and board.page_errors == []


# --- 3. history, colours, the pill, the empty state --------------------------------------


def test_history_colours_new_pill_and_empty_state(
    board: Board, feed_server: FeedServer, tmp_path: Path
) -> None:
    wiki = items("w", [f"Wiki page {n:03}" for n in range(1, 121)])
    news = items("n", ["Merger talks begin", "New office in Leeds"])
    feed_server.put(WIKI, linked_rss(feed_server, wiki), etag='"w1"')
    feed_server.put(NEWS, linked_rss(feed_server, news), etag='"n1"')
    page = board.page
    entries = page.locator(EVENTS)
    with TidingsProcess(write_config(tmp_path, two_sources(feed_server))) as proc:
        wait_until(lambda: stored_count(proc) == 122, 20, "the first polls")
        page.goto(proc.base + "/")
        expect(entries).to_have_count(50)
        the_end = page.get_by_text("That's everything.")
        expect(the_end).to_be_hidden()
        # Setup mode reads but saves nothing.
        expect(page.get_by_role("button", name="Save this query")).to_have_count(0)

        # Scrolling to the bottom loads the next page; so does the button.
        page.locator("#history").scroll_into_view_if_needed()
        expect(entries).to_have_count(100)
        page.get_by_role("button", name="Older events").click()
        expect(entries).to_have_count(122)
        expect(the_end).to_be_visible()
        expect(page.get_by_role("button", name="Older events")).to_be_hidden()
        ids = board.ids()
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 122

        # One colour per source, the same on every event of that source.
        colours: dict[str, set[str]] = {}
        for source, colour in entries.evaluate_all(
            "els => els.map(e => [e.dataset.source,"
            " getComputedStyle(e.querySelector('.source')).color])"
        ):
            colours.setdefault(source, set()).add(colour)
        assert set(colours) == {"wiki", "news"}
        assert len(colours["wiki"]) == len(colours["news"]) == 1
        assert colours["wiki"] != colours["news"]

        # Scrolled down, a live event does not move the list: a pill says so.
        middle = page.locator(f'#events > li[data-id="{board.ids()[60]}"]')
        middle.scroll_into_view_if_needed()
        top_before = middle.evaluate("e => e.getBoundingClientRect().top")
        feed_server.put(
            NEWS, linked_rss(feed_server, [*news, *items("x", ["Breaking: merger"])]), etag='"n2"'
        )
        pill = page.locator("#new-pill")
        expect(pill).to_have_text("↑ 1 new", timeout=LIVE_MS)
        expect(entries).to_have_count(123)
        assert abs(middle.evaluate("e => e.getBoundingClientRect().top") - top_before) < 2
        pill.click()
        expect(pill).to_be_hidden()
        expect(entries.nth(0)).to_contain_text("Breaking: merger")
        assert page.evaluate("window.scrollY") == 0

        # A query that matches nothing says so, and stays live.
        box = page.get_by_role("searchbox", name="Filter the stream")
        box.fill("zebra")
        box.press("Enter")
        expect(page.locator("#empty")).to_have_text(
            "Nothing matches zebra yet — new events appear as they happen."
        )
        expect(entries).to_have_count(0)
        expect(the_end).to_be_hidden()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        board.assert_clean()
