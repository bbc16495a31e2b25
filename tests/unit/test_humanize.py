from datetime import UTC, datetime, timedelta

from aggregator.humanize import relative_time

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_relative_time() -> None:
    assert relative_time(NOW - timedelta(hours=3, minutes=2), NOW) == "3h ago"
    assert relative_time(NOW + timedelta(seconds=55), NOW) == "in 55s"
    assert relative_time(NOW, NOW) == "0s ago"
    assert relative_time(NOW - timedelta(seconds=10), NOW, just_now=45) == "just now"
    assert relative_time(NOW - timedelta(days=2), NOW, just_now=45) == "2d ago"
