"""URLs fit to show people: the one place that decides what of a URL is secret.

Here, not in connectors/http.py, because the core needs it too (OPML import
messages) and `aggregator` never imports `connectors`; the fetcher imports it
from here, so there is one implementation.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """A URL fit for error messages, logs and the admin UI: no userinfo, no
    query string (intranet feeds often carry tokens in either), no fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return "(malformed URL)"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def carries_secrets(url: str) -> bool:
    """Whether `url` has a query string or userinfo: the parts `redact` hides."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.query) or parts.username is not None or parts.password is not None
