"""Shared fixtures. In CI (TIDINGS_REQUIRE_SERVERS=1) a skipped test is a failure:
a missing server must never pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import stores
from tests.support import FeedServer

os.environ.setdefault("TIDINGS_DISABLE_PLUGINS", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TIDINGS_REQUIRE_SERVERS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every server must be present: {report.longrepr}"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """On PostgreSQL (tests/stores.py) every test's database goes at the end."""
    yield
    stores.drop_all()
