"""Unread counts kept between calls (aggregator/store/unread.py) always equal
a count made afresh: as events arrive, for every viewer, past the cap, after
a mark moves, and for a stream whose query has a time range."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import parse_config
from aggregator.decide import prepare
from aggregator.store import Store, unread
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


def test_kept_counts_equal_fresh_ones_as_events_arrive_and_marks_move(store: Store) -> None:
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
        for viewer in viewers:
            for cap in (5, 1000):
                kept = store.streams.unread_counts(user.id, viewer=viewer, cap=cap)
                assert kept == afresh(store, user.id, viewer, cap), (round_, viewer, cap)
                seen_nonzero += any(kept.values())
                seen_capped += any(n > cap for n in kept.values())
    assert seen_nonzero and seen_capped  # the comparison covered both


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
