"""The Sources admin in Debian's Chromium, against a real `tidings serve` and a
real loopback feed: an admin signs in, adds a feed source, tests it (the
preview shows its items and nothing is stored), saves it and watches its
events arrive live on the dashboard, then polls it at once after a change
upstream. A member gets 403 from the admin and never sees the events of a
source meant for another group.

Synchronisation is always on a real condition (DOM state, API answer); the
waits are generous because the parser pool and the first poll start cold.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    expect,
)

from tests.browser.chromium import new_context
from tests.support import FeedServer, TidingsProcess, rss, write_config

pytestmark = pytest.mark.browser

NEWS, LEGAL = "/news.xml", "/legal.xml"
LIVE_MS = 20_000  # a first poll (cold parser pool) or one poll interval, with room to spare
EVENTS = "#events > li.event"
PASSWORDS = {"ann": "correct horse", "bob": "battery staple"}


def tidings(config: Path, *args: str, password: str) -> None:
    """Runs the real CLI, as an operator would before the first start."""
    env = {**os.environ, "TIDINGS_DISABLE_PLUGINS": "1", "TIDINGS_TEST_PASSWORD": password}
    subprocess.run(
        [sys.executable, "-m", "aggregator.cli", *args, "--config", str(config),
         "--password-env", "TIDINGS_TEST_PASSWORD"],
        check=True, env=env, cwd=config.parent, stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip


def sign_in(page: Page, proc: TidingsProcess, name: str, then: str) -> None:
    page.goto(proc.base + then)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(proc.base + then)


def add_feed(page: Page, sid: str, title: str, url: str, audience: str) -> None:
    page.get_by_role("link", name="Add feed source").click()
    page.locator("#f-id").fill(sid)
    page.locator("#f-title").fill(title)
    page.locator("#f-url").fill(url)
    page.locator("#f-interval").fill("5s")
    page.locator("#f-audience").fill(audience)


def entry(page: Page, title: str) -> Locator:
    return page.locator(EVENTS).filter(has=page.get_by_text(title, exact=True))


def assert_no_csp_violation(page: Page) -> None:
    assert page.evaluate("window.__csp") == [], "a template used inline style or script"


def stored_titles(page: Page, proc: TidingsProcess) -> list[str]:
    got = page.request.get(proc.base + "/api/events")
    assert got.status == 200
    return [e["title"] for e in got.json()["events"]]


def test_admin_adds_tests_and_polls_a_source_members_see_only_theirs(
    browser: Browser, feed_server: FeedServer, tmp_path: Path
) -> None:
    first = {"guid": "n-1", "title": "Quarterly figures are out"}
    second = {"guid": "n-2", "title": "New office opens in Leeds"}
    third = {"guid": "n-3", "title": "Canteen menu for December"}
    secret = {"guid": "l-1", "title": "Privileged: merger memo"}
    later_secret = {"guid": "l-2", "title": "Privileged: board minutes"}
    feed_server.put(NEWS, rss([first]), etag='"v1"')
    feed_server.put(LEGAL, rss([secret]), etag='"v1"')
    config = write_config(tmp_path, "")
    tidings(config, "users", "create", "ann", "--admin", password=PASSWORDS["ann"])
    tidings(config, "users", "create", "bob", "--group", "sales", password=PASSWORDS["bob"])

    admin = new_context(browser)
    member = new_context(browser)
    errors: list[str] = []
    try:
        with TidingsProcess(config) as proc:
            page = admin.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            sign_in(page, proc, "ann", "/admin/sources")
            expect(page.get_by_text("No sources yet")).to_be_visible()

            # Test: the preview shows what a poll would create, and nothing is stored.
            add_feed(page, "news", "Company news", feed_server.url(NEWS), "everyone")
            page.get_by_role("button", name="Test", exact=True).click()
            preview = page.locator("section.preview")
            expect(preview.locator("h2")).to_have_text("Test: the events a poll would create")
            expect(preview.locator(".preview-event h3")).to_have_text([first["title"]])
            expect(page.locator("#f-url")).to_have_value(feed_server.url(NEWS))
            assert stored_titles(page, proc) == []
            assert_no_csp_violation(page)

            # Save: listed, due at once, and its event reaches an open dashboard live.
            page.get_by_role("button", name="Save", exact=True).click()
            expect(page.get_by_role("status")).to_have_text(
                "Source news created; its first poll is due now."
            )
            row = page.locator("#source-news")
            expect(row.locator(".origin")).to_have_text("web")
            board = admin.new_page()
            board.on("pageerror", lambda err: errors.append(str(err)))
            board.goto(proc.base + "/")
            expect(entry(board, first["title"])).to_have_count(1, timeout=LIVE_MS)
            expect(board.locator("#live-status")).to_have_attribute("data-state", "live")
            board.evaluate("window.__marker = 'no-reload'")
            page.reload()
            expect(row.locator(".badge.good")).to_have_text("ok")

            # A change upstream, fetched now rather than at the next interval.
            feed_server.put(NEWS, rss([first, second]), etag='"v2"')
            page.get_by_role("button", name="Poll news now").click()
            expect(page.get_by_role("status")).to_contain_text("Polled news")
            expect(entry(board, second["title"])).to_have_count(1, timeout=LIVE_MS)
            assert board.evaluate("window.__marker") == "no-reload"

            # A source for another group: admins see its events, bob does not.
            add_feed(page, "legal-news", "Legal", feed_server.url(LEGAL), "legal")
            page.get_by_role("button", name="Save", exact=True).click()
            expect(page.locator("#source-legal-news")).to_be_visible()
            expect(entry(board, secret["title"])).to_have_count(1, timeout=LIVE_MS)
            assert_no_csp_violation(page)

            bob = member.new_page()
            bob.on("pageerror", lambda err: errors.append(str(err)))
            sign_in(bob, proc, "bob", "/")
            expect(entry(bob, second["title"])).to_have_count(1)
            expect(bob.locator(EVENTS)).to_have_count(2)
            expect(entry(bob, secret["title"])).to_have_count(0)
            expect(bob.locator("#live-status")).to_have_attribute("data-state", "live")

            # Live, too: a new legal event reaches ann's open dashboard, never bob's.
            # The news event after it is the sentinel: by the time it reaches bob,
            # the legal one (an earlier id) would have arrived had it leaked.
            feed_server.put(LEGAL, rss([secret, later_secret]), etag='"v2"')
            page.get_by_role("button", name="Poll legal-news now").click()
            expect(entry(board, later_secret["title"])).to_have_count(1, timeout=LIVE_MS)
            feed_server.put(NEWS, rss([first, second, third]), etag='"v3"')
            page.get_by_role("button", name="Poll news now").click()
            expect(entry(bob, third["title"])).to_have_count(1, timeout=LIVE_MS)
            expect(entry(bob, later_secret["title"])).to_have_count(0)
            expect(bob.locator(EVENTS)).to_have_count(3)

            refused = bob.goto(proc.base + "/admin/sources")
            assert refused is not None and refused.status == 403
            assert secret["title"] not in stored_titles(bob, proc)
            assert later_secret["title"] not in stored_titles(bob, proc)
            assert errors == []
    finally:
        admin.close()
        member.close()


def test_admin_picks_a_preset_and_finds_a_webhooks_address(
    browser: Browser, tmp_path: Path
) -> None:
    """Add source lists the presets; the Jira one opens the JSON API form with it
    chosen; a saved GitHub webhook's edit page shows where GitHub should post."""
    config = write_config(tmp_path, "")
    tidings(config, "users", "create", "ann", "--admin", password=PASSWORDS["ann"])
    admin = new_context(browser)
    errors: list[str] = []
    try:
        with TidingsProcess(config) as proc:
            page = admin.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            sign_in(page, proc, "ann", "/admin/sources")
            page.get_by_role("link", name="Add source", exact=True).click()
            page.get_by_role("link", name="Jira Server / Data Center").click()
            expect(page).to_have_url(re.compile(r"/admin/sources/new\?kind=jsonapi&preset=jira$"))
            expect(page.locator("#f-preset")).to_have_value("jira")
            expect(page.locator(".preset-info")).to_contain_text("Jira Server / Data Center")
            expect(page.locator("#f-pagination\\.type option").first).to_have_text(
                "(default: offset, from the preset)"
            )
            assert_no_csp_violation(page)

            page.go_back()
            page.get_by_role("link", name="GitHub webhooks").click()
            expect(page.locator("#hook-url")).to_have_text(proc.base + "/hooks/ID")
            page.locator("#f-id").fill("gh")
            page.locator("#f-secret").fill("env:TIDINGS_SECRET_GITHUB_HOOK")
            page.get_by_role("button", name="Save", exact=True).click()
            expect(page.get_by_role("status")).to_have_text(
                "Source gh created; senders post its events to /hooks/gh."
            )
            page.get_by_role("link", name="Edit gh").click()
            expect(page.locator("#hook-url")).to_have_text(proc.base + "/hooks/gh")
            expect(page.locator(".hook-setup")).to_contain_text("Settings > Webhooks")
            assert_no_csp_violation(page)
            assert errors == []
    finally:
        admin.close()
