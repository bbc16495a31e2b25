"""Unread counts kept between calls (aggregator/store/unread.py) always equal
a count made afresh: as events arrive, for every viewer, past the cap, after
a mark moves, and for a stream whose query has a time range; so do counts a
restarted process takes up from the store."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from aggregator.config import parse_config
from aggregator.decide import prepare
from aggregator.filters import EventFilter
from aggregator.store import Store, conditions, unread
from aggregator.store.retention import RetentionPolicy
from aggregator.store.schema import events, unread_counts
from aggregator.store.streams import UNREAD_CAP
from aggregator.store.unread import UnreadCounts
from aggregator.types import EventData
from aggregator.visibility import Viewer
from tests.stores import store_url

NOW = datetime.now(UTC)
QUERIES = [
    "",
    "alpha",
    '"alpha beta"',
    "alpha -beta",
    "source:one",
    "gamma OR source:two",
    "tag:red",
    "-tag:red beta",
    f"since:{(NOW - timedelta(days=2)).date().isoformat()}",
]
WORDS = ("alpha", "beta", "gamma", "delta")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(store_url(tmp_path))
    raw = [{"id": i, "kind": "feed", "url": f"https://e.org/{i}"} for i in ("one", "two")]
    s.sync_sources(parse_config({"sources": raw}).sources, NOW)
    yield s
    s.close()


def arrive(store: Store, rng: random.Random, count: int) -> None:
    sources = {s.id: s for s in parse_config({"sources": [
        {"id": i, "kind": "feed", "url": f"https://e.org/{i}"} for i in ("one", "two")
    ]}).sources}  # fmt: skip
    for source_id in sources:
        made = [
            EventData(
                external_id=f"{rng.random()}",
                title=" ".join(rng.sample(WORDS, 2)),
                tags=("red",) if rng.random() < 0.3 else (),
                published=NOW - timedelta(days=rng.uniform(0, 4)),
            )
            for _ in range(count)
        ]
        store.record_poll(sources[source_id], prepare(made), state=None, now=NOW, next_poll_at=NOW)


def afresh(store: Store, user_id: int, viewer: Viewer | None, cap: int) -> dict[int, int]:
    kept, store.streams._unread = store.streams._unread, UnreadCounts(store.search)
    try:
        return store.streams.unread_counts(user_id, viewer=viewer, cap=cap)
    finally:
        store.streams._unread = kept


def restarted(store: Store) -> UnreadCounts:
    """A new process's counts: nothing kept in memory, the store's counts read."""
    store.streams._unread = UnreadCounts(store.search, store._writing)
    return store.streams._unread


def kept_rows(store: Store) -> int:
    with store._read.connect() as conn:
        return conn.scalar(select(func.count()).select_from(unread_counts)) or 0


def test_kept_counts_equal_fresh_ones_as_events_arrive_and_marks_move(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unread, "KEEP_SPAN", 3)  # the store's counts are used too
    rng = random.Random(5)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    viewers = [None, Viewer("ann", frozenset({"one"})), Viewer("ann", frozenset())]
    made = [
        store.streams.create(user.id, f"s{i}", q, now=NOW, viewer=None)
        for i, q in enumerate(QUERIES)
    ]
    seen_nonzero = seen_capped = 0
    for round_ in range(8):
        arrive(store, rng, rng.randint(1, 9))
        if round_ == 4:  # someone reads two streams
            for stream in made[:2]:
                store.streams.mark_read(user.id, stream.id, 10**9, viewer=None)
        if round_ % 3 == 2:
            restarted(store)
        for viewer in viewers:
            for cap in (5, 1000):
                kept = store.streams.unread_counts(user.id, viewer=viewer, cap=cap)
                assert kept == afresh(store, user.id, viewer, cap), (round_, viewer, cap)
                seen_nonzero += any(kept.values())
                seen_capped += any(n > cap for n in kept.values())
    assert seen_nonzero and seen_capped  # the comparison covered both
    assert kept_rows(store)  # and the store's counts


def test_counts_are_the_same_whether_tags_are_walked_or_listed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(6)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    for i, q in enumerate(["tag:red", "-tag:red beta", "alpha tag:red", "gamma OR tag:red"]):
        store.streams.create(user.id, f"s{i}", q, now=NOW, viewer=None)
    arrive(store, rng, 30)
    viewer = Viewer("ann", frozenset({"one"}))
    listed = afresh(store, user.id, viewer, 8)
    monkeypatch.setattr(conditions, "COMMON_TAG", 1)
    monkeypatch.setattr(conditions, "WALK_PER_LIST", 0)  # every tag walked
    assert conditions.walk_beyond_for(8, 60) == 1
    assert afresh(store, user.id, viewer, 8) == listed and any(listed.values())


def test_a_long_count_lists_a_tag_that_a_page_would_walk() -> None:
    """A month behind at a million events (90,000 ids, cap 1,001): a tag on
    10,010 of them is listed (docs/benchmarks.md, Counts kept in the store)."""
    assert conditions.walk_beyond_for(1001, 90_000) > 10_010
    assert conditions.walk_beyond_for(1001, 1_000) == conditions.COMMON_TAG


def test_a_restarted_process_goes_on_from_the_stores_count(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what arrived after the store's count is counted again; a count
    whose mark, cap or viewer differs is not taken up."""
    monkeypatch.setattr(unread, "KEEP_SPAN", 10)
    rng = random.Random(8)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    stream = store.streams.create(user.id, "a", "alpha", now=NOW, viewer=None)
    other = store.streams.create(user.id, "b", "beta", now=NOW, viewer=None)
    arrive(store, rng, 10)  # 20 events: a long enough stretch to be kept
    first = store.streams.unread_counts(user.id, viewer=None)
    assert kept_rows(store) == 2
    arrive(store, rng, 2)  # 4 more: too few to be written
    counted: list[tuple[int, int]] = []
    matches = UnreadCounts._matches

    def spy(self: UnreadCounts, conn: Any, flt: Any, viewer: Any, after: int, *rest: int) -> int:
        counted.append((after, rest[0]))
        return matches(self, conn, flt, viewer, after, *rest)

    monkeypatch.setattr(UnreadCounts, "_matches", spy)
    restarted(store)
    after = store.streams.unread_counts(user.id, viewer=None)
    newest = max(e.id for e in store.latest_events(viewer=None, limit=100))
    assert counted == [(newest - 4, newest)] * 2  # only the 4 new ones, in each stream
    assert after == afresh(store, user.id, None, UNREAD_CAP)
    assert after[stream.id] >= first[stream.id] and after[other.id] >= first[other.id]

    # A count from another mark, viewer or cap is not taken up: counted from the mark.
    store.streams.mark_read(user.id, stream.id, newest - 6, viewer=None)
    marks = [s.last_read_id for s in store.streams.list(user.id)]
    restarted(store)
    counted.clear()
    got = store.streams.unread_counts(user.id, viewer=None)
    assert counted == [(marks[0], newest), (newest - 4, newest)]  # the other: from the store
    assert got == afresh(store, user.id, None, UNREAD_CAP)
    for viewer, cap in ((Viewer("ann", frozenset({"one"})), UNREAD_CAP), (None, 3)):
        restarted(store)
        counted.clear()
        got = store.streams.unread_counts(user.id, viewer=viewer, cap=cap)
        assert [after for after, _ in counted] == marks, (viewer, cap)
        assert got == afresh(store, user.id, viewer, cap)


def test_deleting_events_drops_the_store_counts_that_may_hold_them(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deletes old events: a count whose range started below them
    goes, a count from a mark above them stays. Deleting a stream drops its
    counts with it."""
    monkeypatch.setattr(unread, "KEEP_SPAN", 1)
    rng = random.Random(9)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    early = store.streams.create(user.id, "early", "", now=NOW, viewer=None)
    arrive(store, rng, 5)
    late = store.streams.create(user.id, "late", "", now=NOW, viewer=None)
    arrive(store, rng, 5)
    assert store.streams.unread_counts(user.id, viewer=None) == {early.id: 20, late.id: 10}
    assert kept_rows(store) == 2
    assert prune_oldest(store, 10) == 10
    assert kept_rows(store) == 1  # late's: its mark is above every deleted event
    # The process drops its own kept counts too, and never writes one back.
    assert store.streams.unread_counts(user.id, viewer=None) == {early.id: 10, late.id: 10}
    arrive(store, rng, 3)
    assert store.streams.unread_counts(user.id, viewer=None) == {early.id: 16, late.id: 16}
    restarted(store)
    assert store.streams.unread_counts(user.id, viewer=None) == {early.id: 16, late.id: 16}
    store.streams.delete(user.id, late.id)
    with store._read.connect() as conn:
        left = conn.scalars(select(unread_counts.c.stream_id)).all()
    assert late.id not in left


def test_a_count_made_before_a_deletion_is_not_written_after_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unread, "KEEP_SPAN", 1)
    rng = random.Random(10)
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    stream = store.streams.create(user.id, "all", "", now=NOW, viewer=None)
    arrive(store, rng, 5)
    counts = store.streams._unread
    newest = max(e.id for e in store.latest_events(viewer=None, limit=100))
    with store._read.connect() as conn:
        made = unread.Counted(stream.id, "", EventFilter.parse(""), stream.last_read_id)
        found, keep = counts.counts(conn, [made], viewer=None, newest=newest, cap=UNREAD_CAP)
    assert found == {stream.id: 10} and keep.counts
    assert prune_oldest(store, 4) == 4  # between the count and its write
    counts.keep(keep)
    assert kept_rows(store) == 0
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 6}
    restarted(store)
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 6}


def prune_oldest(store: Store, n: int) -> int:
    """Retention deletes the `n` oldest events (stored "a year ago")."""
    oldest = sorted(e.id for e in store.latest_events(viewer=None, limit=1000))[:n]
    with store._writing() as conn:
        conn.execute(
            events.update()
            .where(events.c.id.in_(oldest))
            .values(ingested_at=NOW - timedelta(days=400))
        )
    cfg = parse_config({"retention": {"events": "30d"}, "sources": [
        {"id": i, "kind": "feed", "url": f"https://e.org/{i}"} for i in ("one", "two")
    ]})  # fmt: skip
    return store.prune(NOW, RetentionPolicy.of(cfg, cfg.sources))


def test_a_time_range_is_counted_afresh_once_a_minute(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event that leaves `since:` by time alone leaves the count within
    RECOUNT_TIMED; meanwhile the kept count is used."""
    user = store.people.create_user("ann", password_hash=None, actor="t", now=NOW)
    stream = store.streams.create(user.id, "recent", "since:1d", now=NOW, viewer=None)
    clock = [1000.0]
    monkeypatch.setattr(unread.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr("aggregator.filters.datetime", _Frozen.at(NOW))
    source = parse_config({"sources": [{"id": "one", "kind": "feed", "url": "https://e.org/one"}]})
    old = EventData(external_id="old", title="t", published=NOW - timedelta(hours=23, minutes=59))
    store.record_poll(source.sources[0], prepare([old]), state=None, now=NOW, next_poll_at=NOW)
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 1}
    # Two minutes on, "since:1d" no longer holds that event.
    later = NOW + timedelta(minutes=2)
    monkeypatch.setattr("aggregator.filters.datetime", _Frozen.at(later))
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 1}  # kept
    clock[0] += unread.RECOUNT_TIMED + 1
    assert store.streams.unread_counts(user.id, viewer=None) == {stream.id: 0}


class _Frozen(datetime):
    moment: datetime

    @classmethod
    def at(cls, moment: datetime) -> type[_Frozen]:
        return type("Frozen", (cls,), {"moment": moment})

    @classmethod
    def now(cls, tz: object = None) -> _Frozen:  # type: ignore[override]
        return cls.moment  # type: ignore[return-value]
