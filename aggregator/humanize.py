"""Times as people read them, for the CLI and the dashboard alike."""

from __future__ import annotations

import unicodedata
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


def _visible(text: str) -> str:
    """`text` without format (Cf) and control (Cc) characters. A decoded name
    could otherwise carry a bidi override ("invoice" U+202E "gpj.exe" reads
    as "invoiceexe.jpg"), an isolate, a zero-width or another invisible mark
    that spoofs what the link is. app.js `fileName` drops the same."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc"))


def file_name(url: str) -> str:
    """The last path segment of a URL, decoded and stripped of invisible
    characters (see _visible), else its host."""
    parts = urlsplit(url)
    last = next((p for p in reversed(parts.path.split("/")) if p), "")
    name = _visible(unquote(last))
    return name or parts.hostname or _visible(url)
