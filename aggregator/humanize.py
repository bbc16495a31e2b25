"""Times as people read them, for the CLI and the dashboard alike."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import unquote, urlsplit

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def relative_time(when: datetime, now: datetime, *, just_now: float = 0) -> str:
    """ "5m ago" or "in 5m", in the largest whole unit; "just now" for the last
    `just_now` seconds (the dashboard's calm rounding)."""
    seconds = int((when - now).total_seconds())
    if just_now and -just_now < seconds <= 0:
        return "just now"
    past, seconds = seconds <= 0, abs(seconds)
    unit, size = next((u, s) for u, s in _UNITS if seconds >= s or u == "s")
    text = f"{seconds // size}{unit}"
    return f"{text} ago" if past else f"in {text}"


_SIZES = ("B", "kB", "MB", "GB", "TB")


def file_size(length: object) -> str:
    """ "28 MB", "2.5 kB": decimal units, as the dashboard's script shows them;
    "" for a missing or nonsensical length."""
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        return ""
    size, unit = float(length), 0
    while size >= 1000 and unit < len(_SIZES) - 1:
        size, unit = size / 1000, unit + 1
    number = f"{size:.1f}" if unit and size < 10 else str(round(size))
    return f"{number} {_SIZES[unit]}"


def file_name(url: str) -> str:
    """The last path segment of a URL, decoded, else its host."""
    parts = urlsplit(url)
    last = next((p for p in reversed(parts.path.split("/")) if p), "")
    return unquote(last) if last else parts.hostname or url
