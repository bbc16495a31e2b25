"""Debian's Chromium under Playwright: the flags, a loopback-only context,
and a probe that records CSP violations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route

CHROMIUM = Path("/usr/bin/chromium")
# The flags known to work as root here (shared notes, "Chromium"). Playwright adds --headless and
# a throw-away profile itself: it refuses an explicit --user-data-dir.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Records CSP violations from the first byte of every document: an inline script
# or style (or a javascript: URL) shows up here even though CSP blocks it.
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
});
"""


def _loopback_only(route: Route) -> None:
    # Nothing a test does may leave the machine, whatever a feed links to.
    if urlsplit(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    context.route("**/*", _loopback_only)
    context.add_init_script(CSP_PROBE)
    return context
