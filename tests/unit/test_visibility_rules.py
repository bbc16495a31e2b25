"""The audience rule, in SQL and in memory, and the defaults sources get."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from aggregator import registry
from aggregator.accounts import ADMIN, MEMBER, User
from aggregator.config import parse_config, parse_source
from aggregator.connector import Connector, ConnectorOptions, PollContext
from aggregator.decide import prepare
from aggregator.exceptions import ConfigError
from aggregator.store import Store
from aggregator.store.schema import ALERTS_SOURCE
from aggregator.types import EventData, JSONObject, PollResult
from aggregator.visibility import Viewer, admits
from connectors.feed import FeedConnector
from tests.stores import store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class MailboxConnector(Connector[ConnectorOptions]):
    kind = "mailbox"
    Options = ConnectorOptions
    default_audience: ClassVar[tuple[str, ...]] = ()

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(events=[])


def user(role: str = MEMBER, *groups: str, disabled: bool = False) -> User:
    return User(1, "u", role, frozenset(groups), disabled, True, NOW)


def test_audience_rule() -> None:
    assert admits(["everyone"], user())
    assert admits(["legal"], user(MEMBER, "legal"))
    assert not admits(["legal"], user(MEMBER, "hr"))
    assert not admits([], user(MEMBER, "legal"))  # empty: admins only
    assert admits([], user(ADMIN))
    assert not admits(["everyone"], user(ADMIN, disabled=True))


def test_mailbox_kinds_default_to_admins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: dict[str, Any] = {"feed": FeedConnector, "mailbox": MailboxConnector}
    monkeypatch.setattr(registry, "connector_kinds", lambda: kinds)
    assert parse_source({"id": "m", "kind": "mailbox"}, "s", "file").audience == ()
    assert parse_source(
        {"id": "m", "kind": "mailbox", "audience": ["legal"]}, "s", "file"
    ).audience == ("legal",)
    feed = {"id": "f", "kind": "feed", "url": "https://e.org/f"}
    assert parse_source(feed, "s", "file").audience == ("everyone",)
    with pytest.raises(ConfigError, match=r"s\.audience"):
        parse_source({**feed, "audience": ["no spaces allowed"]}, "s", "file")


def test_sql_and_memory_agree_and_audience_changes_follow(tmp_path: Path) -> None:
    config = parse_config(
        {
            "sources": [
                {"id": "pub", "kind": "feed", "url": "https://e.org/p"},
                {"id": "legal", "kind": "feed", "url": "https://e.org/l", "audience": ["legal"]},
                {"id": "admins", "kind": "feed", "url": "https://e.org/a", "audience": []},
            ]
        }
    )
    store = Store(store_url(tmp_path, "v"))
    store.sync_sources(config.sources, NOW, config_file="c")
    for src in config.sources:
        store.record_poll(
            src, prepare([EventData(external_id=f"{src.id}-1", title=src.id)]),
            state=None, now=NOW, next_poll_at=NOW,
        )  # fmt: skip
    audiences = store.people.snapshot().audiences
    everyone = store.latest_events(viewer=None)
    for who, expected in [
        (user(MEMBER), {"pub"}),
        (user(MEMBER, "legal"), {"pub", "legal"}),
        (user(ADMIN), {"pub", "legal", "admins"}),
    ]:
        viewer = Viewer.of(who, audiences)
        in_sql = {e.source_id for e in store.latest_events(viewer=viewer)}
        in_memory = {e.source_id for e in everyone if viewer.can_see(e.source_id)}
        assert in_sql == in_memory == expected
        # Admins also see Tidings' own alerts source (quiet here).
        alerts = {ALERTS_SOURCE} if who.is_admin else set()
        assert set(store.source_names(viewer=viewer)) == expected | alerts
    # A changed audience applies to the events already stored, and bumps the revision.
    before = store.people.revision()
    moved = [s if s.id != "legal" else parse_source(
        {"id": "legal", "kind": "feed", "url": "https://e.org/l", "audience": ["hr"]}, "s", "file"
    ) for s in config.sources]  # fmt: skip
    store.sync_sources(moved, NOW, config_file="c")
    assert store.people.revision() > before
    hr = Viewer.of(user(MEMBER, "hr"), store.people.snapshot().audiences)
    assert {e.source_id for e in store.latest_events(viewer=hr)} == {"pub", "legal"}
    legal_event = next(e for e in store.latest_events(viewer=None) if e.source_id == "legal")
    assert legal_event.audience == ("hr",)
    store.close()
