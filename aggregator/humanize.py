"""Times as people read them, for the CLI and the dashboard alike."""

from __future__ import annotations

from datetime import datetime

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
