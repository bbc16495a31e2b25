"""Shared fixtures. In CI (TIDINGS_REQUIRE_SERVERS=1) a skipped test is a failure:
a missing server must never pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import leaks, stores
from tests.support import FeedServer

os.environ.setdefault("TIDINGS_DISABLE_PLUGINS", "1")
leaks.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A secret in the run's logs fails the run (tests/leaks.py)."""
    found = leaks.WATCH.findings()
    leaks.WATCH.close()
    if not found:
        return
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    if report is not None:
        report.write_sep("=", f"{len(found)} secrets in the logs of this run", red=True)
        for finding in found:
            report.write_line(f"a {finding.kind} in the log of {finding.where}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TIDINGS_REQUIRE_SERVERS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every server must be present: {report.longrepr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests about the other store than the one this run uses are deselected,
    not skipped (CI fails on a skip): tests/stores.py says which it is."""
    other = "sqlite_only" if stores.on_postgresql() else "postgresql_only"
    kept = [item for item in items if item.get_closest_marker(other) is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return f"store: {stores.STORE} (TIDINGS_TEST_STORE)"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """On PostgreSQL (tests/stores.py) every test's database goes at the end."""
    yield
    stores.drop_all()
