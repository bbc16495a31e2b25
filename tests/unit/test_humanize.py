from datetime import UTC, datetime, timedelta

from aggregator.humanize import file_name, file_size, relative_time

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_relative_time() -> None:
    assert relative_time(NOW - timedelta(hours=3, minutes=2), NOW) == "3h ago"
    assert relative_time(NOW + timedelta(seconds=55), NOW) == "in 55s"
    assert relative_time(NOW, NOW) == "0s ago"
    assert relative_time(NOW - timedelta(seconds=10), NOW, just_now=45) == "just now"
    assert relative_time(NOW - timedelta(days=2), NOW, just_now=45) == "2d ago"


def test_file_sizes_and_names_as_the_dashboard_shows_them() -> None:
    assert [file_size(n) for n in (0, 999, 1000, 2_500, 28_000_000, 3 * 10**15)] == [
        "", "999 B", "1.0 kB", "2.5 kB", "28 MB", "3000 TB",
    ]  # fmt: skip
    assert file_size(None) == file_size("12") == file_size(True) == ""
    assert file_name("https://e.org/media/ep%201.mp3?x=1") == "ep 1.mp3"
    assert file_name("https://e.org/") == "e.org"
