"""CPU work under a time budget: feedparser's quadratic corners must not hold
a parser process (or the web process) for minutes."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import aggregator.poller
from aggregator.config import parse_config
from aggregator.cpu import within
from aggregator.exceptions import ParseError
from aggregator.poller import Poller
from aggregator.store import Store
from connectors.feed import parse_feed
from tests.stores import store_url

# feedparser looks for an address in an RSS author with a regex that is
# quadratic in the name's length: 60,000 characters take minutes.
SLOW_AUTHOR = (
    b"<rss version='2.0'><channel><title>t</title><item><guid>1</guid><title>x</title>"
    b"<author>" + b"a" * 60_000 + b"@x</author></item></channel></rss>"
)


def test_a_task_over_its_budget_is_stopped() -> None:
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"took longer than 0\.3s"):
        within(0.3, parse_feed, SLOW_AUTHOR, "https://e.org/feed")
    assert time.monotonic() - started < 2
    # What was there before is back, after a stopped task or a quick one: the
    # handler, and an alarm already set (pytest-timeout's own) still running.
    assert signal.getsignal(signal.SIGALRM) is handler
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        assert within(0.3, len, b"abc") == 3
        assert signal.getsignal(signal.SIGALRM) is handler
        assert 99 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_outside_the_main_thread_a_task_runs_without_a_budget() -> None:
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(within(0.01, sum, [1, 2])))
    thread.start()
    thread.join()
    assert got == [3]


async def test_the_pollers_parser_processes_apply_the_budget(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregator.poller, "PARSE_BUDGET", 0.5)
    config = parse_config({"store": {"url": store_url(tmp_path, "c")}, "poller": {"workers": 1}})
    poller = Poller(config, Store(config.store_url))
    try:
        started = time.monotonic()
        with pytest.raises(ParseError, match=r"took longer than 0\.5s"):
            await poller._run_cpu(parse_feed, SLOW_AUTHOR, "https://e.org/feed")
        assert time.monotonic() - started < 10  # the worker's start-up included
        # The same worker is free again at once.
        assert await poller._run_cpu(len, b"abcd") == 4
    finally:
        await poller.aclose()
