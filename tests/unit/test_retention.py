"""Retention (issue 13): old events go in batches, per source or globally;
entries, cursors, read marks and the full-text index stay sound."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, text

from aggregator import registry
from aggregator.config import Config, parse_config
from aggregator.connector import Connector, ConnectorOptions, PollContext, Resources
from aggregator.decide import prepare
from aggregator.exceptions import ConfigError
from aggregator.filters import EventFilter
from aggregator.pipeline import poll_source
from aggregator.poller import Poller
from aggregator.recorder import Recorder
from aggregator.store import FailureRecord, Store
from aggregator.store import retention as retention_module
from aggregator.store.retention import BATCH, RetentionPolicy
from aggregator.store.schema import ALERTS_SOURCE, entries, events
from aggregator.types import EventData, JSONObject, PollResult
from tests.stores import store_url
from tests.unit.test_search import index_is_sound

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url(tmp_path))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_module, "PAUSE", 0)


def config(retention: str | None = None, **own: str | None) -> Config:
    """Sources named by `own`, each with its own retention (None: none)."""
    data: dict[str, Any] = {
        "sources": [
            {"id": i, "kind": "feed", "url": f"https://e.org/{i}"} | ({"retention": r} if r else {})
            for i, r in own.items()
        ]
    }
    if retention is not None:
        data["retention"] = {"events": retention}
    return parse_config(data)


def policy(cfg: Config) -> RetentionPolicy:
    return RetentionPolicy.of(cfg, cfg.sources)


def add(store: Store, cfg: Config, source_id: str, age: timedelta, *titles: str) -> list[int]:
    """Store one event per title in source `source_id`, `age` before NOW."""
    [source] = [s for s in cfg.sources if s.id == source_id]
    store.sync_sources(cfg.sources, NOW - age)
    items = prepare([EventData(external_id=t, title=t) for t in titles])
    return store.record_poll(source, items, state=None, now=NOW - age, next_poll_at=NOW)


def stored(store: Store) -> list[int]:
    return sorted(e.id for e in store.latest_events(viewer=None, limit=1000))


def found(store: Store, query: str) -> list[int]:
    return sorted(e.id for e in store.latest_events(EventFilter.parse(query), viewer=None))


# --- what goes --------------------------------------------------------------------


def test_nothing_configured_keeps_everything(store: Store) -> None:
    cfg = config(blog=None)
    kept = add(store, cfg, "blog", 1000 * DAY, "a", "b")
    assert store.prune(NOW, policy(cfg)) == 0
    assert stored(store) == kept


def test_the_global_setting_applies_to_every_source(store: Store) -> None:
    cfg = config("30d", blog=None, wiki=None)
    old = add(store, cfg, "blog", 31 * DAY, "a") + add(store, cfg, "wiki", 40 * DAY, "b")
    young = add(store, cfg, "blog", 29 * DAY, "c") + add(store, cfg, "wiki", 1 * DAY, "d")
    assert store.prune(NOW, policy(cfg)) == len(old)
    assert stored(store) == young
    assert store.prune(NOW, policy(cfg)) == 0  # a second pass finds nothing


def test_a_sources_own_setting_wins_over_the_global_one(store: Store) -> None:
    cfg = config("30d", short="7d", long="90d", plain=None)
    short = add(store, cfg, "short", 10 * DAY, "a")
    long = add(store, cfg, "long", 60 * DAY, "b")
    plain_old = add(store, cfg, "plain", 60 * DAY, "c")
    plain = add(store, cfg, "plain", 10 * DAY, "d")
    assert store.prune(NOW, policy(cfg)) == len(short + plain_old)
    assert stored(store) == sorted(long + plain)


def test_a_source_may_have_retention_without_a_global_one(store: Store) -> None:
    cfg = config(None, short="7d", forever=None)
    add(store, cfg, "short", 10 * DAY, "a")
    kept = add(store, cfg, "forever", 1000 * DAY, "b")
    assert store.prune(NOW, policy(cfg)) == 1
    assert stored(store) == kept


def test_the_alerts_source_follows_the_global_setting(store: Store) -> None:
    cfg = config("30d", blog="365d")
    kept = add(store, cfg, "blog", 60 * DAY, "a")
    [alert] = prepare([EventData(external_id="alert-1", title="blog is failing")])
    then = NOW - 60 * DAY
    [[alert_id]] = store.record([FailureRecord("blog", "HTTP 500", then, NOW, alert=alert)])
    assert store.get_event(alert_id, viewer=None).source_id == ALERTS_SOURCE  # type: ignore[union-attr]
    assert store.prune(NOW, policy(cfg)) == 1
    assert stored(store) == kept


def test_sources_the_file_dropped_follow_the_global_setting_others_are_left_alone(
    tmp_path: Path,
) -> None:
    mine = parse_config(
        {
            "retention": {"events": "30d"},
            "sources": [{"id": "gone", "kind": "feed", "url": "https://e.org/u"}],
        },
        tmp_path / "mine.toml",
    )
    theirs = parse_config(
        {"sources": [{"id": "theirs", "kind": "feed", "url": "https://e.org/u"}]},
        tmp_path / "theirs.toml",
    )
    store = Store(store_url(tmp_path))
    for cfg in (mine, theirs):
        store.sync_sources(cfg.sources, NOW, config_file=cfg.source_file)
        for source in cfg.sources:
            store.record_poll(source, prepare([EventData(external_id="x", title="x")]),
                              state=None, now=NOW - 60 * DAY, next_poll_at=NOW)  # fmt: skip
    dropped = parse_config({"retention": {"events": "30d"}}, tmp_path / "mine.toml")
    store.sync_sources(dropped.sources, NOW, config_file=dropped.source_file)  # "gone" is gone
    assert store.prune(NOW, RetentionPolicy.of(dropped, [])) == 1
    assert [e.source_id for e in store.latest_events(viewer=None)] == ["theirs"]
    store.close()


def test_a_web_made_source_keeps_its_own_setting(store: Store) -> None:
    raw = {"id": "web", "kind": "feed", "url": "https://e.org/w", "retention": "7d"}
    store.create_source(raw, actor="t", now=NOW)
    [web] = store.db_sources()
    assert web.retention == 7 * 86400
    store.record_poll(web, prepare([EventData(external_id="x", title="x")]), state=None,
                      now=NOW - 10 * DAY, next_poll_at=NOW)  # fmt: skip
    cfg = config("365d")
    assert store.prune(NOW, RetentionPolicy.of(cfg, [web])) == 1
    with pytest.raises(ConfigError, match=r"source\.retention: .*at least 1d"):
        store.create_source({**raw, "id": "web2", "retention": "6h"}, actor="t", now=NOW)


def test_an_event_stored_out_of_id_order_is_judged_by_its_own_age(store: Store) -> None:
    """A slow poll commits after a quick one with an earlier `now`: ids and
    ages then disagree a little, and only age decides."""
    cfg = config("30d", blog=None)
    first = add(store, cfg, "blog", 40 * DAY, "a")
    young = add(store, cfg, "blog", 29 * DAY, "b")
    late = add(store, cfg, "blog", 41 * DAY, "c")
    assert first[0] < young[0] < late[0]
    assert store.prune(NOW, policy(cfg)) == 2
    assert stored(store) == young


# --- in batches -------------------------------------------------------------------


@contextmanager
def counting(store: Store) -> Iterator[list[int]]:
    """The events deleted by each write transaction of the store."""
    deleted: list[int] = []
    writing: Callable[[], AbstractContextManager[Connection]] = store._writing

    @contextmanager
    def counted() -> Iterator[Connection]:
        with writing() as conn:
            before = conn.scalar(select(func.count()).select_from(events)) or 0
            yield conn
            after = conn.scalar(select(func.count()).select_from(events)) or 0
        deleted.append(before - after)

    store._writing = counted  # type: ignore[method-assign]
    try:
        yield deleted
    finally:
        del store._writing


def test_more_events_than_a_batch_go_in_several_short_transactions(store: Store) -> None:
    cfg = config("30d", blog=None)
    old = add(store, cfg, "blog", 31 * DAY, *(f"e{i}" for i in range(BATCH + 500)))
    young = add(store, cfg, "blog", 1 * DAY, "new")
    with counting(store) as deleted:
        assert store.prune(NOW, policy(cfg)) == len(old)
    assert deleted == [BATCH, 500]
    assert stored(store) == young


def test_small_batches_walk_every_source(store: Store) -> None:
    cfg = config("30d", a=None, b=None)
    old = [add(store, cfg, s, 40 * DAY, *(f"{s}{i}" for i in range(25))) for s in "ab"]
    with counting(store) as deleted:
        assert store.prune(NOW, policy(cfg), batch=10) == 50
    assert deleted == [10, 10, 5] * 2
    assert stored(store) == [] and all(len(ids) == 25 for ids in old)


def test_several_pollers_pruning_at_once_is_harmless(tmp_path: Path) -> None:
    cfg = config("30d", blog=None)
    stores = [Store(store_url(tmp_path)) for _ in range(3)]  # as three processes would
    old = add(stores[0], cfg, "blog", 40 * DAY, *(f"e{i}" for i in range(300)))
    young = add(stores[0], cfg, "blog", 1 * DAY, "new")
    counts: list[int] = []
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            counts.append(store.prune(NOW, policy(cfg), batch=20))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # A pass that met another's deletions may stop early; the next one finishes.
    assert sum(counts) + stores[0].prune(NOW, policy(cfg)) == len(old)
    assert stored(stores[0]) == young
    for store in stores:
        store.close()


# --- what stays sound -------------------------------------------------------------


def test_full_text_search_forgets_deleted_events(store: Store) -> None:
    cfg = config("30d", wiki=None)
    add(store, cfg, "wiki", 40 * DAY, "Merger talks", "Quarterly report")
    young = add(store, cfg, "wiki", 1 * DAY, "Merger signed")
    assert len(found(store, "merger")) == 2
    store.prune(NOW, policy(cfg))
    assert found(store, "merger") == young
    assert found(store, "quarterly") == []
    index_is_sound(store)  # FTS5's own check; on PostgreSQL, event_search's rows
    if store.is_sqlite:
        with store._read.connect() as conn:  # the index itself, not the events it joins
            hits = conn.execute(
                text("SELECT rowid FROM events_fts WHERE events_fts MATCH 'merger'")
            )
            assert [r[0] for r in hits] == young
    else:
        with store._read.connect() as conn:
            indexed = conn.scalars(text("SELECT event_id FROM event_search ORDER BY event_id"))
            assert list(indexed) == young


def test_entries_stay_so_an_item_still_upstream_is_not_stored_again(store: Store) -> None:
    cfg = config("30d", blog=None)
    [old] = add(store, cfg, "blog", 40 * DAY, "a")
    store.prune(NOW, policy(cfg))
    assert stored(store) == []
    with store._read.connect() as conn:
        kept = conn.execute(select(entries.c.external_id, entries.c.event_id)).all()
    assert [tuple(r) for r in kept] == [("a", old)]
    assert add(store, cfg, "blog", 0 * DAY, "a") == []  # the same version: nothing new


class Same(Connector[ConnectorOptions]):
    """Lists one item, unchanged, on every poll."""

    Options = ConnectorOptions

    async def poll(self, state: JSONObject | None, ctx: PollContext) -> PollResult:
        return PollResult(events=[EventData(external_id="still-listed", title="Old news")])


async def test_a_poll_after_pruning_finds_nothing_new(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "connector_kinds", lambda: {"same": Same})
    cfg = parse_config({"retention": {"events": "30d"}, "sources": [{"id": "s", "kind": "same"}]})
    [source] = cfg.sources
    store.sync_sources(cfg.sources, NOW)

    async def poll(now: datetime) -> list[int]:
        async def run_cpu(fn: Any, *args: Any) -> Any:
            return fn(*args)

        [claim] = store.claim([source.id], now, lease=60)
        ctx = PollContext(source_id=source.id, now=now, resources=Resources(), run_cpu=run_cpu)
        return (await poll_source(source, claim, Recorder(store), ctx)).new_event_ids

    assert len(await poll(NOW - 40 * DAY)) == 1
    assert store.prune(NOW, policy(cfg)) == 1
    assert await poll(NOW) == []
    assert stored(store) == []


def test_cursors_at_deleted_ids_still_page_and_resume(store: Store) -> None:
    cfg = config(None, short="7d", keep=None)
    a1 = add(store, cfg, "short", 10 * DAY, "a1")
    b1 = add(store, cfg, "keep", 10 * DAY, "b1")
    a2 = add(store, cfg, "short", 9 * DAY, "a2")
    b2 = add(store, cfg, "keep", 9 * DAY, "b2")
    assert store.prune(NOW, policy(cfg)) == 2
    # A websocket resume or an API cursor naming a deleted event: what follows it.
    assert [e.id for e in store.events_after(a1[0], viewer=None)] == b1 + b2
    assert [e.id for e in store.events_after(a2[0], viewer=None)] == b2
    # The history's "older" page from a deleted id: what precedes it.
    assert [e.id for e in store.latest_events(viewer=None, before=a2[0])] == b1
    assert store.get_event(a1[0], viewer=None) is None


def test_ids_are_never_reused_after_the_newest_went(store: Store) -> None:
    cfg = config("30d", blog=None)
    [newest] = add(store, cfg, "blog", 40 * DAY, "a")
    store.prune(NOW, policy(cfg))
    assert store.max_event_id() == 0
    [fresh] = add(store, cfg, "blog", 0 * DAY, "b")
    assert fresh > newest  # a client holding `newest` as its cursor still sees it


def test_read_marks_at_deleted_ids_still_count_and_move(store: Store) -> None:
    cfg = config(None, short="7d", keep=None)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    stream = store.streams.create(user.id, "All", "", now=NOW, viewer=None)
    [a1] = add(store, cfg, "short", 10 * DAY, "a1")
    [b1] = add(store, cfg, "keep", 10 * DAY, "b1")
    [a2] = add(store, cfg, "short", 9 * DAY, "a2")
    assert store.streams.mark_read(user.id, stream.id, a1, viewer=None) == a1
    store.prune(NOW, policy(cfg))
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 1}  # b1
    # Marking up to a deleted id (a page read before the pass) still works.
    assert store.streams.mark_read(user.id, stream.id, a2, viewer=None) == b1
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 0}


# --- config -----------------------------------------------------------------------


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/etc/tidings.toml"))
    return str(err.value)


def test_config_reads_durations() -> None:
    cfg = config("365d", own="30d", plain=None)
    assert cfg.retention.events_seconds == 365 * 86400
    assert {s.id: s.retention for s in cfg.sources} == {"own": 30 * 86400, "plain": None}
    assert parse_config({}).retention.events_seconds is None  # unset: kept forever
    assert config("1d").retention.events_seconds == 86400


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"retention": {"events": "12h"}}, "retention.events: must be at least 1d"),
        ({"retention": {"events": "soon"}}, "retention.events: 'soon' is not a"),
        ({"retention": {"events": 30}}, "retention.events: Input should be a valid string"),
        ({"retention": {"days": "30d"}}, "retention.days: unknown key"),
        ({"retention": "30d"}, "retention: Input should be a valid dictionary"),
        (
            {
                "sources": [
                    {"id": "b", "kind": "feed", "url": "https://e.org/u", "retention": "23h"}
                ]
            },
            "sources[0].retention: must be at least 1d",
        ),
        (
            {
                "sources": [
                    {"id": "b", "kind": "feed", "url": "https://e.org/u", "retention": "a month"}
                ]
            },
            "sources[0].retention: 'a month' is not a duration",
        ),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], problem: str) -> None:
    assert problem in problems(data)


# --- the poller's job -------------------------------------------------------------


async def test_the_poller_prunes_hourly_logs_what_went_and_survives_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse_config(
        {
            "store": {"url": store_url(tmp_path)},
            "retention": {"events": "30d"},
            "sources": [{"id": "blog", "kind": "feed", "url": "https://e.org/f"}],
        }
    )
    store = Store(cfg.store_url)
    now = datetime.now(UTC)
    store.sync_sources(cfg.sources, now)
    store.record_poll(cfg.sources[0], prepare([EventData(external_id="a", title="a")]),
                      state=None, now=now - 40 * DAY, next_poll_at=now + DAY)  # fmt: skip
    poller = Poller(cfg, store)
    caplog.set_level(logging.INFO, logger="aggregator.poller")
    assert await poller.prune() == 1
    assert "retention: deleted 1 events" in caplog.text
    caplog.clear()
    assert await poller.prune() == 0
    assert "retention" not in caplog.text  # nothing went: nothing said

    def broken(*args: object, **kw: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "prune", broken)
    assert await poller.prune() == 0
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "retention" in record.getMessage() and record.exc_info is not None

    poller.start()
    try:
        job = poller._scheduler.get_job("retention")  # type: ignore[union-attr]
        assert job is not None and job.trigger.interval == timedelta(hours=1)
    finally:
        await poller.aclose()
        store.close()


def test_a_pass_stops_when_told(store: Store) -> None:
    """A poller shutting down sets `stop`: the pass under way ends after the
    batch it is in (here: before the first), rather than running on for
    minutes in its thread."""
    cfg = config("30d", blog=None)
    old = add(store, cfg, "blog", 40 * DAY, *(f"t{i}" for i in range(30)))
    stop = threading.Event()
    stop.set()
    assert store.prune(NOW, policy(cfg), batch=10, stop=stop) == 0
    assert store.prune(NOW, policy(cfg), batch=10) == len(old)
