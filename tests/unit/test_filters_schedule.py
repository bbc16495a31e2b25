import random
from datetime import UTC, datetime

import pytest

from aggregator.exceptions import QueryError
from aggregator.filters import EventFilter
from aggregator.schedule import MAX_BACKOFF, next_poll
from aggregator.types import Actor, Event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday


def ev(
    source: str = "wiki", kind: str = "feed", title: str = "Merger news", summary: str = ""
) -> Event:
    return Event(
        id=1, source_id=source, kind=kind, external_id="x", content_hash="h", verb="Create",
        object_type="Article", title=title, summary=summary, content_html="", url=None,
        actor=Actor(), published=NOW, updated=None, tags=(), thread_id=None, extra={},
        audience=(), ingested_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("merger", True),
        ("MERGER", True),
        ("merger -news", False),
        ('"merger news"', True),
        ("source:wiki,jira", True),
        ("source:jira", False),
        ("-source:jira kind:feed", True),
        ("kind:imap", False),
        ("acquisition", False),
    ],
)
def test_predicate(query: str, expected: bool) -> None:
    assert EventFilter.parse(query).matches(ev()) is expected


def test_summary_is_searched_too() -> None:
    assert EventFilter.parse("closing").matches(ev(summary="Closing call at 3pm"))


@pytest.mark.parametrize(
    ("query", "position"), [("colour:red", 0), ("x  foo:bar", 3), ('a "open', 2)]
)
def test_errors_point_at_the_position(query: str, position: int) -> None:
    with pytest.raises(QueryError) as err:
        EventFilter.parse(query)
    assert err.value.position == position


def test_interval_with_jitter() -> None:
    when = next_poll(NOW, interval=600, rng=random.Random(1))
    assert 600 <= (when - NOW).total_seconds() <= 660


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for failures, base in ((1, 120), (2, 240), (3, 480)):
        delays = {
            (next_poll(NOW, interval=60, failures=failures, rng=rng) - NOW).total_seconds()
            for _ in range(50)
        }
        assert all(base * 0.9 <= d <= base for d in delays)
        assert len(delays) > 40  # spread, not lockstep
    capped = {
        (next_poll(NOW, interval=600, failures=30, rng=rng) - NOW).total_seconds()
        for _ in range(50)
    }
    assert all(MAX_BACKOFF * 0.9 <= d <= MAX_BACKOFF for d in capped) and len(capped) > 40
    lower = next_poll(NOW, interval=600, failures=30, max_backoff=900, rng=rng) - NOW
    assert 810 <= lower.total_seconds() <= 900


def test_hints_are_capped_by_max_interval() -> None:
    far = next_poll(NOW, interval=60, min_interval=7 * 86400, rng=random.Random(0))
    assert (far - NOW).total_seconds() == 86400
    near = next_poll(NOW, interval=60, retry_after=7200, max_interval=3600, rng=random.Random(0))
    assert (near - NOW).total_seconds() == 3600


def test_hints_only_slow_down() -> None:
    assert (
        next_poll(NOW, interval=60, retry_after=3600, rng=random.Random(0)) - NOW
    ).total_seconds() == 3600
    assert (
        next_poll(NOW, interval=600, min_interval=10, rng=random.Random(0)) - NOW
    ).total_seconds() >= 600


def test_cron_business_hours() -> None:
    # Friday 12:00 -> next fire at 12:05; Friday 19:00 -> Monday 08:00.
    assert next_poll(NOW, interval=600, cron="*/5 8-18 * * mon-fri") == NOW.replace(minute=5)
    evening = NOW.replace(hour=19)
    assert next_poll(evening, interval=600, cron="*/5 8-18 * * mon-fri") == datetime(
        2026, 11, 30, 8, 0, tzinfo=UTC
    )
