"""A personal feed's URL is its credential: a real `tidings serve` logs the
requests for it (uvicorn's access log) with the token hidden."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from aggregator.config import load_config
from aggregator.store import Store
from tests.support import TidingsProcess, write_config
from web.logs import RedactFeedTokens, redact

pytestmark = pytest.mark.integration


def test_redact_hides_the_token_of_every_feed_path() -> None:
    line = '127.0.0.1:5 - "GET /feeds/tok_abc/all.atom?x=1 HTTP/1.1" 200 /feeds/t2/s.rss'
    assert (
        redact(line) == '127.0.0.1:5 - "GET /feeds/***/all.atom?x=1 HTTP/1.1" 200 /feeds/***/s.rss'
    )
    assert redact("GET /api/events") == "GET /api/events"


def test_the_filter_redacts_a_token_given_as_an_argument_and_keeps_the_format() -> None:
    """Our own "/feeds/%s/" format string must not lose its placeholder
    (it did, and the record then failed to format)."""
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "GET /feeds/%s/a.atom", ("1.x",), None
    )
    assert RedactFeedTokens().filter(record)
    assert record.getMessage() == "GET /feeds/***/a.atom"
    plain = logging.LogRecord("t", logging.INFO, __file__, 1, "%d%% done", (5,), None)
    assert RedactFeedTokens().filter(plain) and plain.getMessage() == "5% done"


def test_feed_tokens_never_reach_the_servers_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    store = Store(load_config(config).store_url)
    now = datetime.now(UTC)
    store.people.create_user("max", password_hash=None, admin=False, actor="test", now=now)
    user = store.people.user("max")
    assert user is not None
    token = store.streams.feed_token(user.id)
    store.close()
    with TidingsProcess(config) as app:
        for path in (f"/feeds/{token}/all.atom", f"/feeds/{token}x/all.rss"):
            httpx2.get(app.base + path, timeout=10)
    log = app.log.read_text()
    assert "/feeds/***/all.atom" in log and "/feeds/***/all.rss" in log  # logged, hidden
    assert token not in log
