"""poll_source with stand-in connectors: what happens on success, on a crash,
and when the store refuses the write."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import idle, pipeline, registry
from aggregator.config import SourceConfig, parse_config
from aggregator.connector import Connector, ConnectorOptions, PollContext, Resources
from aggregator.exceptions import FetchError, GoneError
from aggregator.metrics import ALERTS as ALERT_GAUGE
from aggregator.poller import Poller
from aggregator.recorder import Recorder
from aggregator.store import Store
from aggregator.store.schema import ALERTS_SOURCE
from aggregator.types import EventData, JSONObject, PollResult
from aggregator.visibility import Viewer
from tests.stores import store_url

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class NoOptions(ConnectorOptions):
    pass


class Works(Connector[NoOptions]):
    Options = NoOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        n = (state or {}).get("n", 0) + 1
        return PollResult(events=[EventData(external_id=f"e{n}", title=f"E{n}")], state={"n": n})


class Crashes(Works):
    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        raise KeyError("surprise")


class Refuses(Works):
    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        raise FetchError("HTTP 429 from upstream", retry_after=3600)


class Hangs(Works):
    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        await asyncio.Event().wait()  # an upstream that never answers
        raise AssertionError("unreachable")


class Slow(Works):
    """A feed that asks to be polled daily (a TTL of a day)."""

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True, min_interval=86400)


class Gone(Works):
    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        raise GoneError("HTTP 410 Gone from https://e.org/feed: the feed was removed")


class UrlOptions(ConnectorOptions):
    url: str


class Moves(Connector[UrlOptions]):
    Options = UrlOptions
    target = "https://e.org/new"

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(not_modified=True, permanent_redirect=self.target)


class Flaky(Works):
    """Fails while `failing` is set, works otherwise."""

    failing = True

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        if Flaky.failing:
            raise FetchError("HTTP 503 Service Unavailable from https://e.org/feed")
        return await super().poll(state, ctx)


KINDS: dict[str, Any] = {
    "works": Works,
    "crashes": Crashes,
    "refuses": Refuses,
    "hangs": Hangs,
    "gone": Gone,
    "flaky": Flaky,
    "slow": Slow,
}


def context(source: SourceConfig, now: datetime) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(source_id=source.id, now=now, resources=Resources(), run_cpu=run_cpu)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, dict[str, SourceConfig]]:
    # Stand-in kinds, found the way plugins are: through the registry.
    monkeypatch.setattr(registry, "connector_kinds", lambda: KINDS)
    cfg = parse_config({"sources": [{"id": k, "kind": k, "interval": "1m"} for k in KINDS]})
    store = Store(store_url(tmp_path, "p"))
    store.sync_sources(cfg.sources, NOW)
    return store, {s.id: s for s in cfg.sources}


async def poll(
    store: Store,
    source: SourceConfig,
    policy: pipeline.PollPolicy = pipeline.PollPolicy(),  # noqa: B008 - frozen
    now: datetime = NOW,
) -> pipeline.PollOutcome:
    [claim] = store.claim([source.id], now, lease=60)
    return await pipeline.poll_source(source, claim, Recorder(store), context(source, now), policy)


async def test_success_commits_events_and_state(
    setup: tuple[Store, dict[str, SourceConfig]],
) -> None:
    store, sources = setup
    first = await poll(store, sources["works"])
    second = await poll(store, sources["works"])
    assert len(first.new_event_ids) == 1 and len(second.new_event_ids) == 1
    assert store.source_state("works") == ({"n": 2}, 0)


async def test_a_crashing_connector_is_recorded_with_its_type(
    setup: tuple[Store, dict[str, SourceConfig]],
) -> None:
    store, sources = setup
    outcome = await poll(store, sources["crashes"])
    assert outcome.error == "KeyError: 'surprise'"
    status = {s.id: s for s in store.source_statuses(viewer=None)}["crashes"]
    assert status.consecutive_failures == 1
    # Twice the interval, give or take the jitter.
    assert status.next_poll_at is not None
    assert NOW + timedelta(seconds=108) <= status.next_poll_at <= NOW + timedelta(seconds=120)
    assert (await poll(store, sources["works"])).error is None


async def test_retry_after_pushes_the_next_poll(
    setup: tuple[Store, dict[str, SourceConfig]],
) -> None:
    store, sources = setup
    await poll(store, sources["refuses"])
    status = {s.id: s for s in store.source_statuses(viewer=None)}["refuses"]
    assert status.last_error == "HTTP 429 from upstream"
    assert status.next_poll_at == NOW + timedelta(hours=1)


async def test_a_failed_commit_keeps_the_old_state(
    setup: tuple[Store, dict[str, SourceConfig]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sources = setup
    await poll(store, sources["works"])

    def broken(*args: Any, **kwargs: Any) -> list[list[int]]:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "record", broken)
        with pytest.raises(OSError):
            await poll(store, sources["works"])
    assert store.source_state("works") == ({"n": 1}, 0)
    # The next poll fetches the same item again and stores it exactly once.
    again = await poll(store, sources["works"])
    assert len(again.new_event_ids) == 1
    assert [e.external_id for e in store.latest_events(viewer=None)] == ["e2", "e1"]


async def test_a_hanging_poll_is_cut_off_and_recorded(
    setup: tuple[Store, dict[str, SourceConfig]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sources = setup
    monkeypatch.setattr(pipeline, "POLL_TIMEOUT", 0.05)
    outcome = await poll(store, sources["hangs"])
    assert outcome.error == "poll did not finish within 0.05s"
    assert {s.id: s for s in store.source_statuses(viewer=None)}["hangs"].consecutive_failures == 1


def alerts(store: Store) -> list[str]:
    return [e.title for e in store.latest_events(viewer=None) if e.source_id == ALERTS_SOURCE]


async def test_failing_past_the_limit_raises_one_alert_for_admins_and_one_on_recovery(
    setup: tuple[Store, dict[str, SourceConfig]],
) -> None:
    store, sources = setup
    policy = pipeline.PollPolicy(alert_after=3)
    Flaky.failing = True
    outcomes = [await poll(store, sources["flaky"], policy) for _ in range(5)]
    assert [bool(o.alert_ids) for o in outcomes] == [False, False, True, False, False]
    assert alerts(store) == ["flaky failed 3 polls in a row"]
    [alert] = store.latest_events(viewer=None, limit=1)
    assert alert.summary == "HTTP 503 Service Unavailable from https://e.org/feed"
    assert alert.audience == () and "source-failing" in alert.tags
    assert ALERT_GAUGE.labels("flaky")._value.get() == 1
    # Members see nothing of it; the alerts source is never claimed for polling.
    member = Viewer("member", frozenset(sources))
    assert store.get_event(alert.id, viewer=member) is None
    assert ALERTS_SOURCE not in [
        c.source_id for c in store.claim_due(NOW + timedelta(days=1), 50, 60)
    ]

    Flaky.failing = False
    back = await poll(store, sources["flaky"], policy)
    assert back.error is None and len(back.new_event_ids) == 1 and len(back.alert_ids) == 1
    assert alerts(store) == ["flaky is polling again", "flaky failed 3 polls in a row"]
    assert ALERT_GAUGE.labels("flaky")._value.get() == 0
    assert (await poll(store, sources["flaky"], policy)).alert_ids == []


async def test_gone_disables_the_source_until_an_admin_resumes_it(
    setup: tuple[Store, dict[str, SourceConfig]],
) -> None:
    store, sources = setup
    outcome = await poll(store, sources["gone"])
    assert outcome.error and "410 Gone" in outcome.error
    assert alerts(store) == ["gone is gone (HTTP 410) and was disabled"]
    status = {s.id: s for s in store.source_statuses(viewer=None)}["gone"]
    assert status.disabled_reason == outcome.error
    later = NOW + timedelta(days=30)
    assert "gone" not in [c.source_id for c in store.claim_due(later, 50, 60)]
    # Restarting with the same config file does not bring it back...
    store.sync_sources(sources.values(), later)
    assert "gone" not in [c.source_id for c in store.claim_due(later, 50, 60)]
    # ...an admin does.
    store.resume_source("gone", actor="root", now=later)
    status = {s.id: s for s in store.source_statuses(viewer=None)}["gone"]
    assert status.disabled_reason is None and status.consecutive_failures == 0
    assert "gone" in [c.source_id for c in store.claim_due(later, 50, 60)]
    [entry] = store.people.audit_log(limit=1)
    assert (entry.actor, entry.action, entry.target) == ("root", "source.resume", "gone")


@pytest.mark.parametrize(
    ("setting", "old", "new", "adopted"),
    [
        (True, "https://e.org/feed", "https://e.org/feed.xml", True),  # within its origin
        (True, "http://e.org/feed", "https://e.org/feed", True),  # an upgrade to https
        (True, "https://e.org/feed", "https://other.example/feed", False),  # another server
        (True, "https://e.org/feed", "http://e.org/feed", False),  # a downgrade
        (True, "https://e.org/feed", "https://bob:pw@e.org/feed", False),  # credentials
        (False, "https://e.org/feed", "https://e.org/feed.xml", False),  # not asked to
    ],
)
async def test_a_permanent_redirect_is_adopted_only_when_safe_and_set(
    setup: tuple[Store, dict[str, SourceConfig]],
    monkeypatch: pytest.MonkeyPatch,
    setting: bool,
    old: str,
    new: str,
    adopted: bool,
) -> None:
    store, _ = setup
    monkeypatch.setattr(registry, "connector_kinds", lambda: {**KINDS, "moves": Moves})
    monkeypatch.setattr(Moves, "target", new)
    made = store.create_source({"id": "web", "kind": "moves", "url": old}, actor="root", now=NOW)
    await poll(store, made, pipeline.PollPolicy(adopt_redirects=setting))
    _, raw = store.source_table("web") or ("", {})
    [source] = [s for s in store.db_sources() if s.id == "web"]
    status = {s.id: s for s in store.source_statuses(viewer=None)}["web"]
    if adopted:
        assert raw["url"] == new and source.options == UrlOptions(url=new)
        assert status.permanent_redirect is None
        [entry] = store.people.audit_log(limit=1)
        assert (entry.actor, entry.action) == ("poller", "source.redirect")
        assert entry.detail == {"old": old, "new": new}
    else:
        assert raw["url"] == old
        assert status.permanent_redirect == new


@pytest.mark.parametrize(("obey", "hours"), [(True, 24), (False, 0)])
async def test_a_source_may_ignore_the_feeds_own_pace(
    setup: tuple[Store, dict[str, SourceConfig]], obey: bool, hours: int
) -> None:
    store, sources = setup
    source = dataclasses.replace(sources["slow"], obey_hints=obey)
    await poll(store, source)
    status = {s.id: s for s in store.source_statuses(viewer=None)}["slow"]
    assert status.next_poll_at is not None
    delay = (status.next_poll_at - NOW).total_seconds()
    assert (delay == 86400) if obey else (60 <= delay <= 66), delay  # 1m and its jitter


def test_a_push_source_is_never_due_and_one_made_due_goes_back_unpolled(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "sources": [
                {"id": "hook", "kind": "webhook", "secret": "env:HOOK", "fields": {"title": "t"}}
            ],
        }
    )
    store = Store(config.store_url)
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now)
    [status] = store.source_statuses(viewer=None)
    assert status.next_poll_at is None  # never claimed
    store.set_next_poll(["hook"], now - timedelta(seconds=1))  # an older build's "Poll now"
    poller = Poller(config, store)
    assert poller._claim_due(now, 10) == []
    [status] = store.source_statuses(viewer=None)
    assert status.next_poll_at is None and status.last_poll_at is None
    store.close()


class Watched(Connector[ConnectorOptions]):
    """Watches twice: the first watch drops, the second finds no push."""

    kind = "watched"
    Options = ConnectorOptions
    calls = 0

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult()

    async def watch(self, ctx: PollContext, wake: Any) -> None:
        Watched.calls += 1
        wake()
        if Watched.calls == 1:
            raise ConnectionError("connection reset while idling")


async def test_a_watch_reports_its_state_wakes_polls_and_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "connector_kinds", lambda: {**KINDS, "watched": Watched})
    monkeypatch.setattr(idle.random, "uniform", lambda a, b: 0.001)  # no real backoff wait
    polled: list[str] = []
    woke = asyncio.Event()

    async def poll_one(source_id: str) -> None:
        polled.append(source_id)
        woke.set()

    source = SourceConfig(id="w", kind="watched", options=ConnectorOptions())
    watchers = idle.Watchers(poll_one, lambda s: context(s, datetime.now(UTC)))
    watchers.sync([source])
    [(_, task)] = watchers._tasks.values()
    async with asyncio.timeout(5):
        await woke.wait()
        await task  # the second watch found no push: the task ends
    status = watchers.status("w")
    assert status is not None and status.state == "no push"
    assert Watched.calls == 2 and polled[0] == "w"
    await watchers.aclose()
