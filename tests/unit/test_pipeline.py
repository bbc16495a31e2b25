"""poll_source with stand-in connectors: what happens on success, on a crash,
and when the store refuses the write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import pipeline, registry
from aggregator.config import SourceConfig, parse_config
from aggregator.connector import Connector, ConnectorOptions, PollContext, Resources
from aggregator.exceptions import FetchError
from aggregator.recorder import Recorder
from aggregator.store import Store
from aggregator.types import EventData, JSONObject, PollResult

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


KINDS: dict[str, Any] = {"works": Works, "crashes": Crashes, "refuses": Refuses, "hangs": Hangs}


def context(source: SourceConfig, now: datetime) -> PollContext:
    async def run_cpu(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return PollContext(source_id=source.id, now=now, resources=Resources(), run_cpu=run_cpu)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, dict[str, SourceConfig]]:
    # Stand-in kinds, found the way plugins are: through the registry.
    monkeypatch.setattr(registry, "connector_kinds", lambda: KINDS)
    cfg = parse_config({"sources": [{"id": k, "kind": k, "interval": "1m"} for k in KINDS]})
    store = Store(f"sqlite:///{tmp_path}/p.db")
    store.sync_sources(cfg.sources, NOW)
    return store, {s.id: s for s in cfg.sources}


async def poll(store: Store, source: SourceConfig) -> pipeline.PollOutcome:
    [claim] = store.claim([source.id], NOW, lease=60)
    return await pipeline.poll_source(source, claim, Recorder(store), context(source, NOW))


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
    assert status.next_poll_at == NOW + timedelta(minutes=2)
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
